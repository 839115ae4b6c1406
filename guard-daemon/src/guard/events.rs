//! Kernel events and periodic work: stops are judged, holds raised, sessions
//! found, lost events recovered, deadlines kept.
use super::*;

impl Guard {
    // ---- kernel events -------------------------------------------------

    pub fn on_event(&mut self, event: &Event) {
        let comm = comm_str(&event.comm);
        match EventKind::from_u32(event.kind) {
            Some(kind @ (EventKind::ExecHeld | EventKind::ExecStopFailed)) => {
                let held = self.kernel.held_entry(event.pid);
                // A stop raised from the HELD map while its event waited in the ring
                // buffer is decided already: its late event must not act again.
                if kind == EventKind::ExecHeld && self.is_stale(event, held) {
                    return;
                }
                self.on_stop(Stop {
                    pid: event.pid,
                    session: event.session_id,
                    comm: &comm,
                    stopped_at_ns: Some(event.ktime_ns),
                    recorded_ns: held.map(|entry| entry.ktime_ns),
                    stop_failed: kind == EventKind::ExecStopFailed,
                })
            }
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
            Some(
                kind @ (EventKind::GateHeld
                | EventKind::GateStopFailed
                | EventKind::GateDenied
                | EventKind::GateAudited),
            ) => self.on_gate_event(kind, event),
            Some(
                kind @ (EventKind::ApiHeld | EventKind::ApiStopFailed | EventKind::ApiConnClosed),
            ) => self.on_api_event(kind, event),
            // Read whole (`ReportEvent`, `ApiWriteEvent`) by the reader,
            // never as a bare event.
            Some(EventKind::GateReported | EventKind::ApiHttp2Passed) => {}
            None => tracing::warn!(kind = event.kind, "unknown kernel event"),
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
        self.kernel.unfollow_ended_sessions();
        self.sweep_frozen();
        self.prune_gate_decisions();
        self.watch_pins(now);
        self.audit_policy_lock();
        self.tick_lsm_gate();
        self.tick_api_gate();
        self.sync_reporting();
        self.report_stops_killed();
        let kernel = &self.kernel;
        if !self.exec_gate.held_scan_due(now, || kernel.events_lost()) {
            return;
        }
        let grace_ns = RECOVERY_GRACE.as_nanos() as u64;
        let now_ns = monotonic_ns();
        let mut waiting = false;
        for (pid, entry) in self.kernel.held() {
            if self.holds.has_pid(pid) {
                continue;
            }
            if now_ns.saturating_sub(entry.ktime_ns) < grace_ns {
                // Its event may still come; look again next tick.
                waiting = true;
                continue;
            }
            let Ok(stat) = procfs::stat(pid) else {
                let ending = stop_ending(pid, None, entry.session_id, None, None);
                self.finish(ending, Outcome::Gone);
                continue;
            };
            let running = match Recorded::of(&stat, self.kernel.continued_by(pid)) {
                Recorded::Held => false,
                Recorded::Continued(continuation) => {
                    if let Ok(process) = ProcessHandle::open(pid) {
                        self.end_continued(&process, entry.session_id, continuation, None);
                    }
                    continue;
                }
                // This guardd forgets a stop as it lets it go: only an
                // earlier one can have let go a stop it still lists.
                Recorded::LetGo if self.exec_gate.before_start(entry.ktime_ns) => {
                    self.leave_let_go(pid, entry.session_id, None);
                    continue;
                }
                // Its stop failed (and the event saying so was lost): judged
                // as such, it is ended unless allowed.
                Recorded::LetGo => true,
            };
            tracing::warn!(pid, "raising a stop whose event was lost");
            self.exec_gate.stats.counts.recovered_from_map += 1;
            self.on_stop(Stop {
                pid,
                session: entry.session_id,
                comm: &stat.comm,
                stopped_at_ns: None,
                recorded_ns: Some(entry.ktime_ns),
                stop_failed: running,
            });
        }
        self.exec_gate.held_scan_done(now, waiting);
    }
}
