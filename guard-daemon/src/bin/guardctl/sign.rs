use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use guard_daemon::{
    approval::{self, Decision, SignedRequest},
    protocol::{HoldView, Request, Response},
};

/// Sign an approval (or denial) of one held request with an SSH key; prints
/// a token that `guardctl approve ID --token TOKEN` (or `deny`) submits from anywhere.
#[derive(clap::Args)]
pub struct Args {
    id: String,
    /// An OpenSSH private key listed in guardd's allowed_signers. An
    /// encrypted key, or a public key whose private half is in ssh-agent, is
    /// signed with by `ssh-keygen -Y sign` (which asks for the passphrase).
    #[arg(long)]
    key: PathBuf,
    /// Sign a denial instead of an approval.
    #[arg(long)]
    deny: bool,
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
            if args.deny {
                Decision::Deny
            } else {
                Decision::Approve
            },
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
    decision: Decision,
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
    sign_hold(hold, key, decision, ttl)
}

/// A token for `hold`, signed with `key`, valid for `ttl`.
pub fn sign_hold(
    hold: &HoldView,
    key: &Path,
    decision: Decision,
    ttl: Duration,
) -> anyhow::Result<String> {
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + ttl.as_secs();
    let request = SignedRequest::of(hold, decision, expires);
    match plain_key(key) {
        Some(private) => Ok(approval::sign(&private, &request)?),
        // Encrypted, or a public key (the private half in ssh-agent).
        None => Ok(approval::token_of(
            request.expires,
            &ssh_keygen_sign(key, approval::NAMESPACE, request.digest().as_bytes())?,
        )),
    }
}

/// `ssh-keygen -Y sign -n NAMESPACE` of `message`, armored: it asks for a
/// passphrase or uses ssh-agent, and makes the same SSHSIG (SHA-512) as
/// the library's own signing with an unencrypted key.
pub fn ssh_keygen_sign(key: &Path, namespace: &str, message: &[u8]) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running ssh-keygen -Y sign")?;
    child.stdin.take().expect("piped").write_all(message)?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        anyhow::bail!(
            "ssh-keygen -Y sign -f {} failed ({})",
            key.display(),
            output.status
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The private key at `key` when it is usable as it is (not encrypted).
pub fn plain_key(key: &Path) -> Option<ssh_key::PrivateKey> {
    ssh_key::PrivateKey::read_openssh_file(key)
        .ok()
        .filter(|k| !k.is_encrypted())
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
