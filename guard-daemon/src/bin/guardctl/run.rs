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

/// Sends the gated system calls of this process and everything it starts to
/// guardd (seccomp user notification). Where the kernel cannot, the session
/// runs without the gate and says so; once the filter is on, the command
/// runs only if guardd took the listener (else every gated call would wait).
fn gate_syscalls(socket: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsFd as _;
    let listener = match guard_daemon::gate::filter::install() {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("agent-guard: no syscall gate in this session ({err}); file operations are not held");
            return Ok(());
        }
    };
    // Nothing between here and the exec may make a gated call: it would wait
    // on a listener nobody reads.
    let response =
        guard_daemon::client::call_with_fd(socket, Request::GateSyscalls, listener.as_fd())
            .context("handing the syscall gate to guardd; refusing to start the command")?;
    drop(listener);
    match response {
        Response::GateStarted { .. } => Ok(()),
        other => Err(super::unexpected(other))
            .context("guardd did not take the syscall gate; refusing to start the command"),
    }
}

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
    let Response::SessionStarted {
        session_id,
        syscall_gate,
        warnings,
    } = response
    else {
        return Err(super::unexpected(response));
    };
    for warning in warnings {
        eprintln!("agent-guard: WARNING: {warning}");
    }
    if syscall_gate {
        gate_syscalls(socket)?;
    }
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("AGENT_GUARD_SESSION", session_id.to_string())
        .exec();
    Err(err)
        .with_context(|| format!("cannot run {}", args.command[0].to_string_lossy()))
        .map(|()| ExitCode::from(127))
}
