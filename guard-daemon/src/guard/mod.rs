//! The daemon's state machine: kernel events -> session table -> policy ->
//! hold registry -> approvals -> release or kill -> audit log. All methods are
//! synchronous and short; callers hold the one lock around `Guard`.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use finish::{lsm_call_ending, stop_ending, Ending, Held, Outcome};
use guard_common::{Event, EventKind, SessionEntry, SESSION_DETECTED, SESSION_LAUNCHED};

use crate::{
    audit::{AuditEvent, AuditLog, AuditRecord},
    escape::{display_argv, escape_bytes},
    holds::{format_duration, Hold, HoldRegistry},
    kernel::{Continuation, Kernel, ProgramSets},
    notice,
    policy::{Action, CommandContext, Explanation, LocalAuth, OnTimeout, Policy},
    process::{Pidfd, ProcessHandle, Recorded},
    procfs,
    protected::OwnFiles,
    protocol::{GateStats, HoldState, PolicySummary, Response, SessionView, StatusView},
    state::{SavedSession, SavedState, StateStore},
    stats::Stats,
    tracer::Tracer,
};

/// A process stopped by the kernel is raised from the HELD map when its ring
/// buffer event has not arrived after this long.
const RECOVERY_GRACE: Duration = Duration::from_secs(1);
/// Environment variables that say where a command acts; recorded with holds.
const CONTEXT_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_REGION",
    "KUBECONFIG",
    "CLOUDSDK_CORE_PROJECT",
    "TF_WORKSPACE",
];

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
    stats: Stats,
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
    lsm_gate: gate_lsm::LsmGate,
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

mod events;
pub(crate) mod finish;
mod gate;
mod gate_lsm;
mod gate_report;
mod outside;
mod pin_layout;
mod pin_watch;
mod policy_lock;
mod policy_writes;
mod requests;

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
            stats: Stats::default(),
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

    /// Re-adopts the sessions and holds of a previous run. A held process is
    /// re-adopted only if it is the same process (pid and start time).
    fn restore(&mut self, saved: SavedState) {
        self.rehold_after_layout_change(&saved);
        for session in saved.sessions {
            if session.listener && procfs::stat(session.id).is_ok() {
                self.audit_lost_listener(session.id);
            }
            self.sessions.insert(
                session.id,
                Session {
                    id: session.id,
                    agent: session.agent,
                    origin: session.origin,
                    uid: session.uid,
                    // Its listener died with the previous guardd.
                    listener: false,
                },
            );
        }
        let now = Instant::now();
        let now_unix = unix_now();
        for entry in saved.holds {
            let process = ProcessHandle::open(entry.pid)
                .ok()
                .filter(|p| p.start_time == entry.start_time && p.is_alive());
            let (Some(process), Ok(stat)) = (process, procfs::stat(entry.pid)) else {
                self.audit_ended_while_down(&entry, now_unix);
                continue;
            };
            let request = Some((entry.id.as_str(), entry.rule.as_str()));
            match Recorded::of(&stat, self.kernel.continued_by(entry.pid)) {
                Recorded::Held => {}
                Recorded::LetGo => {
                    // Approved, then guardd ended before it saved the state.
                    self.leave_let_go(entry.pid, entry.session, request);
                    continue;
                }
                Recorded::Continued(continuation) => {
                    self.end_continued(&process, entry.session, continuation, request);
                    continue;
                }
            }
            let comm = stat.comm;
            let exe = procfs::link(entry.pid, "exe");
            let (program, argv) = procfs::judged_command(
                &comm,
                &exe,
                &procfs::cmdline(entry.pid).unwrap_or_default(),
            );
            let hold = Hold {
                id: entry.id.clone(),
                session: entry.session,
                agent: self
                    .sessions
                    .get(&entry.session)
                    .and_then(|s| s.agent.clone()),
                uid: procfs::uid(entry.pid).unwrap_or(u32::MAX),
                program,
                cwd: procfs::link(entry.pid, "cwd"),
                exe,
                argv,
                rule: entry.rule,
                approvals_needed: entry.approvals_needed,
                approved_by: entry.approved_by,
                approvers: entry.approvers,
                self_approval: entry.self_approval,
                tokens_seen: Vec::new(),
                on_timeout: entry.on_timeout,
                traced: false,
                protection: "ptrace-stop: only guardd can release it".into(),
                ancestry: entry.ancestry,
                context: context_of(entry.pid),
                why: entry.why,
                created: now - Duration::from_secs(now_unix.saturating_sub(entry.created_unix)),
                deadline: now + Duration::from_secs(entry.deadline_unix.saturating_sub(now_unix)),
                created_unix: entry.created_unix,
                deadline_unix: entry.deadline_unix,
                stderr: notice::stderr_of(&process),
                gate: None,
                process,
            };
            let mut record = self.hold_record(&hold, AuditEvent::Readopt);
            record.decision = Some("hold".into());
            self.protect_and_insert(hold, record);
        }
        self.persist();
    }

    /// Writes the state file when the holds or sessions changed.
    pub fn persist(&mut self) {
        let state = SavedState {
            // A held system call cannot outlive guardd: its listener closes with it.
            holds: self
                .holds
                .iter()
                .filter(|h| h.gate.is_none())
                .map(Hold::saved)
                .collect(),
            sessions: self
                .sessions
                .values()
                .map(|s| SavedSession {
                    id: s.id,
                    agent: s.agent.clone(),
                    origin: s.origin.clone(),
                    uid: s.uid,
                    listener: s.listener,
                })
                .collect(),
            id_prefix: self.holds.prefix().to_string(),
            next_id: self.holds.next_number(),
            ..crate::state::new_state(String::new())
        };
        if self.saved.as_ref() == Some(&state) {
            return;
        }
        match self.state.save(&state) {
            Ok(()) => self.saved = Some(state),
            Err(err) => {
                // The holds stand; only a restart would not find them (the kernel map still would).
                tracing::error!("cannot write the state file: {err}");
            }
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
                    record.decision = Some(format!("loaded {}", policy.version));
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
            record.decision = Some("refused".into());
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

    pub fn status(&self) -> Response {
        Response::Status(Box::new(StatusView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            policy: PolicySummary {
                source: self.policy.source.clone(),
                version: self.policy.version.clone(),
                last_reload_error: self.last_reload_error.clone(),
                rules: self.policy.rules.len(),
                watched_programs: self.policy.watched_programs().len(),
                agents: self.policy.agents.programs.clone(),
                local_auth: self.policy.approvals.local_auth,
            },
            sessions: self
                .sessions
                .values()
                .map(|s| SessionView {
                    id: s.id,
                    agent: s.agent.clone(),
                    origin: s.origin.clone(),
                    uid: s.uid,
                })
                .collect(),
            pending: self.holds.len(),
            mechanisms: mechanisms(&self.kernel, &self.policy)
                .into_iter()
                .chain(self.own_mechanisms())
                .chain([self.pin_layout_status()])
                .collect(),
            programs: self.kernel.loaded_programs().to_vec(),
            stats: GateStats {
                events_lost: self.kernel.events_lost(),
                stops_killed: self.kernel.stops_killed(),
                ..self.stats.view()
            },
        }))
    }

    // ---- records ------------------------------------------------------------

    fn record_for(
        &self,
        process: &ProcessHandle,
        session: u32,
        argv: &[Vec<u8>],
        exe: &str,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(AuditEvent::Hold);
        record.pid = Some(process.pid);
        record.session = Some(session);
        record.agent = self.sessions.get(&session).and_then(|s| s.agent.clone());
        record.uid = procfs::uid(process.pid).ok();
        record.cwd = Some(procfs::link(process.pid, "cwd"));
        record.exe = Some(exe.to_string());
        record.argv = argv.iter().map(|a| escape_bytes(a)).collect();
        record.ancestry = ancestry(process.pid);
        record.context = context_of(process.pid);
        record
    }

    fn hold_record(&self, hold: &Hold, event: AuditEvent) -> AuditRecord {
        let mut record = AuditRecord::new(event);
        record.request_id = Some(hold.id.clone());
        record.session = Some(hold.session);
        record.agent = hold.agent.clone();
        record.pid = Some(hold.process.pid);
        record.uid = Some(hold.uid);
        record.cwd = Some(hold.cwd.clone());
        record.exe = Some(hold.exe.clone());
        record.argv = hold.argv.iter().map(|a| escape_bytes(a)).collect();
        record.rule = Some(hold.rule.clone());
        record.ancestry = hold.ancestry.clone();
        record.operation = hold.gate.as_ref().map(|g| g.operation.clone());
        record.context = hold.context.clone();
        record.why = hold.why.clone();
        record
    }
}

/// Default-pack rules that keep sessions from disabling agent-guard.
const SELF_PROTECTION_RULES: &[&str] = &[
    "guard-stop-service",
    "guard-signal",
    "guard-files",
    "guard-bpftool",
];

fn mechanisms(kernel: &Kernel, policy: &Policy) -> Vec<(String, String)> {
    let rules: Vec<&str> = SELF_PROTECTION_RULES
        .iter()
        .copied()
        .filter(|id| policy.rule(id).is_some())
        .collect();
    let rules = if rules.is_empty() {
        "no guard-* rules in the loaded policy".to_string()
    } else {
        format!("policy rules {}", rules.join(", "))
    };
    let (lsm_self, lsm_release) = match kernel.lsm_missing() {
        None => (
            "BPF LSM: session processes may not signal or trace guardd, use bpf(2), or write, truncate, unlink or rename agent-guard's files".to_string(),
            "BPF LSM task_kill: only guardd may SIGCONT a held process".to_string(),
        ),
        Some(why) => (
            format!("BPF LSM (task_kill, ptrace, bpf, file_open, path_*): not here: {why}"),
            format!("BPF LSM task_kill: not here: {why}"),
        ),
    };
    let program_recognition = if kernel.recognises_exe_names() {
        "comm and the executed file's name (BTF offsets): symlinks to watched programs are stopped"
    } else {
        "none beyond comm: no kernel BTF, a symlink to a watched program under another name is not stopped"
    };
    let own_paths = policy
        .protections
        .iter()
        .find(|p| p.id == crate::policy::protect::SELF_ID)
        .map_or_else(
            || "none".to_string(),
            |p| format!("{:?} {}", p.action, p.paths.join(" ")),
        );
    [
        ("program_recognition", program_recognition.to_string()),
        ("exec_hold", "tracepoint sched/sched_process_exec + SIGSTOP before the first instruction".into()),
        ("session_tracking", "tracepoints sched/sched_process_fork and sched/sched_process_exit".into()),
        ("agent_detection", "exec of agent programs (kernel), interpreter argv (daemon), /proc scan at start".into()),
        ("hold_release_protection", format!("ptrace-stop (PTRACE_SEIZE + PTRACE_INTERRUPT): SIGCONT from others does not wake a held process; {lsm_release}")),
        ("self_protection", format!(
            "{rules}; {lsm_self}; [[protect]] {} (built in, by the syscall gate below): {own_paths}",
            crate::policy::protect::SELF_ID
        )),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(syscall_gate(kernel, policy))
    .chain(std::iter::once(session_escape(kernel, policy)))
    .collect()
}

/// `[defaults] session_escape`: how session processes are kept from using
/// processes outside the session.
fn session_escape(kernel: &Kernel, policy: &Policy) -> (String, String) {
    let how = match (policy.session_escape, kernel.lsm_missing()) {
        (crate::policy::EscapeMode::Allow, _) => {
            "off: [defaults] session_escape = \"allow\"".to_string()
        }
        (crate::policy::EscapeMode::Deny, Some(why)) => {
            format!("{SESSION_ESCAPE_SECCOMP}; not here: detected sessions (no seccomp filter; the BPF LSM does not run: {why})")
        }
        (crate::policy::EscapeMode::Deny, None) => format!(
            "{SESSION_ESCAPE_SECCOMP}; BPF LSM in every session, launched or detected: \
             ptrace_access_check makes attaching to, or reading or writing the memory of, a \
             process outside the session fail with EPERM, and unix_stream_connect holds a \
             detected session's connects to those sockets"
        ),
    };
    ("session_escape".into(), how)
}

/// What `guardctl status` says of the escape checks where they are on.
const SESSION_ESCAPE_SECCOMP: &str = "seccomp in `guardctl run` sessions: ptrace attach/seize, \
     process_vm_writev and pidfd_getfd on processes outside the session fail with EPERM; connects \
     to tmux, screen, systemd manager and D-Bus session bus sockets served from outside are held";

/// Per gated operation: how it is held, where.
fn syscall_gate(kernel: &Kernel, policy: &Policy) -> Vec<(String, String)> {
    use crate::policy::{protect::Operation, GateMode};
    Operation::ALL
        .iter()
        .map(|operation| {
            let protected = policy
                .protections
                .iter()
                .filter(|p| p.operations.contains(operation))
                .count();
            let report = match (kernel.report_missing(), kernel.report_failed()) {
                (Some(why), _) => format!("not reported either ({why})"),
                (None, Some(why)) => format!(
                    "NOT WORKING: report only, but attaching its tracepoints failed ({why}); \
                     retried every few seconds, each failure audited"
                ),
                (None, None) => "report only (tracepoints syscalls/sys_enter_*, attached while a session \
                         runs: the call runs, an audit record says so)"
                    .to_string(),
            };
            let how = match (policy.syscall_gate, kernel.lsm_missing()) {
                (GateMode::Off, _) => {
                    "off: [defaults] syscall_gate = false (see docs/syscall-gate.md)".to_string()
                }
                _ if protected == 0 => "none: no [[protect]] entry covers it".to_string(),
                (_, None) => format!(
                    "BPF LSM in every session, launched or detected ({protected} [[protect]] entries); \
                     a hold stops the process and its call restarts after the decision"
                ),
                (GateMode::On, Some(why)) => format!(
                    "seccomp user notification in `guardctl run` sessions ({protected} [[protect]] entries); \
                     other sessions: {report} (no BPF LSM: {why})"
                ),
                (_, Some(why)) => format!(
                    "{report} in every session: the BPF LSM does not run here ({why}); \
                     [defaults] syscall_gate = true holds the calls of `guardctl run` sessions with seccomp"
                ),
            };
            (format!("syscall_gate.{}", operation.name()), how)
        })
        .collect()
}

fn identity(peer: Peer) -> String {
    let name = nix::unistd::User::from_uid(peer.uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    match (name, peer.pid) {
        (Some(name), Some(pid)) => format!("{name} (uid {}, pid {pid})", peer.uid),
        (None, Some(pid)) => format!("uid {} (pid {pid})", peer.uid),
        (_, None) => format!("uid {}", peer.uid),
    }
}

/// `NAME=value` of the CONTEXT_ENV variables the process has.
fn context_of(pid: u32) -> Vec<String> {
    procfs::environ(pid, CONTEXT_ENV)
        .iter()
        .map(|(k, v)| format!("{k}={}", escape_bytes(v.as_bytes())))
        .collect()
}

fn ancestry(pid: u32) -> Vec<String> {
    procfs::ancestry(pid)
        .into_iter()
        .map(|(pid, comm)| format!("{pid}:{}", escape_bytes(comm.as_bytes())))
        .collect()
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
