use crate::cmd;

/// Benchmarks; extra arguments go to the benchmark harness (criterion).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    cmd::run(
        cmd::cargo()
            .args(["bench", "-p", "guard-daemon", "--bench", "policy", "--"])
            .args(args),
    )
}
