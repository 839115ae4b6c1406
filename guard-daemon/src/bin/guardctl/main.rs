//! guardctl: start guarded sessions and decide held requests.
mod decide;
mod explain;
mod fleet;
mod pending;
mod policy;
mod run;
mod sign;
mod status;
mod watch;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use guard_daemon::{
    client,
    protocol::{Request, Response, DEFAULT_SOCKET, SOCKET_ENV},
};

#[derive(Parser)]
#[command(
    name = "guardctl",
    version,
    about = "Control agent-guard: run guarded sessions, approve or deny held commands"
)]
struct Cli {
    /// guardd's control socket.
    #[arg(long, global = true, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(flatten)]
    relay: fleet::Relay,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Pending(pending::Args),
    Approve(decide::ApproveArgs),
    Deny(decide::DenyArgs),
    Sign(sign::Args),
    Watch(watch::Args),
    Status(status::Args),
    Explain(explain::Args),
    #[command(subcommand)]
    Policy(policy::Command),
    /// Write man pages and shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        /// Directory for guardctl.1 and guardctl-*.1.
        #[arg(long)]
        man: std::path::PathBuf,
        /// Directory for the bash, zsh and fish completions.
        #[arg(long)]
        completions: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Pending(_) | Command::Status(_) | Command::Explain(_) | Command::Policy(_)
    ) {
        // `guardctl status | head` ends quietly, as other tools do, instead
        // of panicking on the closed pipe.
        // SAFETY: no other thread runs yet; SIG_DFL installs no handler.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let result = match cli.command {
        Command::Run(args) => run::run(&cli.socket, args),
        Command::Pending(args) => pending::run(&cli.socket, &cli.relay, args),
        Command::Approve(args) => decide::approve(&cli.socket, &cli.relay, args),
        Command::Deny(args) => decide::deny(&cli.socket, &cli.relay, args),
        Command::Sign(args) => sign::run(&cli.socket, args),
        Command::Watch(args) => watch::run(&cli.socket, &cli.relay, args),
        Command::Status(args) => status::run(&cli.socket, &cli.relay, args),
        Command::Explain(args) => explain::run(&cli.socket, args),
        Command::Policy(command) => policy::run(&cli.relay, command),
        Command::Generate { man, completions } => generate(&man, &completions),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("guardctl: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn generate(man: &std::path::Path, completions: &std::path::Path) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    guard_daemon::docs::write_man_pages(Cli::command(), "1", man)?;
    guard_daemon::docs::write_completions(Cli::command(), completions)?;
    Ok(ExitCode::SUCCESS)
}

/// Sends a request; an error response becomes an error.
fn call(socket: &std::path::Path, request: Request) -> anyhow::Result<Response> {
    match client::call(socket, request)? {
        Response::Error { message } => anyhow::bail!("{message}"),
        response => Ok(response),
    }
}

fn unexpected(response: Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected response from guardd: {response:?}")
}
