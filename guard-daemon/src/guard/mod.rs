//! The daemon's state machine: kernel events -> session table -> policy ->
//! hold registry -> approvals -> release or kill -> audit log. All methods are
//! synchronous and short; callers hold the one lock around `Guard`.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use finish::{lsm_call_ending, stop_ending, Ending, Held, Outcome};
use guard_common::{Event, EventKind, SessionEntry, SESSION_DETECTED, SESSION_LAUNCHED};
use record::identity;

use crate::{
    audit::{AuditDecision, AuditEvent, AuditLog, AuditRecord, Channel},
    escape::escape_bytes,
    holds::{format_duration, Hold, HoldRegistry},
    kernel::{Continuation, Kernel, ProgramSets},
    notice,
    policy::{Action, CommandContext, Explanation, LocalAuth, OnTimeout, Policy},
    process::{Pidfd, ProcessHandle, Recorded},
    procfs,
    protected::OwnFiles,
    protocol::{GateStats, HoldState, PolicySummary, Response, SessionView, StatusView},
    request::Request,
    state::{SavedSession, SavedState, StateStore},
    stats::ExecStats,
    tracer::Tracer,
};

/// A process stopped by the kernel is raised from the HELD map when its ring
/// buffer event has not arrived after this long.
const RECOVERY_GRACE: Duration = Duration::from_secs(1);
#[derive(Debug, Clone)]
pub struct Session {
    pub id: u32,
    pub agent: Option<String>,
    pub origin: String,
    pub uid: u32,
    /// Whether its launcher handed this guardd a seccomp listener.
    pub listener: bool,
}

/// What a local approver must still do to prove a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reauth {
    /// The approver's uid runs no agent session: its approval counts as is.
    NotNeeded,
    /// PAM re-authentication of `user` through `service`.
    Pam {
        service: String,
        user: String,
    },
    Polkit,
    /// Let through, with `why` in the audit record (local_auth opted out,
    /// or the host cannot authenticate).
    Unauthenticated(String),
    /// Refused: the policy wants an authentication this host cannot run.
    Refused(String),
}

/// How approvers whose uid runs agent sessions prove a person on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SameUidAuth {
    Pam(String),
    Polkit,
    /// The policy asks for one this host cannot run: approvals are refused.
    Unavailable(String),
    Unauthenticated(String),
}

impl SameUidAuth {
    /// The `approval_authentication` line of `guardctl status`.
    fn describe(&self) -> String {
        match self {
            Self::Pam(service) => format!(
                "PAM (service {service}, never cached): a local approver whose uid runs an agent \
                 session re-authenticates for every approval; other uids and signed tokens need none"
            ),
            Self::Polkit => "polkit (org.agent-guard.approve): a local approver whose uid runs an \
                 agent session authenticates to polkit"
                .into(),
            Self::Unavailable(why) => {
                format!("refused: same-uid local approvals are refused ({why}); use signed tokens or another uid")
            }
            Self::Unauthenticated(why) => format!(
                "none: same-uid approvals are UNAUTHENTICATED ({why}): an agent can approve its own \
                 holds through the user's other processes (tmux, a ptraced shell)"
            ),
        }
    }

    /// What a held notice adds, if anything.
    fn notice_warning(&self) -> String {
        match self {
            Self::Unauthenticated(why) => {
                format!(" Same-uid approvals here are unauthenticated ({why}).")
            }
            _ => String::new(),
        }
    }
}

/// Who sent a control request, from SO_PEERCRED.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: u32,
}

pub struct Guard {
    policy: Policy,
    tracer: Tracer,
    config: Option<std::path::PathBuf>,
    last_reload_error: Option<String>,
    /// agent-guard's own files, kept from sessions by the LSM where it runs.
    own_files: OwnFiles,
    /// The config file and policy.d, resolved (None: the embedded policy).
    policy_paths: Option<crate::protected::PolicyPaths>,
    /// Policy files session processes changed where the gate only reports.
    policy_writes: Vec<policy_writes::PolicyWrite>,
    kernel: Kernel,
    sessions: BTreeMap<u32, Session>,
    holds: HoldRegistry,
    audit: AuditLog,
    exec_stats: ExecStats,
    state: StateStore,
    /// What the state file holds, to write it only on change.
    saved: Option<SavedState>,
    /// `guardd --protect` paths, added to every policy loaded.
    cli_protections: Vec<std::path::PathBuf>,
    /// `[[protect]]` with `~` expanded, per session owner uid.
    protected_sets: std::collections::HashMap<u32, crate::policy::protect::ProtectedSet>,
    /// Decisions on gated trees, for the rest of the process's calls there.
    gate_decisions: std::collections::HashMap<crate::holds::GateGroup, bool>,
    /// The BPF LSM gate's roots and decisions.
    lsm_gate: syscall_gate::LsmGate,
    /// Sessions whose calls the seccomp gate sees.
    seccomp_sessions: std::collections::HashSet<u32>,
    /// When the kernel's HELD map is next read for stops without an event.
    held_scan: HeldScan,
    /// The kernel's count of stops it killed for lack of room, as last reported.
    stops_killed_seen: u64,
    /// When this guardd started (CLOCK_MONOTONIC ns): stops the kernel
    /// recorded before it may have been let go by an earlier guardd.
    started_ns: u64,
    /// The policy's `[notify]` settings, followed by `notify::run`.
    notify: tokio::sync::watch::Sender<crate::policy::notify::NotifySettings>,
    /// When the pins were last checked, and how often they had to be put back.
    pins_checked: Option<Instant>,
    pin_repairs: u64,
    /// The fanotify guard of the policy files, where the LSM does not run.
    policy_files: policy_lock::PolicyFiles,
}

/// Reading the HELD map costs a syscall per entry, and a hash map read while
/// the kernel deletes from it starts over: so it is read when events were
/// lost, while a stop waits out its grace, and every few seconds otherwise.
#[derive(Default)]
struct HeldScan {
    lost_seen: u64,
    next: Option<Instant>,
    again: bool,
}

impl HeldScan {
    const EVERY: Duration = Duration::from_secs(5);

    fn due(&self, lost: u64, now: Instant) -> bool {
        self.again || lost != self.lost_seen || self.next.is_none_or(|next| now >= next)
    }

    fn done(&mut self, lost: u64, now: Instant, waiting: bool) {
        self.lost_seen = lost;
        self.next = Some(now + Self::EVERY);
        self.again = waiting;
    }
}

/// What the kernel said about one stopped process.
struct Stop<'a> {
    pid: u32,
    session: u32,
    comm: &'a str,
    stopped_at_ns: Option<u64>,
    /// When the kernel's HELD map recorded the stop (a SIGCONT mark names it).
    recorded_ns: Option<u64>,
    stop_failed: bool,
}

mod approvals;
mod events;
mod exec_gate;
pub(crate) mod finish;
mod outside;
mod pin_layout;
mod pin_watch;
mod policy_lock;
mod policy_writes;
mod record;
mod requests;
mod restore;
mod sessions;
mod status;
mod syscall_gate;

impl Guard {
    pub fn new(
        policy: Policy,
        own_files: OwnFiles,
        kernel: Kernel,
        tracer: Tracer,
        audit: AuditLog,
        state: StateStore,
    ) -> Self {
        let saved = state.load().unwrap_or_else(|err| {
            // The stopped processes stay stopped: the kernel's HELD map raises them anew.
            tracing::error!("state unreadable, starting without it: {err}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.reason = Some(format!(
                "state unreadable: {err}; held processes are raised again from the kernel map"
            ));
            audit.write(&record);
            None
        });
        let fresh = || crate::state::new_state(format!("{:04x}", (monotonic_ns() / 1000) as u16));
        let restored = saved.clone().unwrap_or_else(fresh);
        let mut guard = Self {
            notify: tokio::sync::watch::Sender::new(policy.notify.clone()),
            pins_checked: None,
            pin_repairs: 0,
            policy_files: Default::default(),
            protected_sets: Default::default(),
            cli_protections: Vec::new(),
            gate_decisions: Default::default(),
            lsm_gate: Default::default(),
            seccomp_sessions: Default::default(),
            held_scan: HeldScan::default(),
            stops_killed_seen: 0,
            started_ns: monotonic_ns(),
            policy,
            tracer,
            config: own_files.config.clone(),
            policy_paths: own_files.policy_paths(),
            policy_writes: Vec::new(),
            own_files,
            last_reload_error: None,
            kernel,
            sessions: BTreeMap::new(),
            holds: HoldRegistry::new(restored.id_prefix.clone(), restored.next_id),
            audit,
            exec_stats: ExecStats::default(),
            state,
            saved,
        };
        guard.restore(restored);
        guard.protect_own_files();
        guard.sync_gate_roots();
        guard.set_report_calls();
        guard.sync_settings();
        guard.start_policy_lock();
        guard
    }

    /// Gives the kernel side the policy's settings it obeys itself.
    fn sync_settings(&mut self) {
        let mut bits = 0;
        if self.policy.session_escape == crate::policy::EscapeMode::Deny {
            bits |= guard_common::SETTING_ESCAPE_DENY;
        }
        if let Err(err) = self.kernel.set_settings(bits) {
            tracing::error!("kernel settings: {err}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.reason = Some(format!("kernel settings map: {err}"));
            self.audit.write(&record);
        }
    }

    /// Gives the kernel the current inodes of agent-guard's own files.
    fn protect_own_files(&mut self) {
        if self.kernel.lsm_missing().is_some() {
            return;
        }
        if let Err(err) = self.kernel.set_protected(&self.own_files.keys()) {
            tracing::error!("agent-guard's files are not protected from sessions: {err}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.reason = Some(format!("protected-file map: {err}"));
            self.audit.write(&record);
        }
    }

    /// Loads the policy files again. A policy that fails to load is refused
    /// and the one in force stays; holds already raised keep their rule.
    pub fn reload(&mut self, reason: &str) {
        let Some(config) = self.config.clone() else {
            tracing::info!("{reason}: running on the embedded default policy, nothing to reload");
            return;
        };
        let standing = self.standing_policy_writes();
        if !standing.is_empty() {
            return self.refuse_reload(reason, &standing);
        }
        let mut record = AuditRecord::new(AuditEvent::PolicyReload);
        record.reason = Some(reason.to_string());
        match Policy::load(&config)
            .and_then(|p| p.with_protected_paths(&self.cli_protections))
            .and_then(|p| p.with_self_protection(&self.own_files.gate_paths()))
        {
            Ok(policy) => match self.kernel.set_programs(&ProgramSets::of(&policy)) {
                Ok(()) => {
                    tracing::info!(
                        version = policy.version,
                        rules = policy.rules.len(),
                        "{reason}: policy reloaded"
                    );
                    record.decision = Some(AuditDecision::Loaded(policy.version.clone()));
                    self.notify.send_replace(policy.notify.clone());
                    self.protected_sets.clear();
                    self.policy = policy;
                    self.sync_gate_roots();
                    self.set_report_calls();
                    self.sync_settings();
                    self.mark_policy_files();
                    self.last_reload_error = None;
                }
                Err(err) => {
                    // Put the old program set back: the kernel must match the policy in force.
                    let _ = self.kernel.set_programs(&ProgramSets::of(&self.policy));
                    self.last_reload_error = Some(format!("kernel program map: {err}"));
                }
            },
            Err(err) => {
                tracing::error!("{reason}: new policy refused, the old one stays in force: {err}");
                self.last_reload_error = Some(err.to_string());
            }
        }
        if let Some(err) = &self.last_reload_error {
            record.decision = Some(AuditDecision::Refused);
            record.reason = Some(format!("{reason}: {err}"));
        }
        self.audit.write(&record);
        // An editor may have replaced a policy file with a new inode.
        self.protect_own_files();
    }

    pub fn set_cli_protections(&mut self, paths: Vec<std::path::PathBuf>) {
        self.cli_protections = paths;
    }

    pub fn subscribe_audit(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.audit.subscribe()
    }

    /// What `notify::run` follows: the audit records and the `[notify]` settings.
    pub fn notifications(
        &self,
    ) -> (
        tokio::sync::broadcast::Sender<serde_json::Value>,
        tokio::sync::watch::Receiver<crate::policy::notify::NotifySettings>,
    ) {
        (self.audit.broadcaster(), self.notify.subscribe())
    }

    // ---- records ------------------------------------------------------------
}

fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn error(message: &str) -> Response {
    Response::Error {
        message: message.to_string(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
