//! What guardd and `guardctl --fleet` say to each other through the relay:
//! the subjects, the streams, and the messages (JSON).
use serde::{Deserialize, Serialize};

use crate::{policy::fleet::subject_token, protocol::HoldView};

/// Each hold's state, the last message per subject kept (`max_messages_per_subject = 1`).
pub const HOLDS_STREAM: &str = "AGENT_GUARD_HOLDS";
pub const ALL_HOLDS: &str = "agent-guard.holds.>";
/// Every audit record of every host, at least once, `Nats-Msg-Id` telling
/// repeats apart.
pub const AUDIT_STREAM: &str = "AGENT_GUARD_AUDIT";
pub const ALL_AUDIT: &str = "agent-guard.audit.>";

/// `agent-guard.holds.HOST.ID`: the state of one hold.
pub fn hold(host: &str, id: &str) -> String {
    format!("agent-guard.holds.{host}.{}", subject_token(id))
}

/// `agent-guard.audit.HOST`: that host's audit records.
pub fn audit(host: &str) -> String {
    format!("agent-guard.audit.{host}")
}

/// `agent-guard.decisions.HOST`: signed decisions for that host's holds.
pub fn decisions(host: &str) -> String {
    format!("agent-guard.decisions.{host}")
}

/// A hold as the relay carries it: pending (with the request as `guardctl
/// pending --json` shows it, escaped, which is what a token signs: the
/// same argv as the audit record's), or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldState {
    pub host: String,
    pub id: String,
    /// Seconds since the epoch when guardd published this state.
    pub at: u64,
    #[serde(default)]
    pub hold: Option<HoldView>,
    /// How it ended (the audit event: approve, deny, timeout, exit...).
    #[serde(default)]
    pub ended: Option<String>,
}

/// A decision an approver signed, for guardd to check as it checks
/// `guardctl approve --token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub token: String,
    #[serde(default)]
    pub deny: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Key-value bucket of signed policy bundles, one key per bundle name.
pub const POLICY_BUCKET: &str = "AGENT_GUARD_POLICY";
/// Key-value bucket of each host's last `HostStatus`, keyed by host.
pub const HOSTS_BUCKET: &str = "AGENT_GUARD_HOSTS";

/// What a host says about itself (`guardctl --fleet status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    /// guardd's own version.
    pub guardd: String,
    /// The policy in force (`guardctl status` shows the same).
    pub policy: String,
    /// The bundle the host follows (`[fleet] policy_name`), if it takes any.
    #[serde(default)]
    pub follows: Option<String>,
    /// The fleet bundle in force: its version and signer.
    #[serde(default)]
    pub bundle: Option<BundleInForce>,
    /// Why the last bundle offered was refused, if it was.
    #[serde(default)]
    pub refused: Option<String>,
    /// Seconds since the epoch when guardd published this.
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInForce {
    pub name: String,
    pub version: u64,
    pub signer: String,
}
