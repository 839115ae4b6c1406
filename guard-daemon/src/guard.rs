//! The daemon's state machine: kernel events -> session table -> policy ->
//! hold registry -> approvals -> release or kill -> audit log. All methods are
//! synchronous and short; callers hold the one lock around `Guard`.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use guard_common::{Event, EventKind, SessionEntry, SESSION_DETECTED, SESSION_LAUNCHED};

use crate::{
    audit::{AuditEvent, AuditLog, AuditRecord},
    escape::{display_argv, escape_bytes},
    holds::{format_duration, Hold, HoldRegistry},
    kernel::{Kernel, ProgramSets},
    notice,
    policy::{Action, CommandContext, Explanation, OnTimeout, Policy},
    process::ProcessHandle,
    procfs,
    protocol::{HoldState, PolicySummary, Response, SessionView, StatusView},
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
    kernel: Kernel,
    sessions: BTreeMap<u32, Session>,
    holds: HoldRegistry,
    audit: AuditLog,
    stats: Stats,
    state: StateStore,
    /// What the state file holds, to write it only on change.
    saved: Option<SavedState>,
}

/// What the kernel said about one stopped process.
struct Stop<'a> {
    pid: u32,
    session: u32,
    comm: &'a str,
    stopped_at_ns: Option<u64>,
    stop_failed: bool,
}

impl Guard {
    pub fn new(
        policy: Policy,
        config: Option<std::path::PathBuf>,
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
            policy,
            tracer,
            config,
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
        guard
    }

    /// Re-adopts the sessions and holds of a previous run. A held process is
    /// re-adopted only if it is the same process (pid and start time).
    fn restore(&mut self, saved: SavedState) {
        for session in saved.sessions {
            self.sessions.insert(
                session.id,
                Session {
                    id: session.id,
                    agent: session.agent,
                    origin: session.origin,
                    uid: session.uid,
                },
            );
        }
        let now = Instant::now();
        let now_unix = unix_now();
        for entry in saved.holds {
            let process = match ProcessHandle::open(entry.pid) {
                Ok(process) if process.start_time == entry.start_time && process.is_alive() => {
                    process
                }
                _ => {
                    let mut record = AuditRecord::new(AuditEvent::Exit);
                    record.request_id = Some(entry.id.clone());
                    record.pid = Some(entry.pid);
                    record.rule = Some(entry.rule.clone());
                    record.decision = Some("exited".into());
                    record.reason = Some("the held process ended while guardd was down".into());
                    self.audit.write(&record);
                    continue;
                }
            };
            let comm = procfs::stat(entry.pid).map(|s| s.comm).unwrap_or_default();
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
                on_timeout: entry.on_timeout,
                traced: false,
                protection: "ptrace-stop: only guardd can release it".into(),
                ancestry: entry.ancestry,
                created: now - Duration::from_secs(now_unix.saturating_sub(entry.created_unix)),
                deadline: now + Duration::from_secs(entry.deadline_unix.saturating_sub(now_unix)),
                created_unix: entry.created_unix,
                deadline_unix: entry.deadline_unix,
                stderr: notice::stderr_of(&process),
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
            holds: self.holds.iter().map(Hold::saved).collect(),
            sessions: self
                .sessions
                .values()
                .map(|s| SavedSession {
                    id: s.id,
                    agent: s.agent.clone(),
                    origin: s.origin.clone(),
                    uid: s.uid,
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

    // ---- kernel events -------------------------------------------------

    pub fn on_event(&mut self, event: &Event) {
        let comm = comm_str(&event.comm);
        match EventKind::from_u32(event.kind) {
            Some(EventKind::ExecHeld | EventKind::ExecStopFailed) => self.on_stop(Stop {
                pid: event.pid,
                session: event.session_id,
                comm: &comm,
                stopped_at_ns: Some(event.ktime_ns),
                stop_failed: event.kind == EventKind::ExecStopFailed as u32,
            }),
            Some(EventKind::SessionDetected) => {
                self.register_session(
                    event.session_id,
                    Some(comm.clone()),
                    "detected",
                    event.uid,
                    Vec::new(),
                );
            }
            Some(EventKind::InterpreterExec) => self.on_interpreter(event.pid),
            Some(EventKind::HeldExit) => {
                if let Some(id) = self.holds.id_of_pid(event.pid) {
                    self.end_exited(&id);
                }
            }
            Some(EventKind::SessionOverflow) => {
                tracing::error!(
                    pid = event.pid,
                    session = event.session_id,
                    "session map full: a process may run outside its session"
                );
                let mut record = AuditRecord::new(AuditEvent::Error);
                record.pid = Some(event.pid);
                record.session = Some(event.session_id);
                record.reason =
                    Some("session map full: a child could not be added to its session".into());
                self.audit.write(&record);
            }
            None => tracing::warn!(kind = event.kind, "unknown kernel event"),
        }
    }

    fn on_stop(&mut self, stop: Stop<'_>) {
        self.stats.counts.stops += 1;
        if let Some(at) = stop.stopped_at_ns {
            self.stats
                .event_us
                .push(monotonic_ns().saturating_sub(at) / 1000);
        }
        let process = match ProcessHandle::open(stop.pid) {
            Ok(process) => process,
            Err(_) => {
                // Gone before we looked: nothing can run.
                self.kernel.forget_held(stop.pid);
                return;
            }
        };
        if self.holds.holds_process(process.pid, process.start_time) {
            return; // already raised (event and map recovery both saw it)
        }
        let argv = match procfs::cmdline(stop.pid) {
            Ok(argv) if !argv.is_empty() => argv,
            _ => {
                // A stopped process whose command we cannot read is not run blind.
                self.fail_closed(
                    &process,
                    stop.session,
                    "could not read the command line of a stopped process",
                );
                return;
            }
        };
        let exe = procfs::link(stop.pid, "exe");
        let (program, judged) = procfs::judged_command(stop.comm, &exe, &argv);
        let words: Vec<String> = judged
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let mut env_names = self.policy.env_names();
        env_names.extend_from_slice(CONTEXT_ENV);
        let command = CommandContext {
            program: program.clone(),
            exe: Some(exe.clone()),
            argv: words,
            cwd: Some(procfs::link(stop.pid, "cwd")),
            env: procfs::environ(stop.pid, &env_names),
            uid: procfs::uid(stop.pid).ok(),
            agent: self
                .sessions
                .get(&stop.session)
                .and_then(|s| s.agent.clone()),
        };
        let explanation = self.policy.judge(&command);
        let decision_us = stop
            .stopped_at_ns
            .map(|at| monotonic_ns().saturating_sub(at) / 1000);
        if let Some(us) = decision_us {
            self.stats.decision_us.push(us);
        }
        if stop.stop_failed && explanation.action != Action::Allow {
            self.fail_closed(
                &process,
                stop.session,
                "bpf_send_signal failed: the process was not stopped",
            );
            return;
        }
        let mut record = self.record_for(&process, stop.session, &judged, &exe);
        record.rule = explanation.rule.clone();
        record.decision_us = decision_us;
        match explanation.action {
            Action::Allow | Action::Audit => {
                let _ = process.resume();
                self.kernel.forget_held(stop.pid);
                self.stats.counts.allowed += 1;
                if explanation.action == Action::Audit {
                    record.event = Some(AuditEvent::Audit);
                    record.decision = Some("allow".into());
                    self.audit.write(&record);
                }
            }
            Action::Deny => {
                self.stats.counts.denied += 1;
                let message = explanation
                    .message
                    .clone()
                    .unwrap_or_else(|| "the policy forbids it".into());
                if let Some(stderr) = notice::stderr_of(&process) {
                    notice::write(
                        &stderr,
                        &format!(
                            "agent-guard: denied `{}` (rule {}): {}. It did not run.\n",
                            display_argv(&judged),
                            explanation.rule.as_deref().unwrap_or("-"),
                            escape_bytes(message.as_bytes())
                        ),
                    );
                }
                let _ = process.kill();
                self.kernel.forget_held(stop.pid);
                record.event = Some(AuditEvent::Deny);
                record.decision = Some("deny".into());
                record.reason = Some(message);
                self.audit.write(&record);
            }
            Action::Hold => self.raise_hold(
                process,
                stop.session,
                program,
                judged,
                exe,
                &explanation,
                record,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise_hold(
        &mut self,
        process: ProcessHandle,
        session: u32,
        program: String,
        argv: Vec<Vec<u8>>,
        exe: String,
        explanation: &Explanation,
        mut record: AuditRecord,
    ) {
        self.stats.counts.held += 1;
        let now = Instant::now();
        let timeout = Duration::from_secs(explanation.timeout_secs);
        let id = self.holds.next_id();
        let stderr = notice::stderr_of(&process);
        let hold = Hold {
            id: id.clone(),
            session,
            agent: self.sessions.get(&session).and_then(|s| s.agent.clone()),
            uid: procfs::uid(process.pid).unwrap_or(u32::MAX),
            program,
            cwd: procfs::link(process.pid, "cwd"),
            exe,
            argv,
            rule: explanation.rule.clone().unwrap_or_default(),
            approvals_needed: explanation.approvals.max(1),
            traced: false,
            protection: "ptrace-stop: only guardd can release it".into(),
            approved_by: Vec::new(),
            on_timeout: explanation.on_timeout,
            ancestry: record.ancestry.clone(),
            created: now,
            deadline: now + timeout,
            created_unix: unix_now(),
            deadline_unix: unix_now() + timeout.as_secs(),
            stderr,
            process,
        };
        if let Some(stderr) = &hold.stderr {
            notice::write(
                stderr,
                &format!(
                    "agent-guard: held `{}` (request {id}, rule {}). It will not run until a human \
                     approves it from outside this agent session; without a decision it is denied \
                     in {}. Do not try to approve or bypass it.\n",
                    hold.command(),
                    hold.rule,
                    format_duration(timeout),
                ),
            );
        }
        tracing::info!(
            id,
            pid = hold.process.pid,
            rule = hold.rule,
            command = hold.command(),
            "held"
        );
        record.event = Some(AuditEvent::Hold);
        record.request_id = Some(id);
        record.decision = Some("hold".into());
        self.protect_and_insert(hold, record);
    }

    /// Takes the process into ptrace-stop, so that only guardd can end the
    /// hold, then records and registers it.
    fn protect_and_insert(&mut self, mut hold: Hold, mut record: AuditRecord) {
        match self.tracer.seize(hold.process.pid) {
            Ok(()) => hold.traced = true,
            Err(err) => {
                let why = format!(
                    "ptrace unavailable ({err}): held by SIGSTOP only, which others may undo"
                );
                tracing::warn!(id = hold.id, "{why}");
                hold.protection = why.clone();
                record.reason = Some(why);
            }
        }
        self.audit.write(&record);
        self.holds.insert(hold);
    }

    /// Kills a stopped process we cannot judge, and says so.
    fn fail_closed(&mut self, process: &ProcessHandle, session: u32, why: &str) {
        tracing::error!(pid = process.pid, "{why}: killing it");
        let _ = process.kill();
        self.kernel.forget_held(process.pid);
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.pid = Some(process.pid);
        record.session = Some(session);
        record.decision = Some("deny".into());
        record.reason = Some(format!("{why}; killed (fail closed)"));
        self.audit.write(&record);
    }

    fn on_interpreter(&mut self, pid: u32) {
        let Ok(argv) = procfs::cmdline(pid) else {
            return;
        };
        let words: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(package) = self.policy.runs_agent_package(&words) {
            self.adopt_tree(pid, package, "interpreter");
        }
    }

    /// Makes `root` and everything already below it one session.
    fn adopt_tree(&mut self, root: u32, agent: String, origin: &'static str) {
        let entry = SessionEntry {
            session_id: root,
            flags: SESSION_DETECTED,
        };
        // The root first, so that children forked from now on inherit it.
        for pid in procfs::process_tree(root) {
            for tid in procfs::threads(pid) {
                if let Err(err) = self.kernel.add_to_session(tid, entry) {
                    tracing::error!(tid, "cannot add to session {root}: {err}");
                }
            }
        }
        let uid = procfs::uid(root).unwrap_or(u32::MAX);
        let argv = procfs::cmdline(root).unwrap_or_default();
        self.register_session(root, Some(agent), origin, uid, argv);
    }

    fn register_session(
        &mut self,
        id: u32,
        agent: Option<String>,
        origin: &'static str,
        uid: u32,
        argv: Vec<Vec<u8>>,
    ) {
        tracing::info!(session = id, agent, origin, "session started");
        let mut record = AuditRecord::new(AuditEvent::SessionStart);
        record.session = Some(id);
        record.pid = Some(id);
        record.agent = agent.clone();
        record.uid = Some(uid);
        record.argv = argv.iter().map(|a| escape_bytes(a)).collect();
        record.ancestry = ancestry(id);
        record.reason = Some(origin.into());
        self.audit.write(&record);
        self.sessions.insert(
            id,
            Session {
                id,
                agent,
                origin: origin.to_string(),
                uid,
            },
        );
    }

    /// Finds agents that were already running when guardd started.
    pub fn scan_running_agents(&mut self) {
        let me = std::process::id();
        for pid in procfs::all_pids() {
            if pid == me || self.kernel.session_of(pid).is_some() {
                continue;
            }
            let Ok(stat) = procfs::stat(pid) else {
                continue;
            };
            let agent = if self.policy.agents.programs.contains(&stat.comm) {
                Some(stat.comm.clone())
            } else if self.policy.agents.interpreters.contains(&stat.comm) {
                let argv = procfs::cmdline(pid).unwrap_or_default();
                let words: Vec<String> = argv
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                self.policy.runs_agent_package(&words)
            } else {
                None
            };
            if let Some(agent) = agent {
                self.adopt_tree(pid, agent, "scan");
            }
        }
    }

    // ---- periodic work ----------------------------------------------------

    /// Times out expired holds, drops holds whose process died, and raises
    /// stops the kernel recorded but whose event never arrived.
    pub fn tick(&mut self) {
        let now = Instant::now();
        for id in self.holds.expired(now) {
            self.end_timed_out(&id);
        }
        for id in self.holds.exited() {
            self.end_exited(&id);
        }
        let grace_ns = RECOVERY_GRACE.as_nanos() as u64;
        let now_ns = monotonic_ns();
        for (pid, entry) in self.kernel.held() {
            if self.holds.has_pid(pid) || now_ns.saturating_sub(entry.ktime_ns) < grace_ns {
                continue;
            }
            let Ok(stat) = procfs::stat(pid) else {
                self.kernel.forget_held(pid);
                continue;
            };
            tracing::warn!(pid, "raising a stop whose event was lost");
            self.stats.counts.recovered_from_map += 1;
            self.on_stop(Stop {
                pid,
                session: entry.session_id,
                comm: &stat.comm,
                stopped_at_ns: None,
                stop_failed: false,
            });
        }
    }

    /// Loads the policy files again. A policy that fails to load is refused
    /// and the one in force stays; holds already raised keep their rule.
    pub fn reload(&mut self, reason: &str) {
        let Some(config) = self.config.clone() else {
            tracing::info!("{reason}: running on the embedded default policy, nothing to reload");
            return;
        };
        let mut record = AuditRecord::new(AuditEvent::PolicyReload);
        record.reason = Some(reason.to_string());
        match Policy::load(&config) {
            Ok(policy) => match self.kernel.set_programs(&ProgramSets::of(&policy)) {
                Ok(()) => {
                    tracing::info!(
                        version = policy.version,
                        rules = policy.rules.len(),
                        "{reason}: policy reloaded"
                    );
                    record.decision = Some(format!("loaded {}", policy.version));
                    self.policy = policy;
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
    }

    // ---- control requests ---------------------------------------------------

    pub fn start_session(&mut self, peer: Peer, argv: Vec<String>) -> Response {
        let Some(pid) = peer.pid.filter(|pid| *pid != 0) else {
            return error("cannot identify the calling process");
        };
        if let Some(existing) = self.kernel.session_of(pid) {
            // A launcher inside a session stays in that session.
            return Response::SessionStarted {
                session_id: existing.session_id,
            };
        }
        let entry = SessionEntry {
            session_id: pid,
            flags: SESSION_LAUNCHED,
        };
        for tid in procfs::threads(pid) {
            if let Err(err) = self.kernel.add_to_session(tid, entry) {
                return error(&format!("cannot register the session: {err}"));
            }
        }
        let argv = argv.into_iter().map(String::into_bytes).collect();
        self.register_session(pid, None, "launched", peer.uid, argv);
        Response::SessionStarted { session_id: pid }
    }

    pub fn pending(&self) -> Response {
        Response::Pending {
            holds: self.holds.views(Instant::now()),
        }
    }

    pub fn approve(&mut self, peer: Peer, id: &str) -> Response {
        let approver = match self.authorize(peer, id, "approve") {
            Ok(approver) => approver,
            Err(response) => return response,
        };
        let hold = self.holds.get_mut(id).expect("authorize checked the id");
        if hold.approved_by.contains(&peer.uid) {
            let why = format!("uid {} has already approved; it counts once", peer.uid);
            let mut record =
                self.hold_record(self.holds.get(id).expect("present"), AuditEvent::Refuse);
            record.approver = Some(approver);
            record.decision = Some("refused approve".into());
            record.reason = Some(why.clone());
            self.audit.write(&record);
            return error(&format!("refused: {why}"));
        }
        hold.approved_by.push(peer.uid);
        if (hold.approved_by.len() as u32) < hold.approvals_needed {
            let progress = format!(
                "approval {} of {}",
                hold.approved_by.len(),
                hold.approvals_needed
            );
            if let Some(stderr) = &hold.stderr {
                notice::write(
                    stderr,
                    &format!("agent-guard: request {id}: {progress}, by {approver}; still held.\n"),
                );
            }
            let hold = self.holds.get(id).expect("present");
            self.audit_end(
                hold,
                AuditEvent::Approve,
                "hold",
                Some(approver),
                Some(progress),
            );
            return Response::Decided {
                id: id.to_string(),
                state: HoldState::Held,
            };
        }
        let hold = self.holds.remove(id).expect("present");
        if !hold.process.is_alive() {
            self.audit_end(&hold, AuditEvent::Exit, "exited", Some(approver), None);
            return error(&format!("request {id}: the process has already exited"));
        }
        if let Some(stderr) = &hold.stderr {
            notice::write(
                stderr,
                &format!("agent-guard: request {id} approved by {approver}; running.\n"),
            );
        }
        self.release(&hold);
        tracing::info!(id, approver, "approved");
        self.audit_end(
            &hold,
            AuditEvent::Approve,
            "allow",
            Some(approver.clone()),
            None,
        );
        let mut release = self.hold_record(&hold, AuditEvent::Release);
        release.approver = Some(approver);
        self.audit.write(&release);
        Response::Decided {
            id: id.to_string(),
            state: HoldState::Approved,
        }
    }

    pub fn deny(&mut self, peer: Peer, id: &str, reason: Option<String>) -> Response {
        let approver = match self.authorize(peer, id, "deny") {
            Ok(approver) => approver,
            Err(response) => return response,
        };
        let hold = self.holds.remove(id).expect("authorize checked the id");
        let because = reason
            .as_deref()
            .map(|r| format!(": {}", escape_bytes(r.as_bytes())))
            .unwrap_or_default();
        self.kill_hold(
            &hold,
            &format!("request {id} denied by {approver}{because}"),
        );
        tracing::info!(id, approver, "denied");
        self.audit_end(&hold, AuditEvent::Deny, "deny", Some(approver), reason);
        Response::Decided {
            id: id.to_string(),
            state: HoldState::Denied,
        }
    }

    /// Who may decide: never a process inside an agent session (nor one whose
    /// ancestor is), and only root or the user the held process runs as.
    fn authorize(&mut self, peer: Peer, id: &str, verb: &str) -> Result<String, Response> {
        let Some(hold) = self.holds.get(id) else {
            return Err(error(&format!("no pending request {id}")));
        };
        let identity = identity(peer);
        let refusal = match peer.pid.filter(|pid| *pid != 0) {
            None => Some("the caller's process cannot be identified".to_string()),
            Some(pid) => self.session_ancestor(pid).map(|(inside, session)| {
                format!("self-approval attempt: the caller (pid {pid}) is inside agent session {session} (via pid {inside})")
            }),
        }
        .or_else(|| (peer.uid != 0 && peer.uid != hold.uid).then(|| format!("uid {} may not {verb} a request of uid {}", peer.uid, hold.uid)));
        if let Some(why) = refusal {
            tracing::warn!(id, identity, "refused {verb}: {why}");
            let mut record = self.hold_record(hold, AuditEvent::Refuse);
            record.approver = Some(identity);
            record.decision = Some(format!("refused {verb}"));
            record.reason = Some(why.clone());
            self.audit.write(&record);
            return Err(error(&format!("refused: {why}")));
        }
        Ok(identity)
    }

    /// The first process from `pid` upwards that the kernel counts in a session.
    fn session_ancestor(&self, pid: u32) -> Option<(u32, u32)> {
        procfs::ancestry(pid).into_iter().find_map(|(ancestor, _)| {
            self.kernel
                .session_of(ancestor)
                .map(|entry| (ancestor, entry.session_id))
        })
    }

    pub fn explain(
        &self,
        argv: &[String],
        cwd: Option<String>,
        env: Vec<(String, String)>,
    ) -> Response {
        if argv.is_empty() {
            return error("explain needs a command");
        }
        let mut command = CommandContext::from_argv(argv);
        command.cwd = cwd;
        command.env = env;
        Response::Explain(Box::new(self.policy.judge(&command)))
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
            mechanisms: mechanisms(self.kernel.recognises_exe_names(), &self.policy),
            programs: self.kernel.loaded_programs().to_vec(),
            stats: self.stats.view(),
        }))
    }

    // ---- endings ------------------------------------------------------------

    fn end_timed_out(&mut self, id: &str) {
        let Some(hold) = self.holds.remove(id) else {
            return;
        };
        let waited = format_duration(hold.deadline - hold.created);
        if hold.on_timeout == OnTimeout::Allow {
            // The rule's author chose this; it is audited like an approval.
            if let Some(stderr) = &hold.stderr {
                notice::write(
                    stderr,
                    &format!("agent-guard: request {id} timed out; its rule lets it run.\n"),
                );
            }
            self.release(&hold);
            self.audit_end(
                &hold,
                AuditEvent::Timeout,
                "allow",
                None,
                Some(format!("no decision within {waited}; on_timeout = allow")),
            );
            return;
        }
        self.kill_hold(
            &hold,
            &format!("request {id} timed out after {waited} without approval and was denied"),
        );
        tracing::info!(id, "timed out");
        self.audit_end(
            &hold,
            AuditEvent::Timeout,
            "deny",
            None,
            Some(format!("no decision within {waited}")),
        );
    }

    fn end_exited(&mut self, id: &str) {
        let Some(hold) = self.holds.remove(id) else {
            return;
        };
        self.kernel.forget_held(hold.process.pid);
        self.audit_end(
            &hold,
            AuditEvent::Exit,
            "exited",
            None,
            Some("the held process ended before a decision".into()),
        );
    }

    /// On shutdown nothing held may run: every pending request is denied.
    /// Stopping (SIGTERM/SIGINT) keeps every hold: the pinned programs keep
    /// enforcing, the processes stay stopped, and the next guardd re-adopts
    /// them from the state file. `guardd --teardown` is what denies them.
    pub fn shutdown(&mut self) {
        self.persist();
        for hold in self.holds.iter() {
            if let Some(stderr) = &hold.stderr {
                notice::write(
                    stderr,
                    &format!("agent-guard: guardd is stopping; request {} stays held until it is back.\n", hold.id),
                );
            }
        }
    }

    fn kill_hold(&mut self, hold: &Hold, what: &str) {
        if let Some(stderr) = &hold.stderr {
            notice::write(
                stderr,
                &format!("agent-guard: {what}. `{}` did not run.\n", hold.command()),
            );
        }
        if hold.traced {
            self.tracer.kill(hold.process.pid);
        } else if let Err(err) = hold.process.kill() {
            tracing::error!(id = hold.id, "kill failed: {err}");
        }
        self.kernel.forget_held(hold.process.pid);
    }

    /// Lets a held process run: out of ptrace-stop, then SIGCONT.
    fn release(&mut self, hold: &Hold) {
        if hold.traced {
            if let Err(err) = self.tracer.detach(hold.process.pid) {
                tracing::error!(id = hold.id, "ptrace detach failed: {err}");
            }
        }
        if let Err(err) = hold.process.resume() {
            tracing::error!(id = hold.id, "resume failed: {err}");
        }
        self.kernel.forget_held(hold.process.pid);
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
        let env = procfs::environ(process.pid, CONTEXT_ENV);
        if !env.is_empty() {
            let env: Vec<String> = env
                .iter()
                .map(|(k, v)| format!("{k}={}", escape_bytes(v.as_bytes())))
                .collect();
            record.reason = Some(format!("context: {}", env.join(" ")));
        }
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
        record
    }

    fn audit_end(
        &self,
        hold: &Hold,
        event: AuditEvent,
        decision: &str,
        approver: Option<String>,
        reason: Option<String>,
    ) {
        let mut record = self.hold_record(hold, event);
        record.decision = Some(decision.into());
        record.approver = approver;
        record.reason = reason;
        self.audit.write(&record);
    }
}

/// Default-pack rules that keep sessions from disabling agent-guard.
const SELF_PROTECTION_RULES: &[&str] = &[
    "guard-stop-service",
    "guard-signal",
    "guard-files",
    "guard-bpftool",
];

fn mechanisms(exe_names: bool, policy: &Policy) -> Vec<(String, String)> {
    let active: Vec<&str> = SELF_PROTECTION_RULES
        .iter()
        .copied()
        .filter(|id| policy.rule(id).is_some())
        .collect();
    let self_protection = if active.is_empty() {
        "none: the loaded policy has none of the guard-* rules; BPF LSM (task_kill, ptrace, bpf, file_open): not here".to_string()
    } else {
        format!(
            "policy rules {}; BPF LSM (task_kill, ptrace, bpf, file_open): not here",
            active.join(", ")
        )
    };
    let program_recognition = if exe_names {
        "comm and the executed file's name (BTF offsets): symlinks to watched programs are stopped"
    } else {
        "none beyond comm: no kernel BTF, a symlink to a watched program under another name is not stopped"
    };
    [
        ("program_recognition", program_recognition),
        ("exec_hold", "tracepoint sched/sched_process_exec + SIGSTOP before the first instruction"),
        ("session_tracking", "tracepoints sched/sched_process_fork and sched/sched_process_exit"),
        ("agent_detection", "exec of agent programs (kernel), interpreter argv (daemon), /proc scan at start"),
        ("hold_release_protection", "ptrace-stop (PTRACE_SEIZE + PTRACE_INTERRUPT): SIGCONT from others does not wake a held process; BPF LSM task_kill: not here"),
        ("syscall_holds", "none: not implemented yet (issue #6)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("self_protection".to_string(), self_protection)])
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
