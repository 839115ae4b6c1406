//! The policy's settings types: actions, agents, `[defaults]` modes,
//! `[approvals]`, and the explanation of a judgement.
use serde::{Deserialize, Serialize};

use super::{LocalAuth, OnTimeout};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Audit,
    Hold,
    Deny,
}

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

/// What the policy says about one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub action: Action,
    /// The deciding rule, or None when no rule matched (allow).
    pub rule: Option<String>,
    pub program: String,
    /// Every rule that matched.
    pub matched: Vec<String>,
    /// Why the deciding rule matched: the words, flags, paths... it saw.
    pub why: Vec<String>,
    pub message: Option<String>,
    /// What a hold under the deciding rule needs (flattened: the JSON keeps
    /// `timeout_secs`, `approvals`, ... at the top level).
    #[serde(flatten)]
    pub terms: HoldTerms,
}

/// What a rule asks of the holds it raises. Carried unchanged from the rule
/// through the explanation to the hold and the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldTerms {
    /// Distinct approvers needed (the state file of older guardds calls it
    /// `approvals_needed`).
    #[serde(alias = "approvals_needed")]
    pub approvals: u32,
    /// Who may approve (empty: root or the command's own uid, or any signer).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Whether the session's own uid may approve.
    #[serde(default = "yes")]
    pub self_approval: bool,
    /// How long a hold waits for a decision.
    #[serde(default)]
    pub timeout_secs: u64,
    pub on_timeout: OnTimeout,
}

impl HoldTerms {
    /// The terms of a command no rule holds.
    pub fn none() -> Self {
        Self {
            approvals: 0,
            approvers: Vec::new(),
            self_approval: true,
            timeout_secs: 0,
            on_timeout: OnTimeout::Deny,
        }
    }

    /// The terms of a syscall-gate hold: any approver, denied on timeout.
    pub fn gate(approvals: u32, timeout: std::time::Duration) -> Self {
        Self {
            approvals: approvals.max(1),
            timeout_secs: timeout.as_secs(),
            ..Self::none()
        }
    }

    /// Distinct approvals a hold needs: at least one, whatever the rule says.
    pub fn approvals_needed(&self) -> u32 {
        self.approvals.max(1)
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs)
    }
}

fn yes() -> bool {
    true
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
