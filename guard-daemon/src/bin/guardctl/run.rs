use std::{os::unix::process::CommandExt as _, path::Path, process::ExitCode};

use anyhow::Context as _;
use guard_daemon::protocol::{Request, Response};

/// Run a command as the root of a new agent session (guardd must be running).
#[derive(clap::Args)]
pub struct Args {
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

pub fn run(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
    // This process registers itself, then becomes the command by exec, so the
    // command is inside the session from its first instruction. Without guardd
    // nothing is started: no unguarded session by accident.
    let response = super::call(
        socket,
        Request::StartSession {
            argv: args.command.clone(),
        },
    )
    .context("refusing to start the command without agent-guard")?;
    let Response::SessionStarted { session_id } = response else {
        return Err(super::unexpected(response));
    };
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("AGENT_GUARD_SESSION", session_id.to_string())
        .exec();
    Err(err)
        .with_context(|| format!("cannot run {}", args.command[0]))
        .map(|()| ExitCode::from(127))
}
