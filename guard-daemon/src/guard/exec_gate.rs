//! The exec gate's half in guardd: a stop the kernel reported is judged by
//! the policy and let go, denied or raised as a hold; stops another process
//! continued, or that cannot be read, fail closed.
use super::{map_scan::MapScan, *};

/// The exec gate's own state: its counters, the schedule of HELD map reads
/// and what the kernel last said of the stops it killed.
pub(super) struct ExecGate {
    pub(super) stats: ExecStats,
    held_scan: MapScan,
    /// The kernel's count of stops it killed for lack of room, as last reported.
    stops_killed_seen: u64,
    /// When this guardd started (CLOCK_MONOTONIC ns): stops the kernel
    /// recorded before it may have been let go by an earlier guardd.
    started_ns: u64,
    /// The watched programs' installed files, to know one under another name.
    pub(super) program_files: ProgramFiles,
    /// When the stop being finished was let go: its HELD entry is dropped
    /// only if the kernel recorded no later stop of the same pid.
    pub(super) resumed_at: Option<u64>,
}

impl ExecGate {
    pub(super) fn new(program_files: ProgramFiles) -> Self {
        Self {
            program_files,
            resumed_at: None,
            stats: ExecStats::default(),
            held_scan: MapScan::default(),
            stops_killed_seen: 0,
            started_ns: monotonic_ns(),
        }
    }

    /// Whether the HELD map is to be read now (`lost`: reads the ring
    /// buffer's lost-event count).
    pub(super) fn held_scan_due(&mut self, now: Instant, lost: impl FnOnce() -> u64) -> bool {
        self.held_scan.due(now, lost)
    }

    /// `waiting`: a stop still waits out its grace, so read again soon.
    pub(super) fn held_scan_done(&mut self, now: Instant, waiting: bool) {
        self.held_scan.done(now, waiting);
    }

    /// Whether the kernel recorded a stop at `ktime_ns` before this guardd started.
    pub(super) fn before_start(&self, ktime_ns: u64) -> bool {
        ktime_ns < self.started_ns
    }

    /// How many more stops the kernel killed since last asked (`total`: its count).
    fn newly_killed(&mut self, total: u64) -> Option<u64> {
        let killed = total
            .checked_sub(self.stops_killed_seen)
            .filter(|n| *n > 0)?;
        self.stops_killed_seen = total;
        Some(killed)
    }
}

impl Guard {
    /// An ExecHeld event is stale when the kernel no longer lists that stop
    /// (or lists a later one) and the process is not stopped. With no entry
    /// but a stopped process (the HELD map was full), it is handled. A stop
    /// just made may not have taken effect yet: it is given a moment.
    pub(super) fn is_stale(&self, event: &Event, held: Option<guard_common::HeldEntry>) -> bool {
        let stopped = || procfs::stat(event.pid).is_ok_and(|stat| stat.is_stopped());
        match held {
            Some(entry) => entry.ktime_ns > event.ktime_ns,
            None => !(0..20).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                stopped()
            }),
        }
    }

    pub(super) fn on_stop(&mut self, stop: Stop<'_>) {
        self.exec_gate.stats.counts.stops += 1;
        if let Some(at) = stop.stopped_at_ns {
            self.exec_gate
                .stats
                .event_us
                .push(monotonic_ns().saturating_sub(at) / 1000);
        }
        let Ok(pidfd) = Pidfd::open(stop.pid) else {
            // Gone before we looked: nothing can run.
            let ending = stop_ending(stop.pid, None, stop.session, None, None);
            return self.finish(ending, Outcome::Gone);
        };
        if let Err(why) = self.probe_exec_image(stop.pid) {
            tracing::error!(pid = stop.pid, "{why}");
            if let Ok(process) = pidfd.identify() {
                self.fail_closed(&process, stop.session, &why, None);
            }
            return;
        }
        let command = self.stopped_command(&stop);
        let explanation = command
            .as_ref()
            .map(|(_, context)| self.policy.judge(context));
        let decision_us = stop
            .stopped_at_ns
            .map(|at| monotonic_ns().saturating_sub(at) / 1000);
        let allowed = explanation
            .as_ref()
            .is_some_and(|e| e.action == Action::Allow);
        if allowed && self.holds.id_of_pid(stop.pid).is_none() {
            // The common case: let it run before anything else is done. With no
            // hold on this pid, its start time (another /proc read) is not needed.
            let ending = stop_ending(stop.pid, Some(&pidfd), stop.session, None, None);
            self.finish(ending, Outcome::PolicyAllowed { audited: false });
            // Looked up after the resume, off the decision's path: a stop
            // another process continued ran already, and what was judged may
            // be a later exec's command line. One map lookup, a miss.
            let continued = self
                .kernel
                .continued_mark(stop.pid)
                .filter(|(_, marked_stop)| Some(*marked_stop) == stop.recorded_ns)
                .map(|(continuation, _)| continuation);
            if let Some(continuation) = continued {
                if let Ok(process) = pidfd.identify() {
                    self.end_continued(&process, stop.session, continuation, None);
                }
                return;
            }
            self.exec_gate.stats.counts.allowed += 1;
            if let Some(us) = decision_us {
                self.exec_gate.stats.decision_us.push(us);
            }
            return;
        }
        let Ok(process) = pidfd.identify() else {
            let ending = stop_ending(stop.pid, None, stop.session, None, None);
            return self.finish(ending, Outcome::Gone);
        };
        if self.holds.holds_process(process.pid, process.start_time) {
            return; // already raised (event and map recovery both saw it)
        }
        if let Some(continuation) = self.kernel.continued_by(stop.pid) {
            self.end_continued(&process, stop.session, continuation, None);
            return;
        }
        if let Some(us) = decision_us {
            self.exec_gate.stats.decision_us.push(us);
        }
        let (Some((judged, context)), Some(explanation)) = (command, explanation) else {
            // A stopped process whose command we cannot read is not run blind.
            self.fail_closed(
                &process,
                stop.session,
                "could not read the command line of a stopped process",
                None,
            );
            return;
        };
        if stop.stop_failed && explanation.action != Action::Allow {
            self.fail_closed(
                &process,
                stop.session,
                "bpf_send_signal failed: the process was not stopped",
                None,
            );
            return;
        }
        if explanation.action == Action::Allow {
            let ending = stop_ending(stop.pid, Some(&process), stop.session, None, None);
            self.finish(ending, Outcome::PolicyAllowed { audited: false });
            self.exec_gate.stats.counts.allowed += 1;
            return;
        }
        let request = Request::judged(process.pid, stop.session, judged, context);
        let mut record = AuditRecord::from(&request);
        record.rule = explanation.rule.clone();
        record.decision_us = decision_us;
        let outcome = match explanation.action {
            Action::Allow | Action::Audit => {
                self.exec_gate.stats.counts.allowed += 1;
                Outcome::PolicyAllowed { audited: true }
            }
            Action::Deny => {
                self.exec_gate.stats.counts.denied += 1;
                Outcome::PolicyDenied {
                    message: explanation
                        .message
                        .clone()
                        .unwrap_or_else(|| "the policy forbids it".into()),
                }
            }
            Action::Hold => return self.raise_hold(process, request, &explanation, record),
        };
        let stderr = notice::stderr_of(&process);
        let ending = Ending {
            pid: process.pid,
            held: Held::Exec {
                process: Some(&process),
                traced: false,
                frozen: None,
            },
            request: None,
            subject: request.command(),
            stderr: stderr.as_ref(),
            record,
        };
        self.finish(ending, outcome);
    }

    /// The stopped process's judged argv and command context (cwd,
    /// environment and uid only where a rule may read them), or None when its
    /// command line cannot be read.
    fn stopped_command(&self, stop: &Stop<'_>) -> Option<(Vec<Vec<u8>>, CommandContext)> {
        let argv = procfs::cmdline(stop.pid).ok().filter(|a| !a.is_empty())?;
        let exe = procfs::link(stop.pid, "exe");
        let (mut program, mut judged) = procfs::judged_command(stop.comm, &exe, &argv);
        let files = &self.exec_gate.program_files;
        // A hard link, copy or memfd of a watched program is that program,
        // and so is a copy or symlink of a watched script that a shell runs.
        let exe_file = format!("/proc/{}/exe", stop.pid);
        // The script first: a busybox running it is a watched file itself.
        let script = (!files.is_watched(&program) && files.is_script_runner(&exe))
            .then(|| files.script_run_by(stop.pid, &judged))
            .flatten();
        if let Some((real, argv)) = script {
            (program, judged) = (real, argv);
        } else if let Some(real) =
            files.identify_unless_watched(&program, std::path::Path::new(&exe_file))
        {
            program = real;
        }
        let mut context = CommandContext {
            program,
            exe: Some(exe.clone()),
            argv: judged
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            cwd: None,
            env: Vec::new(),
            uid: None,
            agent: self.sessions.agent_of(stop.session),
            root: None,
            run_by: None,
        };
        if self.policy.reads_context(&context.program, Some(&exe)) {
            let mut env_names = self.policy.env_names();
            env_names.extend_from_slice(crate::request::CONTEXT_ENV);
            context.cwd = Some(procfs::link(stop.pid, "cwd"));
            context.env = procfs::environ(stop.pid, &env_names);
            context.uid = procfs::uid(stop.pid).ok();
            context.root = Some(format!("/proc/{}/root", stop.pid));
            context.run_by = procfs::parent_running_same_file(stop.pid);
        }
        Some((judged, context))
    }

    /// Holds a stopped command the policy said to hold: the rule's terms
    /// go with it unchanged.
    pub(super) fn raise_hold(
        &mut self,
        process: ProcessHandle,
        request: Request,
        explanation: &Explanation,
        mut record: AuditRecord,
    ) {
        let now = Instant::now();
        let timeout = explanation.terms.timeout();
        let id = self.holds.next_id();
        let stderr = notice::stderr_of(&process);
        let mut hold = Hold {
            id: id.clone(),
            request,
            rule: explanation.rule.clone().unwrap_or_default(),
            terms: explanation.terms.clone(),
            why: why_held(explanation),
            approved_by: Vec::new(),
            tokens_seen: Vec::new(),
            traced: false,
            frozen: None,
            protection: super::frozen::TRACED.into(),
            created: now,
            deadline: now + timeout,
            created_unix: unix_now(),
            deadline_unix: unix_now() + timeout.as_secs(),
            stderr,
            gate: None,
            api: None,
            process,
        };
        if let Some(continuation) = self.keep_held(&mut hold, &mut record) {
            let mut ending = self.hold_ending(&hold);
            ending.request = None;
            ending.record =
                stop_ending(hold.process.pid, None, hold.request.session, None, None).record;
            self.finish(ending, Outcome::Continued(continuation));
            return;
        }
        self.exec_gate.stats.counts.held += 1;
        if let Some(stderr) = &hold.stderr {
            let who = hold.terms.approvers_in_words();
            notice::write(
                stderr,
                &format!(
                    "agent-guard: held `{}` (request {id}, rule {}). It will not run until {} \
                     approval(s) from {who}, given outside this agent session; without a decision \
                     it is denied in {}.{} Do not try to approve or bypass it.\n",
                    hold.command(),
                    hold.rule,
                    hold.terms.approvals_needed(),
                    format_duration(timeout),
                    self.same_uid_auth().notice_warning(),
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
        record.decision = Some(AuditDecision::Hold);
        record.why = hold.why.clone();
        self.audit.write(&record);
        self.holds.insert(hold);
    }

    /// Takes the process into ptrace-stop, so that only guardd can end the hold.
    pub(super) fn seize(&mut self, hold: &mut Hold, record: &mut AuditRecord) {
        match self.tracer.seize(hold.process.pid) {
            Ok(()) => hold.traced = true,
            Err(err) if hold.frozen.is_some() => {
                let why = format!("frozen, but not traced by guardd ({err})");
                tracing::warn!(id = hold.id, "{why}");
                record.reason = Some(why);
            }
            Err(err) => {
                let why = format!(
                    "ptrace unavailable ({err}): held by SIGSTOP only, which others may undo"
                );
                tracing::warn!(id = hold.id, "{why}");
                hold.protection = why.clone();
                record.reason = Some(why);
            }
        }
    }

    /// Ends a stop another process (or the kernel) let run before guardd
    /// held it: it may have run part of its command, or exec'd another,
    /// without a decision. `request`: the saved request (id, rule) it ends.
    pub(super) fn end_continued(
        &mut self,
        process: &ProcessHandle,
        session: u32,
        continuation: Continuation,
        request: Option<(&str, &str)>,
    ) {
        let stderr = notice::stderr_of(process);
        let ending = stop_ending(
            process.pid,
            Some(process),
            session,
            request,
            stderr.as_ref(),
        );
        self.finish(ending, Outcome::Continued(continuation));
    }

    /// A recorded stop whose process runs, and no other process sent it
    /// SIGCONT: an earlier guardd let it go and ended before it forgot the
    /// stop (or saved the state). Holding it now could end it mid-run.
    pub(super) fn leave_let_go(&mut self, pid: u32, session: u32, request: Option<(&str, &str)>) {
        let ending = stop_ending(pid, None, session, request, None);
        self.finish(ending, Outcome::LetGo);
    }

    /// Kills a stopped process we cannot judge, and says so.
    /// `request`: the saved request (id, rule) it ends, if any.
    pub(super) fn fail_closed(
        &mut self,
        process: &ProcessHandle,
        session: u32,
        why: &str,
        request: Option<(&str, &str)>,
    ) {
        let ending = stop_ending(process.pid, Some(process), session, request, None);
        let why = why.to_string();
        self.finish(ending, Outcome::FailedClosed { why });
    }

    /// Says so when the kernel killed watched execs whose stop it had no room
    /// to record (they never ran; a stop nothing records would stay forever).
    pub(super) fn report_stops_killed(&mut self) {
        let total = self.kernel.stops_killed();
        let Some(killed) = self.exec_gate.newly_killed(total) else {
            return;
        };
        let why = format!(
            "{killed} watched exec(s) killed by the kernel: neither the map of stops nor the event \
             ring buffer had room to record them ({total} since the maps were created; fail closed)"
        );
        tracing::error!("{why}");
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.decision = Some(AuditDecision::Deny);
        record.reason = Some(why);
        self.audit.write(&record);
    }
}

/// Why a command is held: why its rule matched, and where its terms come
/// from when several hold rules matched.
fn why_held(explanation: &Explanation) -> Vec<String> {
    let mut why = explanation.why.clone();
    if !explanation.terms_from.is_empty() {
        why.push(format!(
            "terms: the strictest of rules {}",
            explanation.terms_from.join(", ")
        ));
    }
    why
}
