use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use guard_daemon::{
    approval::{self, SignedRequest},
    protocol::{HoldView, Request, Response},
};

/// Sign an approval of one held request with an SSH key; prints a token that
/// `guardctl approve ID --token TOKEN` submits from anywhere.
#[derive(clap::Args)]
pub struct Args {
    id: String,
    /// An OpenSSH private key (unencrypted) listed in guardd's allowed_signers.
    #[arg(long)]
    key: PathBuf,
    /// How long the token stays valid.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The request as `guardctl pending --json` printed it (one object or a
    /// list), for signing on a machine without access to guardd; `-` reads stdin.
    #[arg(long)]
    request: Option<PathBuf>,
}

pub fn run(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
    println!(
        "{}",
        token(
            socket,
            &args.id,
            &args.key,
            args.ttl,
            args.request.as_deref()
        )?
    );
    Ok(ExitCode::SUCCESS)
}

/// A token for request `id`, signed with `key`.
pub fn token(
    socket: &Path,
    id: &str,
    key: &Path,
    ttl: Duration,
    request: Option<&Path>,
) -> anyhow::Result<String> {
    let holds = match request {
        Some(path) => read_holds(path)?,
        None => match super::call(socket, Request::Pending)? {
            Response::Pending { holds } => holds,
            other => return Err(super::unexpected(other)),
        },
    };
    let hold = holds
        .iter()
        .find(|h| h.id == id)
        .with_context(|| format!("no pending request {id}"))?;
    let key = ssh_key::PrivateKey::read_openssh_file(key)
        .with_context(|| format!("reading {}", key.display()))?;
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + ttl.as_secs();
    Ok(approval::sign(&key, &SignedRequest::of(hold, expires))?)
}

fn read_holds(path: &Path) -> anyhow::Result<Vec<HoldView>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let value: serde_json::Value = serde_json::from_str(&text)?;
    Ok(match value {
        serde_json::Value::Array(_) => serde_json::from_value(value)?,
        one => vec![serde_json::from_value(one)?],
    })
}
