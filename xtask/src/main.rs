//! Project tasks: `cargo xtask <setup|build|run|test|bench|dist>`.
mod bench;
mod build;
mod cmd;
mod dist;
mod run;
mod setup;
mod test;

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
    /// Setup, fmt, clippy, unit tests and the root integration tests.
    Test,
    /// Release packages: a tarball and a .deb in target/dist.
    Dist,
    /// Benchmarks (policy evaluation against the default pack).
    Bench {
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
        Task::Bench { args } => bench::run(&args),
        Task::Dist => dist::run(),
    }
}
