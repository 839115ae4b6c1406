//! The audit log: one JSON object per line, appended, for every event that
//! matters (session start, hold, approval, refusal, denial, timeout, release).
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::Path,
    sync::Mutex,
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The inverse of `Serialize`: a record read back (by the tests, by a tool
/// reading the log) gets the decision it was written with.
impl<'de> Deserialize<'de> for AuditDecision {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "allow" => Self::Allow,
            "deny" => Self::Deny,
            "hold" => Self::Hold,
            "exited" => Self::Exited,
            "ran" => Self::Ran,
            "recovered" => Self::Recovered,
            "refuse" => Self::Refuse,
            "refused" => Self::Refused,
            _ => {
                if let Some(verb) = text.strip_prefix("refused ") {
                    Self::RefusedRequest(verb.to_string())
                } else if let Some(version) = text.strip_prefix("loaded ") {
                    Self::Loaded(version.to_string())
                } else {
                    return Err(serde::de::Error::custom(format!(
                        "unknown audit decision {text:?}"
                    )));
                }
            }
        })
    }
}

/// How a decision arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A local person, on the control socket.
    Socket,
    /// A signed approval token.
    Token,
}

/// One record. Untrusted text (argv, paths) is escaped before it gets here.
/// Read back, a written line gives the same record (its `time` is left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One decision of every variant, with the texts that could be confused
    /// (`refused` and `refused deny`, a version with spaces). The match makes
    /// a new variant fail to compile here, and `seen` fails the test until
    /// the variant is also in the list.
    fn every_decision() -> Vec<AuditDecision> {
        let all = vec![
            AuditDecision::Allow,
            AuditDecision::Deny,
            AuditDecision::Hold,
            AuditDecision::Exited,
            AuditDecision::Ran,
            AuditDecision::Recovered,
            AuditDecision::Refuse,
            AuditDecision::Refused,
            AuditDecision::RefusedRequest("approve".into()),
            AuditDecision::RefusedRequest("deny".into()),
            AuditDecision::RefusedRequest(String::new()),
            AuditDecision::Loaded("2026-12 team policy".into()),
            AuditDecision::Loaded("refused".into()),
        ];
        let mut seen = [false; 10];
        for decision in &all {
            let variant = match decision {
                AuditDecision::Allow => 0,
                AuditDecision::Deny => 1,
                AuditDecision::Hold => 2,
                AuditDecision::Exited => 3,
                AuditDecision::Ran => 4,
                AuditDecision::Recovered => 5,
                AuditDecision::Refuse => 6,
                AuditDecision::Refused => 7,
                AuditDecision::RefusedRequest(_) => 8,
                AuditDecision::Loaded(_) => 9,
            };
            seen[variant] = true;
        }
        assert!(seen.iter().all(|s| *s), "a variant is missing: {seen:?}");
        all
    }

    fn every_event() -> Vec<AuditEvent> {
        use AuditEvent::*;
        let all = vec![
            SessionStart,
            Hold,
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
        ];
        let mut seen = [false; 13];
        for event in &all {
            let variant = match event {
                SessionStart => 0,
                Hold => 1,
                Readopt => 2,
                Allow => 3,
                Audit => 4,
                Approve => 5,
                Deny => 6,
                Refuse => 7,
                Timeout => 8,
                Release => 9,
                Exit => 10,
                PolicyReload => 11,
                Error => 12,
            };
            seen[variant] = true;
        }
        assert!(seen.iter().all(|s| *s), "a variant is missing: {seen:?}");
        all
    }

    /// A record with every field set: a new field fails to compile here.
    fn full_record(event: AuditEvent, decision: AuditDecision, channel: Channel) -> AuditRecord {
        AuditRecord {
            event: Some(event),
            request_id: Some("a-7".into()),
            session: Some(3),
            agent: Some("claude".into()),
            pid: Some(4242),
            ancestry: vec!["4242:terraform".into(), "4000:bash".into()],
            uid: Some(1000),
            cwd: Some("/home/dev/infra".into()),
            exe: Some("/usr/bin/terraform".into()),
            argv: vec!["terraform".into(), "destroy".into()],
            operation: Some("unlink /home/dev/.ssh/id_ed25519".into()),
            context: vec!["AWS_PROFILE=prod".into()],
            rule: Some("tf-destroy".into()),
            why: vec!["subcommand destroy".into()],
            decision: Some(decision),
            approver: Some("uid 0 (root)".into()),
            channel: Some(channel),
            reason: Some("approval 1 of 2".into()),
            decision_us: Some(812),
        }
    }

    /// What a reader of the log gets back: each line written by `AuditLog::write`.
    fn written_and_read(records: &[AuditRecord]) -> Vec<AuditRecord> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for record in records {
            log.write(record);
        }
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn every_decision_reads_back_as_written() {
        for decision in every_decision() {
            let text = serde_json::to_string(&decision).unwrap();
            let read: AuditDecision = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{decision:?} wrote {text}, unreadable: {err}"));
            assert_eq!(read, decision, "written as {text}");
        }
        assert!(serde_json::from_str::<AuditDecision>(r#""maybe""#).is_err());
    }

    #[test]
    fn every_record_reads_back_from_the_log_as_written() {
        let mut records = vec![AuditRecord::default(), AuditRecord::new(AuditEvent::Exit)];
        for event in every_event() {
            records.push(AuditRecord::new(event));
        }
        for (i, decision) in every_decision().into_iter().enumerate() {
            let channel = [Channel::Socket, Channel::Token][i % 2];
            records.push(full_record(AuditEvent::Approve, decision, channel));
        }
        assert_eq!(written_and_read(&records), records);
    }
}
