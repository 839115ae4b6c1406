//! The policy's settings types: agents, `[defaults]` modes and `[approvals]`.
//! Actions and the explanation of a judgement (`Action`, `Explanation`,
//! `HoldTerms`) are on the control socket: they live in guard-protocol.
use serde::{Deserialize, Serialize};

use super::LocalAuth;

/// How agents are recognised when they start without `guardctl run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Agents {
    pub programs: Vec<String>,
    pub interpreters: Vec<String>,
    pub packages: Vec<String>,
}

/// `[defaults] syscall_gate`: where `[[protect]]` is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateMode {
    /// `"auto"` (default): by the BPF LSM where the kernel runs it (holds
    /// survive a guardd restart there); nowhere else.
    #[default]
    Auto,
    /// `true`: as auto, and where the BPF LSM does not run, by seccomp user
    /// notification in `guardctl run` sessions (a guardd restart leaves those
    /// sessions unable to change files until they are restarted).
    On,
    /// `false`: not enforced.
    Off,
}

impl<'de> Deserialize<'de> for GateMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(text) if text == "auto" => Ok(Self::Auto),
            Raw::Text(text) => Err(serde::de::Error::custom(format!(
                "syscall_gate must be \"auto\", true or false, not {text:?}"
            ))),
        }
    }
}

/// `[defaults] session_escape`: whether a `guardctl run` session may make
/// processes outside it do its work (ptrace, process_vm_writev, pidfd_getfd,
/// connecting to a terminal multiplexer or the user's service manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapeMode {
    /// `"deny"` (default): attaching to, writing into or taking fds from a
    /// process outside the session fails with EPERM; connecting to a tmux,
    /// screen or systemd manager socket served from outside is held.
    #[default]
    Deny,
    /// `"allow"`: no escape checks (no seccomp filter for them either), for
    /// agents that must debug other processes.
    Allow,
}

/// How approvals are checked (`[approvals]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalSettings {
    pub allowed_signers: Option<std::path::PathBuf>,
    pub max_token_ttl: std::time::Duration,
    pub local_auth: LocalAuth,
    pub pam_service: String,
    pub require_terminal: bool,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            allowed_signers: None,
            max_token_ttl: std::time::Duration::from_secs(3600),
            local_auth: LocalAuth::Auto,
            pam_service: crate::pam::DEFAULT_SERVICE.to_string(),
            require_terminal: false,
        }
    }
}
