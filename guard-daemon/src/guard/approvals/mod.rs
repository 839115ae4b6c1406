//! Approvals and denials: who may decide (never a session process), how an
//! approver proves a person, tokens, and counting distinct approvers. The
//! rules themselves are pure functions in `rules`; this file applies them to
//! the holds and writes what they decided.
use super::*;
use crate::approval::Decision;

mod rules;
pub use rules::Reauth;
pub(in crate::guard) use rules::SameUidAuth;
use rules::{
    count_approval, local_refusal, reauth, same_uid_auth, signer_refusal, Approver, Count,
};

impl Guard {
    /// A local approval, by the caller's uid (SO_PEERCRED); `proof` says how
    /// the approver proved a person (or that it was not asked), for the audit log.
    pub fn approve(&mut self, peer: Peer, id: &str, proof: Option<&str>) -> Response {
        let identity = match self.authorize(peer, id, "approve") {
            Ok(identity) => identity,
            Err(response) => return response,
        };
        let display = match proof {
            Some(proof) => format!("{identity}, {proof}"),
            None => identity,
        };
        self.add_approval(
            id,
            Approver {
                key: format!("uid:{}", peer.uid),
                display,
                channel: Channel::Socket,
            },
        )
    }

    /// An approval signed elsewhere: it counts for the principal that signed
    /// it, whoever submits it.
    pub fn approve_token(&mut self, peer: Peer, id: &str, token: &str) -> Response {
        let Some(hold) = self.holds.get(id) else {
            return error(&format!("no pending request {id}"));
        };
        let checked = self.check_token(hold, token, Decision::Approve);
        let hold = self.holds.get_mut(id).expect("present");
        match checked {
            Ok((principal, key, seen)) => {
                hold.tokens_seen.push(seen);
                self.add_approval(
                    id,
                    Approver {
                        key: format!("key:{principal}"),
                        display: format!(
                            "key:{principal} ({key}), submitted by {}",
                            identity(peer)
                        ),
                        channel: Channel::Token,
                    },
                )
            }
            Err(why) => self.refuse_token(peer, id, "approve", &why),
        }
    }

    /// A denial signed elsewhere: it ends the request like a local deny.
    pub fn deny_token(
        &mut self,
        peer: Peer,
        id: &str,
        token: &str,
        reason: Option<String>,
    ) -> Response {
        let Some(hold) = self.holds.get(id) else {
            return error(&format!("no pending request {id}"));
        };
        match self.check_token(hold, token, Decision::Deny) {
            Ok((principal, key, _)) => {
                let by = format!("key:{principal} ({key}), submitted by {}", identity(peer));
                self.end_denied(id, by, Channel::Token, reason)
            }
            Err(why) => self.refuse_token(peer, id, "deny", &why),
        }
    }

    fn refuse_token(&mut self, peer: Peer, id: &str, verb: &str, why: &str) -> Response {
        let hold = self.holds.get(id).expect("the caller checked the id");
        tracing::warn!(id, "refused signed {verb}: {why}");
        let mut record = hold.record(AuditEvent::Refuse);
        record.approver = Some(format!("token submitted by {}", identity(peer)));
        record.channel = Some(Channel::Token);
        record.decision = Some(AuditDecision::RefusedRequest(verb.into()));
        record.reason = Some(why.to_string());
        self.audit.write(&record);
        error(&format!("refused: {why}"))
    }

    /// (principal, key fingerprint, token fingerprint) of a valid token for `hold`.
    fn check_token(
        &self,
        hold: &Hold,
        token: &str,
        decision: Decision,
    ) -> Result<(String, String, String), String> {
        let token = crate::approval::Token::parse(token).map_err(|e| e.to_string())?;
        let seen = token.fingerprint();
        if hold.tokens_seen.contains(&seen) {
            return Err("replayed token: it was already used on this request".into());
        }
        let settings = &self.policy.approvals;
        let path = settings
            .allowed_signers
            .as_deref()
            .ok_or_else(|| crate::approval::ApprovalError::NoSigners.to_string())?;
        let signers = crate::approval::load_allowed_signers(path).map_err(|e| e.to_string())?;
        let (principal, key) = crate::approval::verify(
            &token,
            &hold.view(Instant::now(), &self.host_name()),
            decision,
            &signers,
            unix_now(),
            settings.max_token_ttl.as_secs(),
        )
        .map_err(|e| e.to_string())?;
        if let Some(why) = signer_refusal(&hold.terms, &principal) {
            return Err(why);
        }
        Ok((principal, key, seen))
    }

    /// Counts one approval (each identity once) and releases the process
    /// when the rule's number is reached.
    fn add_approval(&mut self, id: &str, approver: Approver) -> Response {
        let hold = self.holds.get_mut(id).expect("the caller checked the id");
        let count = count_approval(
            &mut hold.approved_by,
            hold.terms.approvals_needed(),
            &approver.key,
        );
        if count == Count::AlreadyCounted {
            let why = format!("{} has already approved; it counts once", approver.key);
            let mut record = self
                .holds
                .get(id)
                .expect("present")
                .record(AuditEvent::Refuse);
            record.approver = Some(approver.display);
            record.channel = Some(approver.channel);
            record.decision = Some(AuditDecision::RefusedRequest("approve".into()));
            record.reason = Some(why.clone());
            self.audit.write(&record);
            return error(&format!("refused: {why}"));
        }
        if let Count::Progress { have, need } = count {
            let progress = format!("approval {have} of {need}");
            if let Some(stderr) = &hold.stderr {
                notice::write(
                    stderr,
                    &format!(
                        "agent-guard: request {id}: {progress}, by {}; still held.\n",
                        approver.display
                    ),
                );
            }
            let hold = self.holds.get(id).expect("present");
            let mut record = hold.record(AuditEvent::Approve);
            record.decision = Some(AuditDecision::Hold);
            record.approver = Some(approver.display);
            record.channel = Some(approver.channel);
            record.reason = Some(progress);
            self.audit.write(&record);
            return Response::Decided {
                id: id.to_string(),
                state: HoldState::Held,
            };
        }
        let hold = self.holds.remove(id).expect("present");
        if !hold.process.is_alive() {
            let approver = Some(approver.display);
            self.finish(self.hold_ending(&hold), Outcome::Exited { approver });
            return error(&format!("request {id}: the process has already exited"));
        }
        let mut record = hold.record(AuditEvent::Approve);
        record.decision = Some(AuditDecision::Allow);
        record.approver = Some(approver.display.clone());
        record.channel = Some(approver.channel);
        self.audit.write(&record);
        let approver = approver.display;
        self.finish(self.hold_ending(&hold), Outcome::Approved { approver });
        Response::Decided {
            id: id.to_string(),
            state: HoldState::Approved,
        }
    }

    /// The checks of a local approval that need no person; Ok says how the
    /// approver must still prove a person (done without the lock).
    pub fn check_local_approver(&mut self, peer: Peer, id: &str) -> Result<Reauth, Response> {
        self.authorize(peer, id, "approve")?;
        let hold = self.holds.get(id).expect("authorize checked the id");
        let agent_uid = Some(peer.uid) == hold.request.uid || self.sessions.runs_agents(peer.uid);
        if !agent_uid {
            return Ok(Reauth::NotNeeded);
        }
        let user = nix::unistd::User::from_uid(peer.uid.into())
            .ok()
            .flatten()
            .map(|user| user.name);
        Ok(reauth(self.same_uid_auth(), peer.uid, user))
    }

    /// How an approver whose uid runs agent sessions proves a person here.
    pub(in crate::guard) fn same_uid_auth(&self) -> SameUidAuth {
        let settings = &self.policy.approvals;
        same_uid_auth(
            settings.local_auth,
            &settings.pam_service,
            crate::pam::availability(&settings.pam_service),
        )
    }

    /// A local approval whose re-authentication failed: refused and audited.
    pub fn refuse_local_approval(&mut self, peer: Peer, id: &str, why: &str) -> Response {
        let Some(hold) = self.holds.get(id) else {
            return error(&format!("no pending request {id}"));
        };
        tracing::warn!(id, "refused approve: {why}");
        let mut record = hold.record(AuditEvent::Refuse);
        record.approver = Some(identity(peer));
        record.channel = Some(Channel::Socket);
        record.decision = Some(AuditDecision::RefusedRequest("approve".into()));
        record.reason = Some(why.to_string());
        self.audit.write(&record);
        error(&format!("refused: {why}"))
    }

    pub fn deny(&mut self, peer: Peer, id: &str, reason: Option<String>) -> Response {
        match self.authorize(peer, id, "deny") {
            Ok(approver) => self.end_denied(id, approver, Channel::Socket, reason),
            Err(response) => response,
        }
    }

    /// One authorised deny ends the request: the process is killed unrun.
    fn end_denied(
        &mut self,
        id: &str,
        approver: String,
        channel: Channel,
        reason: Option<String>,
    ) -> Response {
        let hold = self.holds.remove(id).expect("the caller checked the id");
        let outcome = Outcome::Denied {
            approver,
            channel,
            reason,
        };
        self.finish(self.hold_ending(&hold), outcome);
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
        .or_else(|| {
            let terminal = verb == "approve" && self.policy.approvals.require_terminal;
            terminal.then(|| self.terminal_refusal(peer.pid?)).flatten()
        })
        .or_else(|| {
            let owner = self
                .sessions
                .owner_of(hold.request.session)
                .or(hold.request.uid);
            local_refusal(hold, peer, owner, verb)
        });
        if let Some(why) = refusal {
            tracing::warn!(id, identity, "refused {verb}: {why}");
            let mut record = hold.record(AuditEvent::Refuse);
            record.approver = Some(identity);
            record.channel = Some(Channel::Socket);
            record.decision = Some(AuditDecision::RefusedRequest(verb.into()));
            record.reason = Some(why.clone());
            self.audit.write(&record);
            return Err(error(&format!("refused: {why}")));
        }
        Ok(identity)
    }

    /// `require_terminal`: the approver must have a controlling terminal, and
    /// no process of an agent session may have the same one (it could type
    /// into it or read what is shown there).
    fn terminal_refusal(&self, pid: u32) -> Option<String> {
        let tty = match procfs::stat(pid) {
            Ok(stat) if stat.tty_nr != 0 => stat.tty_nr,
            Ok(_) => {
                return Some("require_terminal: the caller has no controlling terminal".to_string())
            }
            Err(err) => return Some(format!("require_terminal: cannot read the caller: {err}")),
        };
        procfs::all_pids().into_iter().find_map(|other| {
            let same = procfs::stat(other).is_ok_and(|stat| stat.tty_nr == tty);
            let (inside, session) = self.session_ancestor(other).filter(|_| same)?;
            Some(format!(
                "require_terminal: the caller's terminal is also used by pid {other}, in agent session {session} (via pid {inside})"
            ))
        })
    }
}
