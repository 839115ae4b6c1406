//! The API-client gate's half in guardd: a client call an API probe stopped
//! is read from the process's memory, judged by the `[[api]]` rules, and
//! let go, failed, or raised as a hold. A denied call returns its
//! function's error value without sending anything (the tracer rewrites
//! the return); the process goes on. What cannot be read is held, never let
//! through.
use std::collections::HashMap;

use guard_common::{ApiHeldEntry, ApiHook, ApiWriteEvent, API_COOKIE_HOOK};

mod release;

use super::*;
use crate::{
    api::{
        conns::{Conns, KernelConn, READ_LIMIT},
        memory::{pq_database, read_c_string, read_memory, shared_writable},
    },
    holds::ApiStopped,
    kernel::FileId,
    policy::api::ApiCall,
    state::SavedHold,
};

/// How long a decision on a call also answers the client's identical
/// retries (an SDK retries a failed or refused call on a new connection).
const RETRY_WINDOW: Duration = Duration::from_secs(60);
/// How often the probes of Go programs that are gone are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// Bytes of an SQL text guardd reads.
const SQL_LIMIT: usize = 1 << 20;
/// The rule id of a call that could not be read whole.
const UNREADABLE_RULE: &str = "api-unreadable";

#[derive(Default)]
pub(super) struct ApiGate {
    conns: Conns,
    /// (session, call) -> (allowed, when decided).
    decided: HashMap<(u32, String), (bool, Instant)>,
    /// Threads stopped at a call that guardd took into ptrace-stop before
    /// it continued another thread of their process (see `keep_other_stops`).
    seized: std::collections::HashSet<u32>,
    /// Programs session processes executed that were looked into for a TLS
    /// of their own.
    images_seen: std::collections::HashSet<FileId>,
    /// When the probes of programs that are gone were last looked for.
    pruned: Option<Instant>,
    /// When API_HELD is next read for stops whose event was lost.
    held_scan: super::map_scan::MapScan,
}

impl Guard {
    pub(super) fn on_api_event(&mut self, kind: EventKind, event: &Event) {
        match kind {
            EventKind::ApiConnClosed => self.api.conns.forget(event.pid, event.root.ino),
            _ => {
                let Some(entry) = self.kernel.api_held(event.tid) else {
                    return; // decided already (raised from the map)
                };
                self.on_api_stop(event.tid, entry, kind == EventKind::ApiStopFailed);
            }
        }
    }

    fn on_api_stop(&mut self, tid: u32, entry: ApiHeldEntry, stop_failed: bool) {
        if self.holds.holds_api_stop(tid, entry.ktime_ns) {
            return;
        }
        let traced = self.api.seized.remove(&tid);
        let Ok(process) = ProcessHandle::open(entry.pid) else {
            self.kernel.forget_api_held(tid, entry.ktime_ns);
            return;
        };
        match hook_of(&entry) {
            Some(ApiHook::Dlopen) => return self.on_library_loaded(&process, tid, &entry, traced),
            Some(hook) if crate::kernel::api_hook_starts_tls(hook) => {
                return self.on_tls_start(&process, tid, &entry, traced)
            }
            _ => {}
        }
        let (calls, unreadable) = self.read_api_call(&entry);
        let session = entry.session_id;
        let judged: Vec<(ApiCall, Explanation)> = calls
            .into_iter()
            .map(|call| {
                let explanation = self.judge_api_call(session, &call);
                (call, explanation)
            })
            .collect();
        let worst = judged
            .iter()
            .max_by_key(|(_, e)| e.action)
            .cloned()
            .filter(|(_, e)| e.action != Action::Allow || unreadable.is_none());
        let (call, explanation) = match (worst, unreadable) {
            (Some(judged), None) => judged,
            (Some(judged), Some(_)) if judged.1.action == Action::Deny => judged,
            (_, Some(why)) => (
                ApiCall::default(),
                unreadable_explanation(&self.policy, why),
            ),
            (None, None) => (ApiCall::default(), crate::policy::allowed(String::new())),
        };
        let stats = &mut self.exec_gate.stats;
        stats.counts.api_stops += 1;
        stats
            .api_decision_us
            .push(monotonic_ns().saturating_sub(entry.ktime_ns) / 1000);
        let stopped = ApiStopped {
            tid,
            entry,
            traced,
            held: false,
            call: call.describe(),
            retry_key: (session, call.describe()),
        };
        if explanation.action == Action::Allow {
            self.answer_api_call(&process, &stopped, true);
            // As at an exec: a stop another process continued ran already,
            // and what was judged may be what its buffer holds since.
            if let Some(continuation) = self.api_continued(&entry) {
                self.end_continued(&process, session, continuation, None);
            }
            return;
        }
        if let Some(continuation) = self.api_continued(&entry) {
            self.end_continued(&process, session, continuation, None);
            return;
        }
        let request = self.request_of(process.pid, session);
        let mut record = AuditRecord::from(&request);
        record.rule = explanation.rule.clone();
        record.operation = Some(stopped.call.clone());
        record.why = explanation.why.clone();
        if stop_failed {
            // Nothing stopped the call: it went on. Said, not hidden.
            record.event = Some(AuditEvent::Error);
            record.reason = Some("bpf_send_signal failed: the API call was not stopped".into());
            self.audit.write(&record);
            self.kernel.forget_api_held(tid, entry.ktime_ns);
            return;
        }
        let stderr = notice::stderr_of(&process);
        let outcome = match explanation.action {
            Action::Allow | Action::Audit => Outcome::PolicyAllowed { audited: true },
            Action::Deny => Outcome::PolicyDenied {
                message: explanation
                    .message
                    .clone()
                    .unwrap_or_else(|| "the policy forbids it".into()),
            },
            Action::Hold => {
                return self.raise_api_hold(process, stopped, request, &explanation, record, None)
            }
        };
        let ending = Ending {
            pid: process.pid,
            held: Held::Api {
                process: &process,
                stopped: &stopped,
            },
            request: None,
            subject: stopped.call.clone(),
            stderr: stderr.as_ref(),
            record,
        };
        self.finish(ending, outcome);
    }

    /// A session process stopped at its exec: a program with a TLS of its
    /// own (a Go binary: a terraform provider, kubectl, one the agent
    /// built) gets the write probe before it runs. Each file once. Err: the
    /// program has a TLS write that could not be probed (it must not run
    /// unseen).
    pub(super) fn probe_exec_image(&mut self, pid: u32) -> Result<(), String> {
        let exe = format!("/proc/{pid}/exe");
        let Ok(meta) = std::fs::metadata(&exe) else {
            return Ok(()); // gone: nothing runs
        };
        let image = FileId::of(&meta);
        if self.api.images_seen.contains(&image) {
            return Ok(());
        }
        // By its name where that names the same file here, else (deleted, a
        // memfd, another mount namespace's path) through the process's link,
        // which the kernel resolves to the file itself.
        let path = std::fs::read_link(&exe)
            .ok()
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| FileId::of(&m) == image))
            .unwrap_or_else(|| exe.into());
        let attached = self.kernel.attach_api(&path);
        if attached.is_ok() {
            self.api.images_seen.insert(image);
        }
        match attached {
            Ok(Some(target)) => {
                tracing::info!(
                    pid,
                    file = %target.path.display(),
                    "API probes attached to a program a session runs"
                );
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(err) => Err(format!(
                "could not probe {} that the process runs: {err}",
                path.display()
            )),
        }
    }

    /// The programs session `only` (every session when None) runs now: at
    /// guardd's start (the probes of programs found at exec were removed
    /// with the previous guardd's links) and when a session is adopted.
    pub(super) fn probe_session_programs(&mut self, only: Option<u32>) {
        for tid in self.kernel.session_tasks(only) {
            if let Err(why) = self.probe_exec_image(tid) {
                tracing::error!(tid, "a session task runs unprobed: {why}");
            }
        }
    }

    /// A session process mapped a library: any client library among its
    /// mappings that has no probes yet gets them before it goes on.
    fn on_library_loaded(
        &mut self,
        process: &ProcessHandle,
        tid: u32,
        entry: &ApiHeldEntry,
        traced: bool,
    ) {
        for path in crate::api::libs::mapped_by(process.pid) {
            match self.kernel.attach_api(&path) {
                Ok(Some(target)) => tracing::info!(
                    pid = process.pid,
                    file = %target.path.display(),
                    "API probes attached to a library a session process loaded"
                ),
                Ok(None) => {}
                Err(err) => {
                    // Unprobed, its calls would go unseen: the process is
                    // not let go blind, and the audit log says why.
                    let why = format!(
                        "could not probe {} that the process loaded: {err}",
                        path.display()
                    );
                    tracing::error!(pid = process.pid, "{why}");
                    self.fail_closed(process, entry.session_id, &why, None);
                    self.kernel.forget_api_held(tid, entry.ktime_ns);
                    return;
                }
            }
        }
        self.kernel.forget_api_held(tid, entry.ktime_ns);
        self.let_go(process, tid, traced);
    }

    /// Resumes a process stopped at a probe for guardd's own work (a
    /// library to probe, a process to follow), other threads' stops kept.
    fn let_go(&mut self, process: &ProcessHandle, tid: u32, traced: bool) {
        if traced {
            let _ = self.tracer.detach(tid);
        }
        self.keep_other_stops(process.pid, tid);
        if let Err(err) = process.resume() {
            tracing::error!(pid = process.pid, "resume failed: {err}");
        }
    }

    /// A session process not followed yet makes a TLS connection: its
    /// threads get the write probes' events before it goes on. One that
    /// someone else continued meanwhile may have written unseen: it is
    /// killed, as is one that could not be followed.
    fn on_tls_start(
        &mut self,
        process: &ProcessHandle,
        tid: u32,
        entry: &ApiHeldEntry,
        traced: bool,
    ) {
        let followed = self.kernel.follow_process(process.pid);
        let continued = self.api_continued(entry);
        let why = match (followed, continued) {
            (Err(why), _) => Some(format!(
                "its TLS writes could not be followed ({why}): they would go unseen"
            )),
            (Ok(()), Some(continuation)) => Some(format!(
                "{} before its TLS writes were followed: they may have gone unseen",
                continuation.describe()
            )),
            (Ok(()), None) => None,
        };
        self.kernel.forget_api_held(tid, entry.ktime_ns);
        if let Some(why) = why {
            tracing::error!(pid = process.pid, "{why}");
            return self.fail_closed(process, entry.session_id, &why, None);
        }
        self.exec_gate.stats.counts.tls_follows += 1;
        self.let_go(process, tid, traced);
    }

    /// The calls in the stopped write or query, and why part of it could not
    /// be read, if so. The connection's kernel entry is set here, before
    /// the process goes on.
    fn read_api_call(&mut self, entry: &ApiHeldEntry) -> (Vec<ApiCall>, Option<String>) {
        if hook_of(entry).is_some_and(ApiHook::is_sql) {
            if shared_writable(entry.pid, entry.buf, 1) {
                let why = "the query is in memory shared with other processes";
                return (Vec::new(), Some(why.into()));
            }
            return match read_c_string(entry.pid, entry.buf, SQL_LIMIT) {
                Ok(text) => {
                    let call = ApiCall {
                        sql: Some(text),
                        database: pq_database(entry),
                        ..ApiCall::default()
                    };
                    (vec![call], None)
                }
                Err(why) => (Vec::new(), Some(why)),
            };
        }
        let want = entry.len.min(READ_LIMIT as u64) as usize;
        if shared_writable(entry.pid, entry.buf, want) {
            // Another process could change it between guardd's read and the send.
            return (
                Vec::new(),
                Some("the write's buffer is in memory shared with other processes".into()),
            );
        }
        let bytes = match read_memory(entry.pid, entry.buf, want) {
            Ok(bytes) => bytes,
            Err(err) => {
                return (
                    Vec::new(),
                    Some(format!("the write could not be read: {err}")),
                )
            }
        };
        let unread = entry.len - bytes.len() as u64;
        let read = self
            .api
            .conns
            .read_write(entry.pid, entry.conn, entry.buf, &bytes, unread);
        let mut unreadable = read.unreadable;
        if let Some(kernel) = read.kernel {
            if let Err(err) = self.kernel.set_api_conn(entry.pid, entry.conn, kernel) {
                unreadable = Some(format!(
                    "the connection's next writes could not be guarded: {err}"
                ));
                let _ = self
                    .kernel
                    .set_api_conn(entry.pid, entry.conn, KernelConn::Stop);
            }
        }
        (read.calls, unreadable)
    }

    /// The policy's decision, or the one a person made on an identical call
    /// of the same session moments ago (the client's retry).
    fn judge_api_call(&self, session: u32, call: &ApiCall) -> Explanation {
        let explanation = self.policy.judge_api(call);
        if explanation.action != Action::Hold {
            return explanation;
        }
        match self.api.decided.get(&(session, call.describe())) {
            Some((allowed, at)) if at.elapsed() < RETRY_WINDOW => {
                let mut decided = explanation;
                decided.action = if *allowed {
                    Action::Allow
                } else {
                    Action::Deny
                };
                decided.message = Some(format!(
                    "an identical call of this session was {} moments ago",
                    if *allowed { "approved" } else { "denied" }
                ));
                decided
            }
            _ => explanation,
        }
    }

    fn api_continued(&self, entry: &ApiHeldEntry) -> Option<Continuation> {
        self.kernel
            .continued_mark(entry.pid)
            // The process's latest API stop when the SIGCONT came: this one or later.
            .filter(|(_, stop)| *stop >= entry.ktime_ns)
            .map(|(continuation, _)| continuation)
    }

    /// Holds a stopped call for a person to decide; `earlier`: the hold of a
    /// previous run it continues (same id, approvals and deadline).
    fn raise_api_hold(
        &mut self,
        process: ProcessHandle,
        mut stopped: ApiStopped,
        request: Request,
        explanation: &Explanation,
        mut record: AuditRecord,
        earlier: Option<SavedHold>,
    ) {
        let now = Instant::now();
        let now_unix = unix_now();
        let timeout = explanation.terms.timeout();
        let (id, approved_by, created_unix, deadline_unix) = match &earlier {
            Some(saved) => (
                saved.id.clone(),
                saved.approved_by.clone(),
                saved.created_unix,
                saved.deadline_unix,
            ),
            None => (
                self.holds.next_id(),
                Vec::new(),
                now_unix,
                now_unix + timeout.as_secs(),
            ),
        };
        let saved_request = earlier.as_ref().map(|s| (s.id.as_str(), s.rule.as_str()));
        let mut protection = "ptrace-stop at the call: only guardd can release it".to_string();
        stopped.held = true;
        let seized = match stopped.traced {
            true => Ok(()),
            false => self.tracer.seize(stopped.tid),
        };
        match seized {
            Ok(()) => stopped.traced = true,
            Err(err) => {
                protection = format!(
                    "ptrace unavailable ({err}): held by SIGSTOP only, which others may undo"
                );
                record.reason = Some(protection.clone());
            }
        }
        if let Some(continuation) = self.api_continued(&stopped.entry) {
            if stopped.traced {
                let _ = self.tracer.detach(stopped.tid);
            }
            self.end_continued(&process, request.session, continuation, saved_request);
            return;
        }
        if let Err(why) = self.at_call_start(&stopped, stopped.traced) {
            // Its call may be under way: it cannot be held, nor failed.
            self.fail_closed(&process, request.session, &why, saved_request);
            return;
        }
        let call = stopped.call.clone();
        let hold = Hold {
            id: id.clone(),
            request,
            rule: explanation.rule.clone().unwrap_or_default(),
            terms: explanation.terms.clone(),
            why: explanation.why.clone(),
            approved_by,
            tokens_seen: Vec::new(),
            traced: false,
            frozen: None,
            protection,
            created: now - Duration::from_secs(now_unix.saturating_sub(created_unix)),
            deadline: now + Duration::from_secs(deadline_unix.saturating_sub(now_unix)),
            created_unix,
            deadline_unix,
            stderr: notice::stderr_of(&process),
            gate: None,
            api: Some(stopped),
            process,
        };
        let readopted = earlier.is_some();
        if !readopted {
            self.exec_gate.stats.counts.held += 1;
            self.tell_api_held(&hold, &call, timeout);
        }
        tracing::info!(
            id,
            pid = hold.process.pid,
            rule = hold.rule,
            call,
            readopted,
            "held an API call"
        );
        record.event = Some(match readopted {
            true => AuditEvent::Readopt,
            false => AuditEvent::Hold,
        });
        record.request_id = Some(id);
        record.decision = Some(AuditDecision::Hold);
        self.audit.write(&record);
        self.holds.insert(hold);
    }

    /// The notice on the held process's stderr.
    fn tell_api_held(&self, hold: &Hold, call: &str, timeout: Duration) {
        let Some(stderr) = &hold.stderr else {
            return;
        };
        notice::write(
            stderr,
            &format!(
                "agent-guard: held the API call `{call}` made by {} (request {}, rule {}). It \
                 is not sent until {} approval(s) from {}, given outside this agent session; \
                 without a decision it fails in {}.{} Do not try to approve or bypass it.\n",
                caller(&hold.request),
                hold.id,
                hold.rule,
                hold.terms.approvals_needed(),
                hold.terms.approvers_in_words(),
                format_duration(timeout),
                self.same_uid_auth().notice_warning(),
            ),
        );
    }

    /// A held call of a previous run, taken over as it was judged: the
    /// connection state that judged it ended with that guardd, so it is not
    /// read again. Only the same stop (thread and stop time) is taken over.
    pub(super) fn readopt_api_hold(&mut self, process: ProcessHandle, saved: SavedHold) {
        let Some(api) = saved.api.clone() else {
            return;
        };
        let stop = self
            .kernel
            .api_held(api.tid)
            .filter(|e| e.ktime_ns == api.stop_ktime_ns && e.pid == saved.pid);
        let Some(entry) = stop else {
            let request = Some((saved.id.as_str(), saved.rule.as_str()));
            if procfs::stat(saved.pid).is_ok_and(|s| s.is_stopped()) {
                // Fresh maps (another pin layout): the call cannot be answered
                // at its start any more, and must not go out unjudged.
                let why = "the kernel no longer records the held API call's stop";
                self.fail_closed(&process, saved.session, why, request);
            } else {
                // Answered by the old guardd before it saved the state.
                self.leave_let_go(saved.pid, saved.session, request);
            }
            return;
        };
        let request = self.request_of(process.pid, saved.session);
        let mut record = AuditRecord::from(&request);
        record.rule = Some(saved.rule.clone());
        record.operation = Some(api.call.clone());
        record.why = saved.why.clone();
        let stopped = ApiStopped {
            tid: api.tid,
            entry,
            traced: false,
            held: false,
            retry_key: (saved.session, api.call.clone()),
            call: api.call,
        };
        let explanation = Explanation {
            action: Action::Hold,
            rule: Some(saved.rule.clone()),
            program: String::new(),
            matched: vec![saved.rule.clone()],
            why: saved.why.clone(),
            message: None,
            terms: saved.terms.clone(),
            terms_from: Vec::new(),
            kernel: None,
        };
        self.raise_api_hold(process, stopped, request, &explanation, record, Some(saved));
    }

    /// `guardctl status`: where the probes are, and what they do not see.
    pub(super) fn api_gate_status(&self) -> (String, String) {
        let targets = self.kernel.api_targets();
        let files: Vec<String> = targets
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        let followed = self.kernel.followed_probes();
        let shown = if files.is_empty() {
            "NOT active: no OpenSSL, GnuTLS or libpq library was found to probe".to_string()
        } else {
            format!(
                "uprobes on {} file(s) ({}): TLS writes and libpq queries of session \
                 processes stop unless a lone GET/HEAD/OPTIONS or a short SELECT/SHOW; a \
                 denied OpenSSL or Go write fails inside its TLS library (Go programs: the \
                 tools in PATH at start, and every program a session runs from outside the \
                 system's program directories), other calls return their error; \
                 the {} TLS write probes ({} tracefs event(s)) trap only in session processes \
                 that made a TLS connection (SSL_new or gnutls_init stops such a process once, \
                 {}; followed now: {} session(s), {} event(s)), and not while guardd is down \
                 (held calls stay held){}",
                files.len(),
                files.join(", "),
                followed
                    .probes
                    .iter()
                    .map(|probe| probe.points)
                    .sum::<usize>(),
                followed.probes.len(),
                match followed.exec_unfollows {
                    true => "and again after each exec",
                    false => "and its descendants stay followed across execs (no remove_on_exec)",
                },
                followed.sessions,
                followed.events,
                followed
                    .missed
                    .map(|why| format!("; a session task is NOT followed: {why}"))
                    .unwrap_or_default()
            )
        };
        (
            "api_client_gate".into(),
            format!(
                "{shown}; NOT seen: Go programs built before Go 1.18, a root-owned Go program \
                 in a program directory under a name not probed at start, rustls, BoringSSL \
                 in static binaries (Bun), HTTP/2 and gRPC (read as another protocol and \
                 passed: Go's default for most cloud endpoints), plain HTTP, \
                 clients that bypass libpq (asyncpg), and client libraries loaded from \
                 elsewhere until guardd finds them mapped"
            ),
        )
    }

    /// Raises API stops whose event was lost: those older than the grace
    /// and recorded before `drained_from_ns`, when the event reader began
    /// the drain it has just handled (so that the HTTP/2 writes the kernel
    /// let through before them are read first). Whether it raised any.
    pub fn recover_api_stops(&mut self, drained_from_ns: u64) -> bool {
        let now = Instant::now();
        let kernel = &self.kernel;
        if !self.api.held_scan.due(now, || kernel.events_lost()) {
            return false;
        }
        let mut raised = false;
        let mut waiting = false;
        let grace_ns = RECOVERY_GRACE.as_nanos() as u64;
        let now_ns = monotonic_ns();
        for (tid, entry) in self.kernel.api_held_all() {
            if self.holds.holds_api_stop(tid, entry.ktime_ns) {
                continue;
            }
            if now_ns.saturating_sub(entry.ktime_ns) < grace_ns || entry.ktime_ns >= drained_from_ns
            {
                // Its event may still come: look again with the next batch.
                waiting = true;
                continue;
            }
            tracing::warn!(tid, "raising an API stop whose event was lost");
            self.on_api_stop(tid, entry, false);
            raised = true;
        }
        self.api.held_scan.done(now, waiting);
        raised
    }

    /// The kernel let an HTTP/2 write with a GET through: its header block
    /// goes into the connection's table. A request in it that is not a lone
    /// GET means the kernel's reading was wrong: said loudly.
    pub fn on_http2_passed(&mut self, write: &ApiWriteEvent) {
        let event = &write.event;
        let len = (write.len as usize).min(write.bytes.len());
        let calls =
            self.api
                .conns
                .read_passed(event.pid, event.root.ino, write.buf, &write.bytes[..len]);
        for call in calls {
            let method = call.http.as_ref().map(|h| h.method.as_str());
            if method != Some("GET") {
                let what = format!(
                    "an HTTP/2 request the kernel let through unjudged: {}",
                    call.describe()
                );
                tracing::error!(pid = event.pid, "{what}");
                let mut record = AuditRecord::new(AuditEvent::Error);
                record.pid = Some(event.pid);
                record.session = Some(event.session_id);
                record.reason = Some(what);
                self.audit.write(&record);
            }
        }
    }

    /// Forgets connections and decisions of the past.
    pub(super) fn tick_api_gate(&mut self) {
        self.api
            .decided
            .retain(|_, (_, at)| at.elapsed() < RETRY_WINDOW);
        self.api
            .conns
            .retain_processes(|pid| procfs::stat(pid).is_ok());
        self.api.seized.retain(|tid| procfs::stat(*tid).is_ok());
        if self.api.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            self.api.pruned = Some(Instant::now());
            let gone = self.kernel.prune_api_programs();
            self.api.images_seen.retain(|file| !gone.contains(file));
        }
        let marked = self.kernel.api_held_procs();
        if !marked.is_empty() {
            self.kernel.forget_api_held_procs(&marked);
        }
    }
}

/// The process making a call, and the command that started it (a
/// terraform provider's `terraform apply`): `NAME (pid N, started by `ARGV`)`.
fn caller(request: &Request) -> String {
    let parent = procfs::stat(request.pid)
        .ok()
        .and_then(|stat| procfs::cmdline(stat.ppid).ok())
        .map(|argv| {
            let words: Vec<String> = argv
                .iter()
                .map(|a| crate::escape::escape_bytes(a))
                .collect();
            let mut line = words.join(" ");
            if line.chars().count() > 120 {
                line = line.chars().take(117).collect::<String>() + "...";
            }
            format!(", started by `{line}`")
        })
        .unwrap_or_default();
    format!(
        "{} (pid {}{parent})",
        crate::escape::escape_bytes(request.program.as_bytes()),
        request.pid
    )
}

pub(super) fn hook_of(entry: &ApiHeldEntry) -> Option<ApiHook> {
    ApiHook::from_u32(entry.hook & API_COOKIE_HOOK)
}

/// A call that could not be read whole is held (never let through), with
/// the policy's default hold terms.
fn unreadable_explanation(policy: &Policy, why: String) -> Explanation {
    let mut terms = crate::policy::HoldTerms::none();
    terms.approvals = 1;
    terms.timeout_secs = policy.hold_timeout.as_secs();
    Explanation {
        action: Action::Hold,
        rule: Some(UNREADABLE_RULE.into()),
        program: String::new(),
        matched: vec![UNREADABLE_RULE.into()],
        why: vec![format!("could not be read fully: {why}")],
        message: None,
        terms,
        terms_from: Vec::new(),
        kernel: None,
    }
}
