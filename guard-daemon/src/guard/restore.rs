//! The state file: what a restarted guardd takes over (sessions and holds),
//! written whenever they change.
use super::*;

impl Guard {
    /// Re-adopts the sessions and holds of a previous run. A held process is
    /// re-adopted only if it is the same process (pid and start time).
    pub(super) fn restore(&mut self, saved: SavedState) {
        self.rehold_after_layout_change(&saved);
        for session in saved.sessions {
            if session.listener && procfs::stat(session.id).is_ok() {
                self.audit_lost_listener(session.id);
            }
            self.sessions.insert(Session::from(session));
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
            if entry.api.is_some() {
                self.readopt_api_hold(process, entry);
                continue;
            }
            let request = Some((entry.id.as_str(), entry.rule.as_str()));
            // Frozen where it was left: no SIGCONT since let it run.
            let frozen = self
                .still_frozen(entry.frozen.as_ref(), entry.pid)
                .then_some(entry.frozen.clone())
                .flatten();
            let recorded = match frozen {
                Some(_) => Recorded::Held,
                None => Recorded::of(&stat, self.kernel.continued_by(entry.pid)),
            };
            match recorded {
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
            let request = Request::with_command(
                entry.pid,
                entry.session,
                self.sessions.agent_of(entry.session),
                program,
                argv,
                exe,
            );
            let hold = Hold {
                id: entry.id.clone(),
                request: Request {
                    // What was seen when it was held, not what its parents are now.
                    ancestry: entry.ancestry,
                    ..request
                },
                rule: entry.rule,
                terms: entry.terms,
                why: entry.why,
                approved_by: entry.approved_by,
                tokens_seen: Vec::new(),
                traced: false,
                protection: match (&frozen, &self.freezer) {
                    (Some(_), Ok(freezer)) => super::frozen::frozen_protection(freezer),
                    _ => super::frozen::TRACED.into(),
                },
                frozen,
                created: now - Duration::from_secs(now_unix.saturating_sub(entry.created_unix)),
                deadline: now + Duration::from_secs(entry.deadline_unix.saturating_sub(now_unix)),
                created_unix: entry.created_unix,
                deadline_unix: entry.deadline_unix,
                stderr: notice::stderr_of(&process),
                gate: None,
                api: None,
                process,
            };
            let mut hold = hold;
            let mut record = hold.record(AuditEvent::Readopt);
            record.decision = Some(AuditDecision::Hold);
            let rule = hold.rule.clone();
            let request = Some((entry.id.as_str(), rule.as_str()));
            if hold.frozen.is_none() {
                // Kept again (ptrace-stop ended with the old guardd), frozen where it can be.
                if let Some(continuation) = self.keep_held(&mut hold, &mut record) {
                    self.end_continued(&hold.process, entry.session, continuation, request);
                    continue;
                }
            } else {
                self.seize_frozen(&mut hold, &mut record);
                if !hold.traced && super::frozen::traced_by_another(hold.process.pid) {
                    // Someone attached while guardd was down: what runs on
                    // approval may no longer be what was held.
                    let why = "another process attached to it (ptrace) while guardd was down";
                    self.fail_closed(&hold.process, entry.session, why, request);
                    continue;
                }
            }
            self.audit.write(&record);
            self.holds.insert(hold);
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
                .map(SavedHold::from)
                .collect(),
            sessions: self.sessions.iter().map(SavedSession::from).collect(),
            id_prefix: self.holds.prefix().to_string(),
            next_id: self.holds.next_number(),
            ..crate::state::new_state(String::new())
        };
        if let Err(err) = self.state.save_if_changed(state) {
            // The holds stand; only a restart would not find them (the kernel map still would).
            tracing::error!("cannot write the state file: {err}");
        }
    }
}
