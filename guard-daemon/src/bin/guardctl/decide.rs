use std::{path::Path, process::ExitCode};

use guard_daemon::{
    approval::Decision,
    policy::LocalAuth,
    protocol::{Request, Response},
};

/// Approve a held request (from outside any agent session), as yourself or
/// with a signed token.
#[derive(clap::Args)]
pub struct ApproveArgs {
    id: String,
    /// Submit a token made by `guardctl sign` (it counts for the key's principal).
    #[arg(long, conflicts_with = "sign")]
    token: Option<String>,
    /// Sign with this SSH key and submit: `guardctl sign` and `--token` in one.
    #[arg(long)]
    sign: Option<std::path::PathBuf>,
    /// With --fleet: the host that holds ID, where two hosts have one.
    #[arg(long, requires = "sign")]
    host: Option<String>,
}

/// Deny a held request: the process is killed before it ever runs.
#[derive(clap::Args)]
pub struct DenyArgs {
    id: String,
    /// Why, for the audit log and the agent.
    #[arg(long)]
    reason: Option<String>,
    /// Submit a denial made by `guardctl sign --deny`.
    #[arg(long, conflicts_with = "sign")]
    token: Option<String>,
    /// Sign a denial with this SSH key and submit it.
    #[arg(long)]
    sign: Option<std::path::PathBuf>,
    /// With --fleet: the host that holds ID, where two hosts have one.
    #[arg(long, requires = "sign")]
    host: Option<String>,
}

/// Validity of a token signed and submitted in one step.
pub const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// The token given (`--token`), or one signed here (`--sign KEY`), if any.
fn signed(
    socket: &Path,
    id: &str,
    token: Option<String>,
    key: Option<std::path::PathBuf>,
    decision: Decision,
) -> anyhow::Result<Option<String>> {
    Ok(match (token, key) {
        (Some(token), _) => Some(token),
        (None, Some(key)) => Some(super::sign::token(
            socket, id, &key, decision, TOKEN_TTL, None,
        )?),
        (None, None) => None,
    })
}

pub fn approve(
    socket: &Path,
    relay: &super::fleet::Relay,
    args: ApproveArgs,
) -> anyhow::Result<ExitCode> {
    if relay.fleet.is_some() {
        let (host, key) = (args.host.as_deref(), args.sign.as_deref());
        return super::fleet::decide(relay, &args.id, host, key, Decision::Approve, None);
    }
    let token = signed(socket, &args.id, args.token, args.sign, Decision::Approve)?;
    match token {
        Some(token) => report(super::call(
            socket,
            Request::ApproveToken { id: args.id, token },
        )?),
        None => report(approve_locally(socket, args.id)?),
    }
}

/// A local approval, with polkit's or PAM's prompt on this terminal when
/// guardd wants the approver to prove a person.
pub fn approve_locally(socket: &Path, id: String) -> anyhow::Result<Response> {
    approve_with(socket, id, ask)
}

/// A local approval whose prompts `ask(prompt, echo)` answers (None: no
/// answer, which fails the authentication).
pub fn approve_with(
    socket: &Path,
    id: String,
    mut ask: impl FnMut(&str, bool) -> Option<String>,
) -> anyhow::Result<Response> {
    let _agent = polkit_tty_agent(socket);
    // Long enough for a person to answer the prompts.
    Ok(guard_daemon::client::converse(
        socket,
        Request::Approve { id },
        std::time::Duration::from_secs(200),
        |message| {
            let (text, echo) = match message {
                Response::AuthPrompt { text, echo } => (text, *echo),
                Response::AuthInfo { text, .. } => {
                    eprintln!("{}", guard_daemon::escape::escape_bytes(text.as_bytes()));
                    return None;
                }
                _ => return None,
            };
            let prompt = format!(
                "agent-guard approval: {}",
                guard_daemon::escape::escape_bytes(text.as_bytes())
            );
            // No answer still answers, so guardd ends the exchange now.
            Some(Request::AuthAnswer {
                answer: ask(&prompt, echo).unwrap_or_default(),
            })
        },
    )?)
}

/// Asks the person: on the terminal (without echo for a password), else one
/// line of stdin.
fn ask(prompt: &str, echo: bool) -> Option<String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if std::io::stdin().is_terminal() && !echo {
        rpassword::prompt_password(prompt).ok()
    } else {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok();
        (!line.is_empty()).then(|| line.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// Turns the terminal's echo off on stdin until dropped (a password typed
/// to a reader that reads lines).
pub struct EchoOff(Option<rustix::termios::Termios>);

impl EchoOff {
    pub fn new() -> Self {
        let stdin = std::io::stdin();
        let Ok(before) = rustix::termios::tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut quiet = before.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let set = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
        Self(set.ok().map(|()| before))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                before,
            );
        }
    }
}

/// When guardd wants polkit for local approvals and we run on a terminal:
/// pkttyagent, registered for this process, to ask for the password here.
/// Killed when dropped.
fn polkit_tty_agent(socket: &Path) -> Option<KillOnDrop> {
    use std::{io::IsTerminal as _, io::Read as _, os::fd::AsRawFd as _};
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let Ok(Response::Status(status)) = super::call(socket, Request::Status) else {
        return None;
    };
    if status.policy.local_auth != LocalAuth::Polkit {
        return None;
    }
    // pkttyagent closes the notify fd once it is registered (or exits).
    let (read, write) = nix::unistd::pipe().ok()?;
    let child = std::process::Command::new("pkttyagent")
        .arg("--process")
        .arg(std::process::id().to_string())
        .arg("--fallback")
        .arg("--notify-fd")
        .arg(write.as_raw_fd().to_string())
        .spawn();
    drop(write);
    match child {
        Ok(child) => {
            let _ = std::fs::File::from(read).read_to_end(&mut Vec::new());
            Some(KillOnDrop(child))
        }
        Err(err) => {
            eprintln!("guardctl: cannot start pkttyagent for polkit's prompt: {err}");
            None
        }
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn deny(
    socket: &Path,
    relay: &super::fleet::Relay,
    args: DenyArgs,
) -> anyhow::Result<ExitCode> {
    if relay.fleet.is_some() {
        let (host, key) = (args.host.as_deref(), args.sign.as_deref());
        return super::fleet::decide(relay, &args.id, host, key, Decision::Deny, args.reason);
    }
    let token = signed(socket, &args.id, args.token, args.sign, Decision::Deny)?;
    let request = match token {
        Some(token) => Request::DenyToken {
            id: args.id,
            token,
            reason: args.reason,
        },
        None => Request::Deny {
            id: args.id,
            reason: args.reason,
        },
    };
    report(super::call(socket, request)?)
}

pub fn report(response: Response) -> anyhow::Result<ExitCode> {
    let Response::Decided { id, state } = response else {
        return Err(super::unexpected(response));
    };
    let state = serde_json::to_value(state)?;
    match state.as_str() {
        Some("held") => println!("{id}: approval recorded; more approvals are needed"),
        other => println!("{id}: {}", other.unwrap_or("decided")),
    }
    Ok(ExitCode::SUCCESS)
}
