use std::{path::Path, process::ExitCode};

use guard_daemon::protocol::{Request, Response};

/// Approve a held request (from outside any agent session).
#[derive(clap::Args)]
pub struct ApproveArgs {
    id: String,
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
    report(super::call(socket, Request::Approve { id: args.id })?)
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
