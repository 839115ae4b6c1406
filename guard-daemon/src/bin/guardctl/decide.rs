use std::{path::Path, process::ExitCode};

use guard_daemon::protocol::{Request, Response};

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
}

/// Deny a held request: the process is killed before it ever runs.
#[derive(clap::Args)]
pub struct DenyArgs {
    id: String,
    /// Why, for the audit log and the agent.
    #[arg(long)]
    reason: Option<String>,
}

pub fn approve(socket: &Path, args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let token = match (args.token, args.sign) {
        (Some(token), _) => Some(token),
        (None, Some(key)) => Some(super::sign::token(
            socket,
            &args.id,
            &key,
            std::time::Duration::from_secs(300),
            None,
        )?),
        (None, None) => None,
    };
    let request = match token {
        Some(token) => Request::ApproveToken { id: args.id, token },
        None => Request::Approve { id: args.id },
    };
    report(super::call(socket, request)?)
}

pub fn deny(socket: &Path, args: DenyArgs) -> anyhow::Result<ExitCode> {
    report(super::call(
        socket,
        Request::Deny {
            id: args.id,
            reason: args.reason,
        },
    )?)
}

fn report(response: Response) -> anyhow::Result<ExitCode> {
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
