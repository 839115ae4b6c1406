//! What guardd tells systemd under `Type=notify`: the status line that
//! `systemctl status agent-guard` shows (which policy is in force, and why
//! the last reload was refused). Outside systemd these are no-ops.

/// The longest status line sent: `systemctl status` shows one line.
const STATUS_MAX: usize = 300;

/// Sets the unit's status line: one line, control characters escaped (a
/// policy error quotes the file), cut to STATUS_MAX characters.
pub fn status(text: &str) {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let line: String = crate::escape::escape_bytes(one_line.as_bytes())
        .chars()
        .take(STATUS_MAX)
        .collect();
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]) {
        tracing::debug!("sd_notify STATUS failed: {err}");
    }
}

/// The status line of a policy in force.
pub fn policy_in_force(version: &str, rules: usize) -> String {
    format!("policy {version} in force ({rules} rules)")
}
