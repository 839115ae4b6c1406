//! Control requests (start a session, list, approve, deny, explain) and the
//! ways a hold ends.
use super::*;

impl Guard {
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
    pub(super) fn authorize(
        &mut self,
        peer: Peer,
        id: &str,
        verb: &str,
    ) -> Result<String, Response> {
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
    pub(super) fn session_ancestor(&self, pid: u32) -> Option<(u32, u32)> {
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

    // ---- endings ------------------------------------------------------------

    pub(super) fn end_timed_out(&mut self, id: &str) {
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

    pub(super) fn end_exited(&mut self, id: &str) {
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
        // While no guardd runs, the LSM lets nobody SIGCONT a held process.
        if let Err(err) = self.kernel.set_guardd(0) {
            tracing::error!("cannot clear the releasing pid: {err}");
        }
        for hold in self.holds.iter() {
            if let Some(stderr) = &hold.stderr {
                notice::write(
                    stderr,
                    &format!("agent-guard: guardd is stopping; request {} stays held until it is back.\n", hold.id),
                );
            }
        }
    }

    pub(super) fn kill_hold(&mut self, hold: &Hold, what: &str) {
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
    pub(super) fn release(&mut self, hold: &Hold) {
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
}
