//! The registry of held requests: one per stopped process waiting for a human.
use std::{
    collections::BTreeMap,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use crate::{
    audit::{AuditEvent, AuditRecord},
    escape::escape_bytes,
    policy::HoldTerms,
    process::ProcessHandle,
    protocol::{HoldState, HoldView},
    request::Request,
    state::{SavedApiCall, SavedHold},
};

#[derive(Debug)]
pub struct Hold {
    pub id: String,
    pub process: ProcessHandle,
    /// What the process runs, where, for whom: read once when it was held.
    pub request: Request,
    pub rule: String,
    /// What the rule asks: approvals, approvers, timeout.
    pub terms: HoldTerms,
    /// Why the rule matched.
    pub why: Vec<String>,
    /// Approver identities so far (`uid:N`, `key:PRINCIPAL`): each counts once.
    pub approved_by: Vec<String>,
    /// Signed tokens already used on this request (replays are refused).
    pub tokens_seen: Vec<String>,
    /// Whether guardd's tracer thread holds the process in ptrace-stop.
    pub traced: bool,
    /// The frozen cgroup leaf it is kept in (where the freezer is).
    pub frozen: Option<crate::freezer::Frozen>,
    /// How the hold is kept, for status and audit.
    pub protection: String,
    pub created: Instant,
    pub deadline: Instant,
    /// The same two as seconds since the Unix epoch, for the state file.
    pub created_unix: u64,
    pub deadline_unix: u64,
    /// The process's stderr, when it is a pipe or terminal, for the notices.
    pub stderr: Option<OwnedFd>,
    /// A held system call (the syscall gate) instead of a stopped exec.
    pub gate: Option<GateHold>,
    /// A held API call (the API-client gate) instead of a stopped exec.
    pub api: Option<ApiStopped>,
}

/// A client call an API probe stopped: the thread, and its registers at the
/// function's entry, to fail the call if it is denied.
#[derive(Debug, Clone)]
pub struct ApiStopped {
    pub tid: u32,
    pub entry: guard_common::ApiHeldEntry,
    /// Whether guardd's tracer holds the thread in ptrace-stop.
    pub traced: bool,
    /// Whether it was raised as a hold (a person decides).
    pub held: bool,
    /// `POST ec2 us-east-1 TerminateInstances`.
    pub call: String,
    /// Names its identical retries: (session, call).
    pub retry_key: (u32, String),
}

/// Calls of one process on one protected tree, waiting in the kernel for one decision.
#[derive(Debug)]
pub struct GateHold {
    pub waiter: GateWaiter,
    pub group: GateGroup,
    /// The first call, as `unlink /home/dev/.ssh/id_ed25519`.
    pub operation: String,
}

/// How the held calls wait, and so how the decision reaches them.
#[derive(Debug)]
pub enum GateWaiter {
    /// In seccomp user notification: the notification ids to answer.
    Seccomp {
        listener: std::sync::Arc<crate::seccomp::Listener>,
        waiting: Vec<u64>,
    },
    /// Stopped by the BPF LSM gate: the decision goes into the kernel's
    /// decision map for this root, then the process is continued and its
    /// call restarts.
    Lsm {
        root: guard_common::FileKey,
        /// The process's `task_struct.start_time`, as the kernel recorded it.
        start_ns: u64,
    },
}

/// One process (pid and start time) on one protected root of one protection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GateGroup {
    pub pid: u32,
    pub start_time: u64,
    pub protection: String,
    pub root: std::path::PathBuf,
}

impl Hold {
    pub fn command(&self) -> String {
        self.request.command()
    }

    /// The held call (system call or API call), when it is not an exec.
    pub fn operation(&self) -> Option<String> {
        match (&self.gate, &self.api) {
            (Some(gate), _) => Some(gate.operation.clone()),
            (None, Some(api)) => Some(api.call.clone()),
            (None, None) => None,
        }
    }

    /// The record of this hold: its request, id, rule and operation.
    pub fn record(&self, event: AuditEvent) -> AuditRecord {
        let mut record = AuditRecord::from(&self.request);
        record.event = Some(event);
        record.request_id = Some(self.id.clone());
        record.pid = Some(self.process.pid);
        record.rule = Some(self.rule.clone());
        record.operation = self.operation();
        record.why = self.why.clone();
        record
    }

    /// As `guardctl pending` shows it; `host` names this host (see `HoldView::host`).
    pub fn view(&self, now: Instant, host: &str) -> HoldView {
        let request = &self.request;
        HoldView {
            id: self.id.clone(),
            host: host.to_string(),
            pid: self.process.pid,
            session: request.session,
            agent: request.agent.clone(),
            uid: request.uid.unwrap_or(u32::MAX),
            program: request.program.clone(),
            argv: request.argv.iter().map(|arg| escape_bytes(arg)).collect(),
            cwd: request.cwd.clone(),
            exe: request.exe.clone(),
            rule: self.rule.clone(),
            state: HoldState::Held,
            approvals_needed: self.terms.approvals_needed(),
            protection: self.protection.clone(),
            approved_by: self.approved_by.clone(),
            approvers: self.terms.approvers.clone(),
            also_approvers: self.terms.also_approvers.clone(),
            self_approval: self.terms.self_approval,
            operation: self.operation(),
            ancestry: request.ancestry.clone(),
            context: request.context.clone(),
            why: self.why.clone(),
            held_secs: now.saturating_duration_since(self.created).as_secs(),
            expires_in_secs: self.deadline.saturating_duration_since(now).as_secs(),
        }
    }
}

/// What the state file keeps of a hold: enough to take it over after a
/// restart, with the request read again from the same process.
impl From<&Hold> for SavedHold {
    fn from(hold: &Hold) -> Self {
        SavedHold {
            id: hold.id.clone(),
            pid: hold.process.pid,
            start_time: hold.process.start_time,
            session: hold.request.session,
            rule: hold.rule.clone(),
            terms: hold.terms.clone(),
            approved_by: hold.approved_by.clone(),
            created_unix: hold.created_unix,
            deadline_unix: hold.deadline_unix,
            ancestry: hold.request.ancestry.clone(),
            why: hold.why.clone(),
            frozen: hold.frozen.clone(),
            api: hold.api.as_ref().map(|api| SavedApiCall {
                tid: api.tid,
                stop_ktime_ns: api.entry.ktime_ns,
                call: api.call.clone(),
            }),
        }
    }
}

pub struct HoldRegistry {
    holds: BTreeMap<String, Hold>,
    prefix: String,
    next: u64,
}

impl HoldRegistry {
    /// `prefix` keeps ids from different daemons apart; `next` continues a
    /// restarted daemon's numbering.
    pub fn new(prefix: String, next: u64) -> Self {
        Self {
            holds: BTreeMap::new(),
            prefix,
            next,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn next_number(&self) -> u64 {
        self.next
    }

    pub fn iter(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    pub fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        id
    }

    pub fn insert(&mut self, hold: Hold) {
        self.holds.insert(hold.id.clone(), hold);
    }

    pub fn get(&self, id: &str) -> Option<&Hold> {
        self.holds.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Hold> {
        self.holds.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Hold> {
        self.holds.remove(id)
    }

    pub fn holds_process(&self, pid: u32, start_time: u64) -> bool {
        self.holds
            .values()
            .any(|hold| hold.process.pid == pid && hold.process.start_time == start_time)
    }

    /// Whether a hold was raised on the API stop of `tid` made at `ktime_ns`.
    pub fn holds_api_stop(&self, tid: u32, ktime_ns: u64) -> bool {
        self.holds.values().any(|hold| {
            hold.api
                .as_ref()
                .is_some_and(|api| api.tid == tid && api.entry.ktime_ns == ktime_ns)
        })
    }

    pub fn has_pid(&self, pid: u32) -> bool {
        self.holds.values().any(|hold| hold.process.pid == pid)
    }

    pub fn id_of_pid(&self, pid: u32) -> Option<String> {
        self.holds
            .values()
            .find(|h| h.process.pid == pid)
            .map(|h| h.id.clone())
    }

    /// Ids whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.holds
            .values()
            .filter(|hold| hold.deadline <= now)
            .map(|hold| hold.id.clone())
            .collect()
    }

    /// Ids whose process is gone.
    pub fn exited(&self) -> Vec<String> {
        self.holds
            .values()
            .filter(|hold| !hold.process.is_alive())
            .map(|hold| hold.id.clone())
            .collect()
    }

    pub fn views(&self, now: Instant, host: &str) -> Vec<HoldView> {
        self.holds
            .values()
            .map(|hold| hold.view(now, host))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hold on `process` with placeholder terms, for unit tests.
    pub(crate) fn hold_of(process: ProcessHandle) -> Hold {
        let now = Instant::now();
        Hold {
            id: "h-test".into(),
            request: Request {
                pid: process.pid,
                session: 1,
                uid: Some(0),
                program: "terraform".into(),
                argv: vec![b"terraform".to_vec(), b"destroy".to_vec()],
                cwd: "/".into(),
                exe: "/usr/bin/terraform".into(),
                ..Request::default()
            },
            process,
            rule: "rule-1".into(),
            terms: HoldTerms::gate(1, Duration::ZERO),
            why: Vec::new(),
            approved_by: Vec::new(),
            tokens_seen: Vec::new(),
            traced: false,
            frozen: None,
            protection: String::new(),
            created: now,
            deadline: now,
            created_unix: 0,
            deadline_unix: 0,
            stderr: None,
            gate: None,
            api: None,
        }
    }
}
