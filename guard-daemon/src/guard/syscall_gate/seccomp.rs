//! Gated system calls (see `crate::seccomp`): protected paths are held as one
//! request per process and protected tree; the decision answers every call
//! waiting on it and the later calls of that process there.
use super::*;
use crate::{
    holds::{GateGroup, GateHold, GateWaiter},
    policy::protect::{Places, Protected, ProtectedSet},
    seccomp::{Call, Listener, Verdict},
};

/// A protected call to hold, with what was read about its process.
pub(in crate::guard) struct GateRequest {
    /// `unlink`, `rename`, ...
    pub operation_name: &'static str,
    pub waiter: GateWaiter,
    pub process: ProcessHandle,
    pub request: Request,
    pub protection: crate::policy::protect::Protection,
    pub group: GateGroup,
    pub operation: String,
    pub record: AuditRecord,
}

impl Guard {
    /// The session a `gate_syscalls` caller belongs to (by the kernel's map).
    pub fn gate_session(&mut self, peer: Peer) -> Result<u32, Response> {
        let pid = peer
            .pid
            .filter(|pid| *pid != 0)
            .ok_or_else(|| error("cannot identify the calling process"))?;
        let session = self
            .kernel
            .session_of(pid)
            .ok_or_else(|| error("gate_syscalls: the caller is not in an agent session"))?;
        // Only the launcher that started the session, once, marks it as seen
        // by seccomp: another session process handing over a filter of its
        // own (a nested guardctl run, or an agent's dummy) gets it served, but
        // its calls stay reported.
        if !self.sessions.take_listener(session.session_id, pid) {
            return Ok(session.session_id);
        }
        // Children inherit these flags: the launcher has not exec'd yet.
        let mut flags = 0;
        if self.policy.session_escape == crate::policy::EscapeMode::Deny {
            // guardctl run asked for the escape checks just before: its
            // filter judges connects, the BPF LSM need not hold them again.
            flags |= guard_common::SESSION_ESCAPE_FILTER;
        }
        if self.seccomp_gate() {
            // Its file calls are gated: the report-only tracepoint need not
            // report them too. (A filter with the escape checks only leaves
            // file calls to the report-only tracepoint.)
            self.sessions.gate_by_seccomp(session.session_id);
            flags |= guard_common::SESSION_SECCOMP;
        }
        let flagged = SessionEntry {
            flags: session.flags | flags,
            ..session
        };
        for tid in procfs::threads(pid) {
            if let Err(err) = self.kernel.add_to_session(tid, flagged) {
                tracing::warn!(tid, "cannot mark the session's seccomp filter: {err}");
            }
        }
        Ok(session.session_id)
    }

    /// What a listener's thread needs to answer the calls no protection
    /// covers without this lock: the session owner's home and workspace,
    /// and the published entries. None (every call comes here) for a
    /// session without an owner.
    pub fn gate_fast_path(&mut self, session: u32) -> Option<crate::seccomp::FastPath> {
        let owner = self.sessions.owner_of(session)?;
        let workspace = self.sessions.get(session).and_then(|s| s.workspace.clone());
        if !self.gates.publishing {
            self.gates.publishing = true;
            crate::seccomp::publish(&self.gates.published, &self.policy.protections);
        }
        Some(crate::seccomp::FastPath::new(
            self.gates.published.clone(),
            home_of(owner),
            workspace,
        ))
    }

    /// The answer for a call of a process and root already decided (the
    /// decision), or already held (it waits with the others); None: new.
    pub(in crate::guard) fn known_group_verdict(
        &mut self,
        group: &GateGroup,
        call_id: u64,
    ) -> Option<Verdict> {
        if let Some(&allowed) = self.gates.decisions.get(group) {
            return Some(if allowed {
                Verdict::Continue
            } else {
                Verdict::Errno(libc::EPERM)
            });
        }
        let id = self.holds.iter().find_map(|hold| {
            let gate = hold.gate.as_ref()?;
            (gate.group == *group).then(|| hold.id.clone())
        })?;
        if let Some(GateWaiter::Seccomp { waiting, .. }) = self
            .holds
            .get_mut(&id)
            .and_then(|h| h.gate.as_mut())
            .map(|g| &mut g.waiter)
        {
            waiting.push(call_id);
        }
        Some(Verdict::Held)
    }

    pub fn on_gated_call(&mut self, listener: &std::sync::Arc<Listener>, call: Call) -> Verdict {
        let owner = self
            .sessions
            .owner_of(listener.session)
            .unwrap_or_else(|| procfs::uid(call.tid).unwrap_or(0));
        let Some((protected, path)) = self.protected(listener.session, owner, &call) else {
            return Verdict::Continue;
        };
        // Only now (it costs a read of /proc/TID/status): the process it belongs to.
        let Ok(tgid) = procfs::tgid(call.tid) else {
            return Verdict::Errno(libc::EPERM);
        };
        let protection = self.policy.protections[protected.protection].clone();
        // A hard link is judged as a rename, and named for what it is.
        let verb = match call.syscall {
            "link" | "linkat" => "link",
            _ => call.operation.name(),
        };
        let operation = format!(
            "{verb} {}",
            escape_bytes(path.as_os_str().as_encoded_bytes())
        );
        let Ok(process) = ProcessHandle::open(tgid) else {
            return Verdict::Errno(libc::EPERM);
        };
        let group = GateGroup {
            pid: process.pid,
            start_time: process.start_time,
            protection: protection.id.clone(),
            root: protected.root.clone(),
        };
        if protection.action == Action::Hold {
            // Decided or waiting already: answered without building a record
            // (deleting a tree makes thousands of these calls).
            if let Some(verdict) = self.known_group_verdict(&group, call.id) {
                return verdict;
            }
        }
        let request = self.request_of(process.pid, listener.session);
        let mut record = AuditRecord::from(&request);
        record.rule = Some(protection.id.clone());
        record.operation = Some(operation.clone());
        match protection.action {
            Action::Allow => Verdict::Continue,
            Action::Audit => {
                record.event = Some(AuditEvent::Audit);
                record.decision = Some(AuditDecision::Allow);
                self.audit.write(&record);
                Verdict::Continue
            }
            Action::Deny => {
                record.event = Some(AuditEvent::Deny);
                record.decision = Some(AuditDecision::Deny);
                record.reason = protection.message.clone();
                self.audit.write(&record);
                Verdict::Errno(libc::EPERM)
            }
            Action::Hold => {
                self.raise_gate_hold(GateRequest {
                    operation_name: verb,
                    waiter: GateWaiter::Seccomp {
                        listener: listener.clone(),
                        waiting: vec![call.id],
                    },
                    process,
                    request,
                    protection,
                    group,
                    operation,
                    record,
                });
                Verdict::Held
            }
        }
    }

    /// The first protected path of the call, by the session owner's `~` and
    /// the session's workspace.
    pub(in crate::guard) fn protected(
        &mut self,
        session: u32,
        owner: u32,
        call: &Call,
    ) -> Option<(Protected, std::path::PathBuf)> {
        if self.policy.protections.is_empty() {
            return None;
        }
        let protections = &self.policy.protections;
        let workspace = self.sessions.get(session).and_then(|s| s.workspace.clone());
        let set = (self.gates.protected_sets)
            .entry((owner, workspace.clone()))
            .or_insert_with(|| {
                let home = home_of(owner);
                let places = Places {
                    home: &home,
                    workspace: workspace.as_deref(),
                };
                ProtectedSet::new(protections, places)
            });
        let operations = || std::iter::once(call.operation).chain(call.also);
        call.paths.iter().find_map(|path| {
            operations()
                .find_map(|operation| set.find(protections, path, operation))
                .map(|found| (found, path.clone()))
        })
    }

    pub(in crate::guard) fn raise_gate_hold(&mut self, request: GateRequest) {
        let GateRequest {
            operation_name,
            waiter,
            process,
            request,
            protection,
            group,
            operation,
            mut record,
        } = request;
        self.exec_gate.stats.counts.held += 1;
        let now = Instant::now();
        let id = self.holds.next_id();
        let why = format!(
            "{} under {} (protect {})",
            operation_name,
            group.root.display(),
            protection.id
        );
        let hold = Hold {
            id: id.clone(),
            request,
            rule: protection.id.clone(),
            terms: protection.terms.clone(),
            why: vec![why],
            approved_by: Vec::new(),
            tokens_seen: Vec::new(),
            traced: false,
            frozen: None,
            protection: match waiter {
                GateWaiter::Seccomp { .. } => {
                    "seccomp: the call waits in the kernel until guardd answers".into()
                }
                GateWaiter::Lsm { .. } => {
                    "BPF LSM: the process is stopped; only guardd may continue it, and its call restarts".into()
                }
            },
            created: now,
            deadline: now + protection.terms.timeout(),
            created_unix: unix_now(),
            deadline_unix: unix_now() + protection.terms.timeout_secs,
            stderr: notice::stderr_of(&process),
            gate: Some(GateHold {
                waiter,
                group,
                operation: operation.clone(),
            }),
            api: None,
            process,
        };
        if let Some(stderr) = &hold.stderr {
            notice::write(
                stderr,
                &format!(
                    "agent-guard: held `{operation}` (request {id}, protect {}). It waits until \
                     {} approval(s) from root or the session's user, given outside this agent \
                     session; without a decision it fails in {}.{} Do not try to approve or bypass it.\n",
                    protection.id,
                    protection.terms.approvals_needed(),
                    format_duration(protection.terms.timeout()),
                    self.same_uid_auth().notice_warning(),
                ),
            );
        }
        tracing::info!(id, operation, "held a system call");
        record.event = Some(AuditEvent::Hold);
        record.request_id = Some(id);
        record.decision = Some(AuditDecision::Hold);
        record.why = hold.why.clone();
        self.audit.write(&record);
        self.holds.insert(hold);
    }

    /// Answers the calls waiting on `hold` and remembers the decision for the tree.
    pub(in crate::guard) fn answer_gate(&mut self, hold: &Hold, gate: &GateHold, allowed: bool) {
        match &gate.waiter {
            GateWaiter::Seccomp { listener, waiting } => {
                for id in waiting {
                    if allowed {
                        listener.allow(*id);
                    } else {
                        listener.refuse(*id, libc::EPERM);
                    }
                }
            }
            GateWaiter::Lsm { root, start_ns } => {
                let record = hold.record(AuditEvent::Error);
                self.answer_lsm_call(&hold.process, *root, *start_ns, allowed, &record);
            }
        }
        self.gates.decisions.insert(gate.group.clone(), allowed);
    }

    /// Forgets decisions of processes that ended.
    pub(in crate::guard) fn prune_gate_decisions(&mut self) {
        self.gates.decisions.retain(|group, _| {
            procfs::stat(group.pid).is_ok_and(|stat| stat.start_time == group.start_time)
        });
    }
}

/// The home directory of `uid` (a path that does not exist when it has none).
pub(in crate::guard) fn home_of(uid: u32) -> std::path::PathBuf {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| std::path::PathBuf::from("/nonexistent"), |u| u.dir)
}
