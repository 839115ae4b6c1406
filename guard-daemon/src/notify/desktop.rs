//! Desktop notifications of holds: org.freedesktop.Notifications on the
//! session bus of the held process's user. A session bus admits only its own
//! user (not even root), so guardd runs itself as that user
//! (`guardd --desktop-notify`) to make the one D-Bus call.
use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::policy::notify::NotifySettings;

/// The hidden guardd flag that makes the call (reads a `Message` on stdin).
pub const CHILD_FLAG: &str = "--desktop-notify";
/// How long the helper may take before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub address: String,
    pub summary: String,
    pub body: String,
}

/// Starts the helper for one hold record; failures are logged, never waited on.
pub fn spawn(settings: &NotifySettings, host: &str, record: &Value) {
    let Some(uid) = record["uid"].as_u64().and_then(|u| u32::try_from(u).ok()) else {
        return;
    };
    let (summary, body) = super::text::describe(host, record);
    let message = Message {
        address: settings.desktop_bus.replace("{uid}", &uid.to_string()),
        summary,
        body,
    };
    tokio::spawn(async move {
        if let Err(err) = run_helper(uid, &message).await {
            tracing::warn!(
                uid,
                address = message.address,
                "desktop notification failed: {err}"
            );
        }
    });
}

async fn run_helper(uid: u32, message: &Message) -> anyhow::Result<()> {
    let user = nix::unistd::User::from_uid(uid.into())?;
    let gid = user.as_ref().map_or(uid, |u| u.gid.as_raw());
    // /proc/self/exe, not its path: the user may not search the directories
    // above guardd's binary (a checkout in a 0700 home or temp directory).
    let mut child = tokio::process::Command::new("/proc/self/exe")
        .arg(CHILD_FLAG)
        .uid(uid)
        .gid(gid)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(&serde_json::to_vec(message)?).await?;
    drop(stdin);
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output()).await??;
    if !output.status.success() {
        anyhow::bail!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The helper's side: one Notify call, critical urgency so it stays on screen.
pub fn notify_from_stdin() -> anyhow::Result<()> {
    let message: Message = serde_json::from_reader(std::io::stdin().lock())?;
    let connection =
        zbus::blocking::connection::Builder::address(message.address.as_str())?.build()?;
    let mut hints: HashMap<&str, zbus::zvariant::Value> = HashMap::new();
    hints.insert("urgency", zbus::zvariant::Value::U8(2));
    connection.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            "agent-guard",
            0u32,
            "dialog-warning",
            message.summary.as_str(),
            message.body.as_str(),
            Vec::<&str>::new(),
            hints,
            0i32,
        ),
    )?;
    Ok(())
}
