//! The escape checks (see `crate::seccomp::outside`): a session process may not
//! attach to, write into or take fds from a process outside its session
//! (EPERM, audited), and its connect to a multiplexer or service-manager
//! socket served from outside is held like a protected path.
use super::{syscall_gate::GateRequest, *};
use crate::{
    holds::{GateGroup, GateWaiter},
    policy::{protect::Protection, EscapeMode},
    seccomp::{
        outside::{self, EscapeCall, Server, Target},
        Listener, Verdict,
    },
};

/// The rule name in holds and audit records.
const RULE: &str = "session-escape";

impl Guard {
    /// Whether `pid` (a thread or process) is in session `session`, by the kernel's map.
    fn in_session(&self, pid: u32, session: u32) -> bool {
        self.kernel
            .session_of(pid)
            .is_some_and(|entry| entry.session_id == session)
    }

    pub fn on_escape_call(
        &mut self,
        listener: &std::sync::Arc<Listener>,
        call: EscapeCall,
    ) -> Verdict {
        if self.policy.session_escape == EscapeMode::Allow {
            return Verdict::Continue;
        }
        let session = listener.session;
        tracing::debug!(session, ?call, "escape check");
        match call.target.clone() {
            Target::Process(target) => {
                if self.in_session(target, session) {
                    return Verdict::Continue;
                }
                self.refuse_escape(session, &call, target);
                Verdict::Errno(libc::EPERM)
            }
            Target::Socket { path, kind, server } => {
                let server_pid = match server {
                    Server::Pid(pid) if self.in_session(pid, session) => return Verdict::Continue,
                    Server::Refused(errno) => return Verdict::Errno(errno),
                    Server::Pid(pid) => Some(pid),
                    Server::Unknown => None,
                };
                self.hold_connect(listener, &call, &path, kind, server_pid)
            }
        }
    }

    /// EPERM for a call on a process outside the session: audited, and said
    /// on the caller's stderr.
    fn refuse_escape(&mut self, session: u32, call: &EscapeCall, target: u32) {
        let Ok(tgid) = procfs::tgid(call.tid) else {
            return;
        };
        let Ok(process) = ProcessHandle::open(tgid) else {
            return;
        };
        let what = match call.syscall {
            "ptrace" => "ptrace attach",
            other => other,
        };
        let comm = procfs::stat(target).map_or_else(|_| "?".to_string(), |s| s.comm);
        let target_argv: Vec<String> = procfs::cmdline(target)
            .unwrap_or_default()
            .iter()
            .map(|a| escape_bytes(a))
            .collect();
        let operation = format!("{what} pid {target} ({comm}: {})", target_argv.join(" "));
        let request = self.request_of(process.pid, session);
        let mut record = AuditRecord::from(&request);
        record.event = Some(AuditEvent::Deny);
        record.decision = Some(AuditDecision::Deny);
        record.rule = Some(RULE.into());
        record.operation = Some(operation.clone());
        record.reason = Some(format!(
            "pid {target} is outside the agent session ([defaults] session_escape = \"deny\")"
        ));
        self.audit.write(&record);
        tracing::info!(
            pid = tgid,
            target,
            operation,
            "refused a call on a process outside the session"
        );
        if let Some(stderr) = notice::stderr_of(&process) {
            notice::write(
                &stderr,
                &format!(
                    "agent-guard: refused `{operation}`: that process is outside this agent \
                     session. Do not try to bypass it.\n"
                ),
            );
        }
    }

    /// Holds a seccomp-notified connect to a guarded socket served from
    /// outside the session: one request per process and socket.
    fn hold_connect(
        &mut self,
        listener: &std::sync::Arc<Listener>,
        call: &EscapeCall,
        path: &std::path::Path,
        kind: &'static str,
        server: Option<u32>,
    ) -> Verdict {
        let Ok(tgid) = procfs::tgid(call.tid) else {
            return Verdict::Errno(libc::EPERM);
        };
        let Ok(process) = ProcessHandle::open(tgid) else {
            return Verdict::Errno(libc::EPERM);
        };
        let group = connect_group(&process, path);
        if let Some(verdict) = self.known_group_verdict(&group, call.id) {
            return verdict;
        }
        let waiter = GateWaiter::Seccomp {
            listener: listener.clone(),
            waiting: vec![call.id],
        };
        self.raise_connect_hold(listener.session, process, waiter, path, kind, server);
        Verdict::Held
    }

    /// A connect the BPF LSM stopped (`escape_unix_stream_connect`: a unix
    /// socket served from outside the session): held if the socket is a
    /// guarded one, let through at once if not, refused if unreadable.
    pub(super) fn raise_lsm_connect(
        &mut self,
        process: ProcessHandle,
        entry: guard_common::GateHeldEntry,
    ) {
        let request = self.request_of(process.pid, entry.session_id);
        let mut record = AuditRecord::from(&request);
        record.rule = Some(RULE.into());
        record.operation = Some("connect (unix socket served from outside)".into());
        let subject = "connect".to_string();
        let target = match outside::stopped_connect(entry.tid, entry.root) {
            Ok(target) => target,
            Err(why) => {
                tracing::warn!(pid = process.pid, "escape check: {why}; connect refused");
                let (root, start_ns) = (entry.root, entry.start_ns);
                let ending =
                    lsm_call_ending(Some(&process), process.pid, root, start_ns, subject, record);
                let message = format!("the call could not be read: {why}");
                return self.finish(ending, Outcome::PolicyDenied { message });
            }
        };
        let guarded = match target {
            _ if self.policy.session_escape == EscapeMode::Allow => None,
            Some(Target::Socket { path, kind, server }) => match server {
                Server::Pid(pid) if self.in_session(pid, entry.session_id) => None,
                // Nobody listens any more: the kernel fails the call itself.
                Server::Refused(_) => None,
                Server::Pid(pid) => Some((path, kind, Some(pid))),
                Server::Unknown => Some((path, kind, None)),
            },
            _ => None,
        };
        let Some((path, kind, server)) = guarded else {
            let (root, start_ns) = (entry.root, entry.start_ns);
            let ending =
                lsm_call_ending(Some(&process), process.pid, root, start_ns, subject, record);
            return self.finish(ending, Outcome::PolicyAllowed { audited: false });
        };
        let waiter = GateWaiter::Lsm {
            root: entry.root,
            start_ns: entry.start_ns,
        };
        self.raise_connect_hold(entry.session_id, process, waiter, &path, kind, server);
    }

    fn raise_connect_hold(
        &mut self,
        session: u32,
        process: ProcessHandle,
        waiter: GateWaiter,
        path: &std::path::Path,
        kind: &'static str,
        server: Option<u32>,
    ) {
        let served = match server {
            Some(pid) => format!("{kind} server pid {pid}, outside the session"),
            None => format!("{kind} server unknown, judged as outside the session"),
        };
        let operation = format!(
            "connect {} ({served})",
            escape_bytes(path.as_os_str().as_encoded_bytes())
        );
        let protection = Protection {
            id: RULE.into(),
            paths: Vec::new(),
            except: Vec::new(),
            fallback: false,
            action: Action::Hold,
            operations: Vec::new(),
            terms: crate::policy::HoldTerms::gate(1, self.policy.hold_timeout),
            message: None,
        };
        let request = self.request_of(process.pid, session);
        let mut record = AuditRecord::from(&request);
        record.rule = Some(RULE.into());
        record.operation = Some(operation.clone());
        self.raise_gate_hold(GateRequest {
            operation_name: "connect",
            waiter,
            group: connect_group(&process, path),
            process,
            request,
            protection,
            operation,
            record,
        });
    }
}

/// One process on one guarded socket.
fn connect_group(process: &ProcessHandle, path: &std::path::Path) -> GateGroup {
    GateGroup {
        pid: process.pid,
        start_time: process.start_time,
        protection: RULE.into(),
        root: path.to_path_buf(),
    }
}
