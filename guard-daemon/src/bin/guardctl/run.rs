use std::{
    ffi::OsString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::Path,
    process::ExitCode,
};

use anyhow::Context as _;
use guard_daemon::protocol::{Request, Response};

/// Arguments of the command sent to guardd for the audit record (the command
/// itself is judged by the kernel and guardd when each program is executed).
const AUDIT_ARGS: usize = 64;
const AUDIT_ARG_BYTES: usize = 1024;

/// Run a command as the root of a new agent session (guardd must be running).
#[derive(clap::Args)]
pub struct Args {
    /// The command and its arguments (any bytes).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

pub fn run(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
    // This process registers itself, then becomes the command by exec, so the
    // command is inside the session from its first instruction. Without guardd
    // nothing is started: no unguarded session by accident.
    let summary = args
        .command
        .iter()
        .take(AUDIT_ARGS)
        .map(|arg| {
            let bytes = arg.as_bytes();
            // guardd escapes what it records; JSON needs UTF-8 here.
            String::from_utf8_lossy(&bytes[..bytes.len().min(AUDIT_ARG_BYTES)]).into_owned()
        })
        .collect();
    let response = super::call(socket, Request::StartSession { argv: summary })
        .context("refusing to start the command without agent-guard")?;
    let Response::SessionStarted { session_id } = response else {
        return Err(super::unexpected(response));
    };
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("AGENT_GUARD_SESSION", session_id.to_string())
        .exec();
    Err(err)
        .with_context(|| format!("cannot run {}", args.command[0].to_string_lossy()))
        .map(|()| ExitCode::from(127))
}
