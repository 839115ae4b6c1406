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
    /// What a hold needs: the deciding rule's terms, made stricter by every
    /// other hold rule that matched (flattened: the JSON keeps
    /// `timeout_secs`, `approvals`, ... at the top level).
    #[serde(flatten)]
    pub terms: HoldTerms,
    /// The hold rules whose terms were combined, when more than one matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms_from: Vec<String>,
    /// What the exec gate's kernel prefilter does with the command in a
    /// session: why it stops, or that it runs without a stop (`explain`
    /// of a command only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
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
    /// The `approvers` of other hold rules that matched the same command:
    /// an approver must be accepted by each of these lists too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_approvers: Vec<Vec<String>>,
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
            also_approvers: Vec::new(),
        }
    }

    /// Makes these terms as strict as `other` too, for a command two hold
    /// rules match: the larger number of approvals, every rule's approvers,
    /// self-approval only if both allow it, denied on timeout if either
    /// says so, and the longer wait.
    pub fn tighten(&mut self, other: &HoldTerms) {
        self.approvals = self.approvals.max(other.approvals);
        for list in std::iter::once(&other.approvers).chain(&other.also_approvers) {
            if !self.approver_lists().any(|known| known == list) {
                self.also_approvers.push(list.clone());
            }
        }
        self.self_approval &= other.self_approval;
        if other.on_timeout == OnTimeout::Deny {
            self.on_timeout = OnTimeout::Deny;
        }
        self.timeout_secs = self.timeout_secs.max(other.timeout_secs);
    }

    /// Who may approve, in words: each list an approver must satisfy.
    pub fn approvers_in_words(&self) -> String {
        self.approver_lists()
            .map(|list| match list.is_empty() {
                true => "root or the command's own user".to_string(),
                false => list.join(", "),
            })
            .collect::<Vec<_>>()
            .join(", each also among ")
    }

    /// Each list an approver must be accepted by (an empty list: root or
    /// the command's own uid locally, any allowed signer for tokens).
    pub fn approver_lists(&self) -> impl Iterator<Item = &Vec<String>> {
        std::iter::once(&self.approvers).chain(&self.also_approvers)
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
