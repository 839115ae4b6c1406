//! Control requests (start a session, list, approve, deny, explain) and the
//! ways a hold ends.
use super::*;

impl Guard {
    // ---- control requests ---------------------------------------------------

    /// This host's name in held requests and on the fleet relay.
    pub fn host_name(&self) -> String {
        match &self.policy.fleet {
            Some(fleet) => fleet.host.clone(),
            None => crate::policy::fleet::subject_token(&crate::notify::hostname()),
        }
    }

    pub fn pending(&self) -> Response {
        Response::Pending {
            holds: self.holds.views(Instant::now(), &self.host_name()),
        }
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
        let mut explanation = self.policy.judge(&command);
        explanation.kernel = Some(self.kernel_says(argv));
        Response::Explain(Box::new(explanation))
    }

    /// `guardctl explain --api`: an example-form call, or a raw request.
    pub fn explain_api(&self, call: Option<String>, request: Option<String>) -> Response {
        let call = match (call, request) {
            (Some(call), None) => crate::policy::api::ApiCall::parse(&call),
            (None, Some(request)) => crate::api::call_in_request(request.as_bytes()),
            _ => Err("explain --api needs a call or a request".into()),
        };
        match call {
            Ok(call) => Response::Explain(Box::new(self.policy.judge_api(&call))),
            Err(message) => error(&message),
        }
    }

    // ---- endings ------------------------------------------------------------

    pub(super) fn end_timed_out(&mut self, id: &str) {
        let Some(hold) = self.holds.remove(id) else {
            return;
        };
        let outcome = Outcome::TimedOut {
            waited: format_duration(hold.deadline - hold.created),
            // The rule's author chose this; it is audited like an approval.
            allow: hold.terms.on_timeout == OnTimeout::Allow,
        };
        self.finish(self.hold_ending(&hold), outcome);
    }

    pub(super) fn end_exited(&mut self, id: &str) {
        let Some(hold) = self.holds.remove(id) else {
            return;
        };
        self.finish(self.hold_ending(&hold), Outcome::Exited { approver: None });
    }

    /// On shutdown nothing held may run: every pending request is denied.
    /// Stopping (SIGTERM/SIGINT) keeps every hold: the pinned programs keep
    /// enforcing, the processes stay stopped, and the next guardd re-adopts
    /// them from the state file. `guardd --teardown` is what denies them.
    pub fn shutdown(&mut self) {
        self.persist();
        // (A frozen hold stays frozen.) A SIGCONT others sent while a hold was in ptrace-stop ended its
        // group-stop: it would run as the tracer goes. A new SIGSTOP (after
        // the mark is dropped, so a later SIGCONT is marked) keeps it stopped.
        for hold in self.holds.iter().filter(|h| h.traced && h.gate.is_none()) {
            self.kernel.clear_continued(hold.process.pid);
            if let Err(err) = hold.process.stop() {
                tracing::error!(
                    pid = hold.process.pid,
                    "cannot stop the held process again: {err}"
                );
            }
        }
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
}
