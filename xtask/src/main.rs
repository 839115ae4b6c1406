//! Project tasks: `cargo xtask <setup|build|run|test|vm-test|bench|dist|fuzz>`.
mod bench;
mod build;
mod cmd;
mod dist;
mod fuzz;
mod run;
mod setup;
mod test;
mod vm;
mod vm_systemd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "agent-guard project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (idempotent).
    Setup,
    /// Setup, then a release build of guardd and guardctl.
    Build,
    /// Build, then run guardd in the foreground (extra arguments go to guardd).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, fmt, clippy, unit tests, the root integration tests, and vm-test.
    Test,
    /// The root integration tests on a Debian cloud kernel with the BPF LSM, under QEMU.
    VmTest,
    /// Release packages: a tarball and a .deb in target/dist.
    Dist,
    /// Fuzz the control-protocol decoder and the policy parser.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// One target (protocol_decode, policy_parse); default: all.
        target: Option<String>,
    },
    /// Benchmarks: policy evaluation against the default pack, then the
    /// guard's cost on real execs (BENCHMARKS.md).
    Bench {
        /// Only write BENCHMARKS.md again from the last run's results.json.
        #[arg(long)]
        report: bool,
        /// Only measure the syscall gate under the BPF LSM (a VM, a few
        /// minutes) into the last run's results.json, and write the report.
        #[arg(long, conflicts_with = "report")]
        lsm_gate: bool,
        /// Only measure the fleet relay (500 simulated hosts, guardd's cost
        /// of the relay; about 3 minutes) into the last run's results.json.
        #[arg(long, conflicts_with_all = ["report", "lsm_gate"])]
        fleet: bool,
        /// Only measure 200 x `git status` in a `guardctl run` session, in a
        /// detected session and under a bare seccomp filter, over 30 rounds
        /// (about 6 minutes), into the last run's results.json.
        #[arg(long, conflicts_with_all = ["report", "lsm_gate", "fleet"])]
        git_status: bool,
        /// Passed to criterion.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build::run(),
        Task::Run { args } => run::run(&args),
        Task::Test => test::run(),
        Task::VmTest => {
            setup::run()?;
            vm::run()
        }
        Task::Bench { report: true, .. } => bench::rewrite_report(),
        Task::Bench { lsm_gate: true, .. } => bench::lsm_gate_only(),
        Task::Bench { fleet: true, .. } => bench::fleet_only(),
        Task::Bench {
            git_status: true, ..
        } => bench::git_status_only(),
        Task::Bench { args, .. } => bench::run(&args),
        Task::Dist => dist::run(),
        Task::Fuzz { time, target } => fuzz::run(time, target),
    }
}
