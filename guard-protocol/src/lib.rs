//! The control-socket protocol shared by guardd and guardctl: one JSON object
//! per line in each direction, request then response.
//!
//! Its own crate (serde only) so that xtask, which cannot depend on
//! guard-daemon (its build script needs bpf-linker), reads guardd's answers
//! as the types guardd writes them with. guard-daemon re-exports everything
//! from its old paths (`protocol::*`, `policy::{Action, Explanation, ...}`).
mod policy;

use serde::{Deserialize, Serialize};

pub use policy::{Action, Explanation, HoldTerms, LocalAuth, OnTimeout};

/// Bumped on any incompatible change; a request with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted request line; longer ones are refused without being buffered whole.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
pub const DEFAULT_SOCKET: &str = "/run/agent-guard/guardd.sock";
pub const SOCKET_ENV: &str = "AGENT_GUARD_SOCKET";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Makes the calling process (by SO_PEERCRED) the root of a new session.
    StartSession {
        argv: Vec<String>,
    },
    /// Sent with a seccomp notification listener (SCM_RIGHTS) by `guardctl
    /// run`: guardd answers the gated system calls of the caller's session.
    GateSyscalls,
    Pending,
    Approve {
        id: String,
    },
    /// An approval signed elsewhere (`guardctl sign`), checked against allowed_signers.
    ApproveToken {
        id: String,
        token: String,
    },
    /// A denial signed elsewhere (`guardctl sign --deny`).
    DenyToken {
        id: String,
        token: String,
        reason: Option<String>,
    },
    /// Streams every audit record as an `event` response until the client leaves.
    Watch,
    Deny {
        id: String,
        reason: Option<String>,
    },
    Status,
    /// The approver's answer to an `auth_prompt`, on the connection of the
    /// `approve` that asked for it; refused anywhere else.
    AuthAnswer {
        answer: String,
    },
    Explain {
        argv: Vec<String>,
        cwd: Option<String>,
        #[serde(default)]
        env: Vec<(String, String)>,
    },
    /// Judges an API call by the `[[api]]` rules: `call` as an example is
    /// written (`aws ec2 TerminateInstances`), or `request`, the raw bytes
    /// of an HTTP/1.x request.
    ExplainApi {
        #[serde(default)]
        call: Option<String>,
        #[serde(default)]
        request: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    SessionStarted {
        session_id: u32,
        /// Whether the launcher should install the syscall gate.
        #[serde(default)]
        syscall_gate: bool,
        /// What this host cannot promise about the session; the launcher
        /// prints each before it starts the command.
        #[serde(default)]
        warnings: Vec<String>,
    },
    GateStarted {
        session_id: u32,
    },
    Pending {
        holds: Vec<HoldView>,
    },
    Decided {
        id: String,
        state: HoldState,
    },
    Status(Box<StatusView>),
    Explain(Box<Explanation>),
    /// During a local approval that needs re-authentication (PAM): show
    /// `text` and send back an `auth_answer`; `echo` says whether the answer
    /// may be shown as typed (a password may not).
    AuthPrompt {
        text: String,
        echo: bool,
    },
    /// During such an approval: a message to show, no answer.
    AuthInfo {
        text: String,
        error: bool,
    },
    /// One audit record, on a `watch` connection.
    Event {
        record: serde_json::Value,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Held,
    Approved,
    Denied,
    TimedOut,
    Exited,
}

/// A pending request as `guardctl pending --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldView {
    pub id: String,
    /// The host that holds it (`[fleet] host`, or the host name): a signed
    /// decision names it.
    #[serde(default)]
    pub host: String,
    pub pid: u32,
    pub session: u32,
    pub agent: Option<String>,
    pub uid: u32,
    pub program: String,
    pub argv: Vec<String>,
    pub cwd: String,
    pub exe: String,
    pub rule: String,
    pub state: HoldState,
    pub approvals_needed: u32,
    /// How the hold is kept (ptrace-stop, or SIGSTOP only and why).
    pub protection: String,
    /// Approver identities so far (`uid:N`, `key:PRINCIPAL`).
    pub approved_by: Vec<String>,
    /// Who may approve (the rule's `approvers`; empty: root or the command's uid, or any signer).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Further `approvers` lists of other hold rules that matched: an
    /// approver must be in each too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_approvers: Vec<Vec<String>>,
    #[serde(default)]
    pub self_approval: bool,
    /// For a held system call: what it does (`unlink /home/dev/.ssh/id_ed25519`).
    #[serde(default)]
    pub operation: Option<String>,
    /// `pid:comm` from the held process up to init.
    #[serde(default)]
    pub ancestry: Vec<String>,
    /// Environment that says where the command acts (AWS_PROFILE, KUBECONFIG...).
    #[serde(default)]
    pub context: Vec<String>,
    /// Why the rule matched.
    #[serde(default)]
    pub why: Vec<String>,
    pub held_secs: u64,
    pub expires_in_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub pid: u32,
    pub policy: PolicySummary,
    pub sessions: Vec<SessionView>,
    pub pending: usize,
    /// Capability -> the mechanism that provides it on this kernel ("none: ..." when absent).
    pub mechanisms: Vec<(String, String)>,
    pub programs: Vec<ProgramView>,
    pub stats: GateStats,
    /// How the kernel treats each watched program's execs in a session.
    #[serde(default)]
    pub prefilters: Vec<PrefilterView>,
    /// Why the BPF LSM does not run here (None: it does); the mechanisms
    /// that need it say so with this same text.
    #[serde(default)]
    pub lsm_missing: Option<String>,
}

/// One watched program in the exec gate's kernel prefilter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefilterView {
    pub program: String,
    /// Whether the kernel reads its argv and lets a command that no rule
    /// can match run without a stop.
    pub prefiltered: bool,
    /// The arguments that stop it, or why every exec of it stops.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub source: String,
    pub version: String,
    /// Why the last reload was refused (the policy before it stays in force).
    pub last_reload_error: Option<String>,
    /// Why the last fleet policy bundle offered was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_refused: Option<String>,
    pub rules: usize,
    pub watched_programs: usize,
    pub agents: Vec<String>,
    /// Whether local approvals also need polkit (guardctl then starts a tty agent).
    #[serde(default)]
    pub local_auth: LocalAuth,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: u32,
    pub agent: Option<String>,
    pub origin: String,
    pub uid: u32,
    /// The working tree the `{workspace}` of `[[protect]]` names (none where
    /// the session started in `/` or the home directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramView {
    pub name: String,
    pub id: u32,
    pub tracepoint: String,
    /// Kernel ids of the maps the program uses.
    pub map_ids: Vec<u32>,
    /// Whether it is attached now (the report-only program is only while a
    /// session needs it).
    pub attached: bool,
}

/// Exec-gate counters and latencies measured from the kernel's stop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateStats {
    pub stops: u64,
    pub allowed: u64,
    pub held: u64,
    pub denied: u64,
    pub recovered_from_map: u64,
    /// Events the kernel's ring buffer had no room for (all kinds, since the
    /// maps were created); the stops among them are raised from the map.
    #[serde(default)]
    pub events_lost: u64,
    /// Watched execs the kernel killed because neither its map of stops nor
    /// the ring buffer had room to record the stop (fail closed).
    #[serde(default)]
    pub stops_killed: u64,
    /// Watched execs in sessions the kernel's argv prefilter let run
    /// without a stop (no rule could match them).
    #[serde(default)]
    pub prefilter_passed: u64,
    /// Writing opens in sessions of a quiet path (/dev/null and the like:
    /// `quiet_opens`) the report-only program did not send to guardd.
    #[serde(default)]
    pub quiet_opens_skipped: u64,
    /// The paths whose writing opens are not reported (report-only hosts
    /// only): device files only root can replace that no entry covers.
    #[serde(default)]
    pub quiet_opens: Vec<String>,
    /// Stop -> the daemon handles the ring-buffer event.
    pub event_latency: Latency,
    /// Stop -> decision (resumed, killed, or hold raised).
    pub decision_latency: Latency,
    /// Client calls the API probes stopped (dlopen stops not counted).
    #[serde(default)]
    pub api_stops: u64,
    /// API stop -> decision (request read and judged).
    #[serde(default)]
    pub api_decision_latency: Latency,
    /// Session processes stopped at their first TLS connection to be
    /// followed by the write probes.
    #[serde(default)]
    pub tls_follows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Parses one request line; every failure is a message for the peer, never a panic.
pub fn decode_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    let envelope: RequestEnvelope =
        serde_json::from_slice(line).map_err(|err| format!("malformed request: {err}"))?;
    if envelope.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} not supported (guardd speaks {PROTOCOL_VERSION})",
            envelope.version
        ));
    }
    Ok(envelope.request)
}

pub fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("protocol types always serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let request = Request::Deny {
            id: "a-1".into(),
            reason: Some("no".into()),
        };
        let line = encode_line(&RequestEnvelope {
            version: PROTOCOL_VERSION,
            request: request.clone(),
        });
        assert_eq!(decode_request(line.trim_ascii_end()).unwrap(), request);
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert!(decode_request(b"{").unwrap_err().contains("malformed"));
        assert!(decode_request(br#"{"version":1,"type":"nope"}"#)
            .unwrap_err()
            .contains("malformed"));
        assert!(decode_request(br#"{"version":9,"type":"status"}"#)
            .unwrap_err()
            .contains("version 9"));
        let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(decode_request(&huge).unwrap_err().contains("longer"));
    }
}
