//! `cargo xtask bench`: policy evaluation (criterion) and the cost of the
//! guard on real execs, written to BENCHMARKS.md and target/bench/results.json.
mod api;
mod auditd;
mod burst;
mod exec;
mod fapolicyd;
mod fleet;
mod go_api;
mod kernel_cost;
mod lsm_gate;
mod peers;
mod results;
mod workload;

use crate::cmd;

pub use exec::{fleet_only, git_status_only, lsm_gate_only, rewrite_report};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    cmd::run(
        cmd::cargo()
            .args(["bench", "-p", "guard-daemon", "--bench", "policy", "--"])
            .args(args),
    )?;
    exec::run()
}
