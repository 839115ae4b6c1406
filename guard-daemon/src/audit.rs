//! The audit log: one JSON object per line, appended, for every event that
//! matters (session start, hold, approval, refusal, denial, timeout, release).
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::Path,
    sync::Mutex,
    time::SystemTime,
};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    SessionStart,
    Hold,
    /// A hold from before a restart, taken over by the new guardd.
    Readopt,
    Allow,
    Audit,
    Approve,
    Deny,
    Refuse,
    Timeout,
    Release,
    Exit,
    PolicyReload,
    Error,
}

/// What was decided, as the record's `decision` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDecision {
    Allow,
    Deny,
    Hold,
    /// The held process ended first.
    Exited,
    /// It ran without a decision (found after a restart).
    Ran,
    /// Taken over from the kernel's map after its event was lost.
    Recovered,
    Refuse,
    /// A policy change refused.
    Refused,
    /// A decision request refused (`refused approve`, `refused deny`).
    RefusedRequest(String),
    /// A policy loaded, by its version.
    Loaded(String),
}

impl serde::Serialize for AuditDecision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Hold => "hold",
            Self::Exited => "exited",
            Self::Ran => "ran",
            Self::Recovered => "recovered",
            Self::Refuse => "refuse",
            Self::Refused => "refused",
            Self::RefusedRequest(verb) => {
                return serializer.serialize_str(&format!("refused {verb}"))
            }
            Self::Loaded(version) => return serializer.serialize_str(&format!("loaded {version}")),
        };
        serializer.serialize_str(text)
    }
}

/// How a decision arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A local person, on the control socket.
    Socket,
    /// A signed approval token.
    Token,
}

/// One record. Untrusted text (argv, paths) is escaped before it gets here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    pub event: Option<AuditEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// A gated system call and its path (`unlink /etc/passwd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Environment that says where the command acts (`AWS_PROFILE=prod`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why the rule matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<AuditDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// How a decision arrived: `socket` (a local person) or `token` (a signed approval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Microseconds from the kernel's stop to the daemon's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_us: Option<u64>,
}

impl AuditRecord {
    pub fn new(event: AuditEvent) -> Self {
        Self {
            event: Some(event),
            ..Self::default()
        }
    }
}

pub struct AuditLog {
    file: Mutex<File>,
    /// `guardctl watch` connections: every record, as written.
    watchers: tokio::sync::broadcast::Sender<serde_json::Value>,
}

/// Records a slow watcher may fall behind by before it is told it missed some.
const WATCH_BACKLOG: usize = 1024;

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            watchers: tokio::sync::broadcast::channel(WATCH_BACKLOG).0,
        })
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.watchers.subscribe()
    }

    /// For listeners that subscribe and leave on their own (notifications).
    pub fn broadcaster(&self) -> tokio::sync::broadcast::Sender<serde_json::Value> {
        self.watchers.clone()
    }

    /// Appends one record. A failed write is reported on the daemon's log; it
    /// never changes a decision.
    pub fn write(&self, record: &AuditRecord) {
        let line = Line {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            record,
        };
        let mut text = serde_json::to_string(&line).expect("audit records serialize");
        if self.watchers.receiver_count() > 0 {
            let _ = self
                .watchers
                .send(serde_json::from_str(&text).expect("just serialized"));
        }
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = file.write_all(text.as_bytes()) {
            tracing::error!("audit log write failed: {err}; record: {}", text.trim_end());
        }
    }
}
