//! The policy's types that the control socket carries: a rule's action and
//! hold terms, `guardctl explain`'s answer, and the settings `guardctl status`
//! reports. The policy language itself stays in guard-daemon's `policy`
//! module, which re-exports these from their old paths.
use serde::{Deserialize, Serialize};

/// What a rule does with a command it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Audit,
    Hold,
    Deny,
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

/// `[approvals] local_auth`: how local approvers are re-authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalAuth {
    /// PAM where the host has the service file and libpam, else none, said
    /// in `guardctl status` and in every held notice.
    #[default]
    Auto,
    /// PAM re-authentication of the approver (`pam_service`), every time;
    /// refused where PAM cannot run.
    Pam,
    /// `pkcheck` for action `org.agent-guard.approve`, with user interaction.
    Polkit,
    /// No re-authentication: any process of the approver's uid outside the
    /// sessions can approve (an agent driving the user's tmux, for one).
    None,
}

/// A rule's `on_timeout`: what becomes of a hold nobody decided in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    Deny,
    Allow,
}
