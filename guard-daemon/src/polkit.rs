//! `local_auth = "polkit"`: a local approval also needs polkit to authorise
//! the action `org.agent-guard.approve` for the calling process, which
//! usually means a password typed into the caller's authentication agent
//! (`pkttyagent`, which guardctl starts on a terminal, or the desktop's).
//! Runs outside the guard's lock: a person may take a minute to answer.
use std::time::Duration;

use crate::procfs;

pub const ACTION_ID: &str = "org.agent-guard.approve";
const PKCHECK: &str = "/usr/bin/pkcheck";
/// How long the person has to answer the authentication prompt.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Ok when polkit authorises `pid` (running as `uid`); otherwise why not.
pub async fn authorize(pid: u32, uid: u32) -> Result<(), String> {
    let start_time = procfs::stat(pid)
        .map_err(|err| format!("polkit: cannot read the caller: {err}"))?
        .start_time;
    let output = tokio::process::Command::new(PKCHECK)
        .args([
            "--action-id",
            ACTION_ID,
            "--allow-user-interaction",
            "--process",
        ])
        .arg(format!("{pid},{start_time},{uid}"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(ANSWER_TIMEOUT, output).await {
        Err(_) => return Err("polkit: no answer within 2 minutes".into()),
        Ok(Err(err)) => return Err(format!("polkit: cannot run {PKCHECK}: {err}")),
        Ok(Ok(output)) => output,
    };
    let detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err("polkit: not authorised".into()),
        Some(2) => Err("polkit: authentication was not given".into()),
        Some(3) => Err("polkit: the authentication prompt was dismissed".into()),
        _ => Err(format!(
            "polkit: pkcheck failed ({}): {detail}",
            output.status
        )),
    }
}
