use std::{
    ffi::OsString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::Path,
    process::ExitCode,
};

use anyhow::Context as _;
use guard_daemon::{
    protocol::{Request, Response},
    seccomp::filter::Calls,
};

/// Arguments of the command sent to guardd for the audit record (the command
/// itself is judged by the kernel and guardd when each program is executed).
const AUDIT_ARGS: usize = 64;
const AUDIT_ARG_BYTES: usize = 1024;

/// Sends the gated system calls of this process and everything it starts to
/// guardd (seccomp user notification): the file calls of the syscall gate
/// and/or the escape checks. Where the kernel cannot, the session runs
/// without them and says so; once the filter is on, the command runs only if
/// guardd took the listener (else every gated call would wait).
fn gate_syscalls(socket: &Path, calls: Calls) -> anyhow::Result<()> {
    // Connected before the filter is on: with the escape checks the filter
    // sends connect to guardd, which does not have the listener yet.
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to guardd at {}", socket.display()))?;
    let listener = match guard_daemon::seccomp::filter::install(calls) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "agent-guard: no seccomp filter in this session ({err}); file operations are not \
                 held and processes outside the session are not shielded from it"
            );
            return Ok(());
        }
    };
    // Nothing between here and the exec may make a gated call: it would wait
    // on a listener nobody reads.
    let response = hand_over(&stream, &listener)
        .context("handing the syscall gate to guardd; refusing to start the command")?;
    drop(listener);
    match response {
        Response::GateStarted { .. } => Ok(()),
        other => Err(super::unexpected(other))
            .context("guardd did not take the syscall gate; refusing to start the command"),
    }
}

/// `gate_syscalls` with the listener (SCM_RIGHTS) on a connected stream.
fn hand_over(
    stream: &std::os::unix::net::UnixStream,
    listener: &std::os::fd::OwnedFd,
) -> anyhow::Result<Response> {
    use std::{
        io::{BufRead as _, Write as _},
        os::fd::AsRawFd as _,
    };

    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let line = guard_daemon::protocol::encode_line(&guard_daemon::protocol::RequestEnvelope {
        version: guard_daemon::protocol::PROTOCOL_VERSION,
        request: Request::GateSyscalls,
    });
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&[listener.as_raw_fd()])],
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    // The rest, if any, without the fd (it went with the first bytes).
    let mut writer = stream;
    writer.write_all(&line[sent..])?;
    let mut response = String::new();
    if std::io::BufReader::new(stream).read_line(&mut response)? == 0 {
        anyhow::bail!("guardd closed the connection");
    }
    Ok(serde_json::from_str(&response)?)
}

/// Whether guardd wants the escape checks in this session (`[defaults]
/// session_escape`, as `guardctl status` reports it). A guardd that does not
/// report them would not judge them either.
fn escape_checks(socket: &Path) -> anyhow::Result<bool> {
    let response = super::call(socket, Request::Status)
        .context("asking guardd about [defaults] session_escape")?;
    let Response::Status(status) = response else {
        return Err(super::unexpected(response));
    };
    Ok(status
        .mechanisms
        .iter()
        .any(|(name, how)| name == "session_escape" && !how.starts_with("off")))
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
    let escape = escape_checks(socket)?;
    if syscall_gate || escape {
        gate_syscalls(
            socket,
            Calls {
                files: syscall_gate,
                escape,
            },
        )?;
    }
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("AGENT_GUARD_SESSION", session_id.to_string())
        .exec();
    Err(err)
        .with_context(|| format!("cannot run {}", args.command[0].to_string_lossy()))
        .map(|()| ExitCode::from(127))
}
