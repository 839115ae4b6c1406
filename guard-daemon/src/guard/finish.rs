//! Every end of a stop or a hold goes through `finish`: it picks the signal
//! (let it go on, or end it unrun), drops the kernel's record of the stop,
//! tells the process's terminal, and writes exactly one final audit record.
//! The order is fixed here, not at each caller: notice, signal, kernel
//! entry, audit. A gated call is answered through the gate (which writes its
//! decision into the kernel before it continues the process).
use std::os::fd::OwnedFd;

use guard_common::FileKey;

use crate::{
    audit::{AuditDecision, AuditEvent, AuditRecord, Channel},
    escape::escape_bytes,
    freezer::Frozen,
    holds::{ApiStopped, GateHold, GateWaiter, Hold},
    kernel::Continuation,
    process::{Pidfd, ProcessHandle},
};

/// What is ending.
pub(crate) struct Ending<'a> {
    pub pid: u32,
    pub held: Held<'a>,
    /// The request id, for holds that were raised.
    pub request: Option<String>,
    /// What did not run (or ran): the command, or the gated call.
    pub subject: String,
    /// Where notices go: the process's stderr (a pipe or terminal).
    pub stderr: Option<&'a OwnedFd>,
    /// The record's subject fields (pid, argv, rule, ...); `finish` adds
    /// the event, decision and reason.
    pub record: AuditRecord,
}

/// How the process is held.
pub(crate) enum Held<'a> {
    /// Stopped at exec (SIGSTOP, and ptrace-stop when `traced`, or in a
    /// frozen cgroup leaf); no process when it is gone already.
    Exec {
        process: Option<&'a dyn Signals>,
        traced: bool,
        frozen: Option<&'a Frozen>,
    },
    /// A system call waiting in the syscall gate.
    Call { hold: &'a Hold, gate: &'a GateHold },
    /// A client call an API probe stopped: let go, it goes on; refused, it
    /// returns its function's error value unsent.
    Api {
        process: &'a ProcessHandle,
        stopped: &'a ApiStopped,
    },
    /// A system call the BPF LSM stopped that is no raised hold (decided at
    /// once); no process when it is gone already.
    LsmCall {
        process: Option<&'a ProcessHandle>,
        root: FileKey,
        start_ns: u64,
    },
}

/// The two signals an end can send to a process stopped at exec.
pub(crate) trait Signals {
    fn resume(&self) -> std::io::Result<()>;
    fn kill(&self) -> std::io::Result<()>;
}

impl Signals for ProcessHandle {
    fn resume(&self) -> std::io::Result<()> {
        ProcessHandle::resume(self)
    }
    fn kill(&self) -> std::io::Result<()> {
        ProcessHandle::kill(self)
    }
}

impl Signals for Pidfd {
    fn resume(&self) -> std::io::Result<()> {
        Pidfd::resume(self)
    }
    fn kill(&self) -> std::io::Result<()> {
        Pidfd::kill(self)
    }
}

/// How it ends.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The policy lets it run; `audited` for the `audit` action.
    PolicyAllowed { audited: bool },
    /// The policy forbids it, with the rule's message.
    PolicyDenied { message: String },
    /// The last approval it needed came from `approver`.
    Approved { approver: String },
    /// A person denied it.
    Denied {
        approver: String,
        channel: Channel,
        reason: Option<String>,
    },
    /// No decision in time; `allow`: the rule's `on_timeout = "allow"`.
    TimedOut { waited: String, allow: bool },
    /// It ended before it was let go (`approver`: as it was approved).
    Exited { approver: Option<String> },
    /// It cannot be judged or kept held: ended unrun.
    FailedClosed { why: String },
    /// Another process (or the kernel) let it run before a decision.
    Continued(Continuation),
    /// Running already, let go by an earlier guardd: left alone.
    LetGo,
    /// Gone before it was judged: nothing ran, nothing to say.
    Gone,
    /// `guardd --teardown` removed the guard under it.
    TornDown { continued: Option<Continuation> },
}

/// What `finish` does to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Release,
    Refuse,
    None,
}

/// The kernel and process side of an end (a small seam, so the sequence is
/// unit-tested without root).
pub(crate) trait Effects {
    /// Lets it go on: out of ptrace-stop or its frozen leaf and SIGCONT,
    /// or the gate's allow.
    fn release(&mut self, ending: &Ending<'_>);
    /// Ends it unrun: SIGKILL (through the tracer when traced), or EPERM
    /// from the gate.
    fn refuse(&mut self, ending: &Ending<'_>);
    /// Drops the kernel's record of the stop.
    fn forget(&mut self, ending: &Ending<'_>);
    fn notice(&mut self, ending: &Ending<'_>, text: &str);
    fn audit(&mut self, record: &AuditRecord);
}

const LET_GO: &str = "recorded as stopped at exec but running, let go by an earlier guardd: \
                      neither held again nor ended";

/// Ends `ending` as `outcome` says.
pub(crate) fn finish(effects: &mut impl Effects, mut ending: Ending<'_>, outcome: Outcome) {
    let id = ending.request.clone().unwrap_or_default();
    let (signal, notice) = plan(&ending, &outcome, &id);
    log(&ending, &outcome);
    if let Some(text) = notice {
        effects.notice(&ending, &text);
    }
    match signal {
        Signal::Release => effects.release(&ending),
        Signal::Refuse => effects.refuse(&ending),
        Signal::None => {}
    }
    // A gated call's kernel entry goes with its answer; one that ended
    // unanswered leaves it behind.
    let exec = matches!(ending.held, Held::Exec { .. } | Held::Api { .. });
    if exec || signal == Signal::None {
        effects.forget(&ending);
    }
    if let Some(record) = record(&mut ending.record, outcome) {
        effects.audit(record);
    }
}

/// The signal and the notice for an outcome.
fn plan(ending: &Ending<'_>, outcome: &Outcome, id: &str) -> (Signal, Option<String>) {
    let subject = &ending.subject;
    let refused = |what: String| {
        let tail = match ending.held {
            Held::Exec { .. } => format!("`{subject}` did not run"),
            Held::Api { .. } => format!("`{subject}` was not sent: the call failed"),
            _ => format!("`{subject}` failed with EPERM"),
        };
        Some(format!("agent-guard: {what}. {tail}.\n"))
    };
    match outcome {
        Outcome::PolicyAllowed { .. } => (Signal::Release, None),
        Outcome::PolicyDenied { message } => (
            Signal::Refuse,
            Some(format!(
                "agent-guard: denied `{subject}` (rule {}): {}. {}.\n",
                ending.record.rule.as_deref().unwrap_or("-"),
                escape_bytes(message.as_bytes()),
                match ending.held {
                    Held::Exec { .. } => "It did not run",
                    Held::Api { .. } => "It was not sent: the call failed",
                    _ => "It failed with EPERM",
                }
            )),
        ),
        Outcome::Approved { approver } => (
            Signal::Release,
            Some(format!(
                "agent-guard: request {id} approved by {approver}; running.\n"
            )),
        ),
        Outcome::Denied {
            approver, reason, ..
        } => {
            let because = reason
                .as_deref()
                .map(|r| format!(": {}", escape_bytes(r.as_bytes())))
                .unwrap_or_default();
            (
                Signal::Refuse,
                refused(format!("request {id} denied by {approver}{because}")),
            )
        }
        Outcome::TimedOut { allow: true, .. } => (
            Signal::Release,
            Some(format!(
                "agent-guard: request {id} timed out; its rule lets it run.\n"
            )),
        ),
        Outcome::TimedOut { waited, .. } => (
            Signal::Refuse,
            refused(format!(
                "request {id} timed out after {waited} without approval and was denied"
            )),
        ),
        Outcome::Exited { .. } | Outcome::LetGo | Outcome::Gone => (Signal::None, None),
        Outcome::FailedClosed { .. } => (Signal::Refuse, None),
        Outcome::Continued(continuation) => (
            Signal::Refuse,
            Some(format!(
                "agent-guard: {}: it ran without a decision. Killed (fail closed).\n",
                continuation.describe()
            )),
        ),
        Outcome::TornDown { continued } => (
            Signal::Refuse,
            Some(match continued {
                None => "agent-guard: removed (teardown); the held command is denied. It did \
                         not run.\n"
                    .to_string(),
                Some(c) => format!(
                    "agent-guard: removed (teardown); the held command is denied. {}: it ran \
                     without a decision.\n",
                    c.describe()
                ),
            }),
        ),
    }
}

/// The final record, or None for a plain allow (not audited by design).
fn record(record: &mut AuditRecord, outcome: Outcome) -> Option<&AuditRecord> {
    use AuditDecision::{Allow, Deny, Exited};
    let (event, decision) = match &outcome {
        Outcome::PolicyAllowed { audited: false } | Outcome::Gone => return None,
        Outcome::PolicyAllowed { audited: true } => (AuditEvent::Audit, Some(Allow)),
        Outcome::PolicyDenied { .. } | Outcome::Denied { .. } => (AuditEvent::Deny, Some(Deny)),
        Outcome::Approved { .. } => (AuditEvent::Release, None),
        Outcome::TimedOut { allow: true, .. } => (AuditEvent::Timeout, Some(Allow)),
        Outcome::TimedOut { .. } => (AuditEvent::Timeout, Some(Deny)),
        Outcome::Exited { .. } => (AuditEvent::Exit, Some(Exited)),
        Outcome::FailedClosed { .. } | Outcome::Continued(_) => (AuditEvent::Error, Some(Deny)),
        Outcome::LetGo => (AuditEvent::Error, None),
        Outcome::TornDown { .. } => (AuditEvent::Deny, Some(Deny)),
    };
    record.event = Some(event);
    record.decision = decision;
    match outcome {
        Outcome::PolicyAllowed { .. } | Outcome::Gone => {}
        Outcome::PolicyDenied { message } => record.reason = Some(message),
        Outcome::Approved { approver } => record.approver = Some(approver),
        Outcome::Denied {
            approver,
            channel,
            reason,
        } => {
            record.approver = Some(approver);
            record.channel = Some(channel);
            record.reason = reason;
        }
        Outcome::TimedOut { waited, allow } => {
            record.reason = Some(if allow {
                format!("no decision within {waited}; on_timeout = allow")
            } else {
                format!("no decision within {waited}")
            });
        }
        Outcome::Exited { approver: None } => {
            record.reason = Some("the held process ended before a decision".into());
        }
        Outcome::Exited { approver } => record.approver = approver,
        Outcome::FailedClosed { why } => {
            record.reason = Some(format!("{why}; killed (fail closed)"));
        }
        Outcome::Continued(continuation) => {
            record.reason = Some(format!(
                "{}: it ran without a decision; killed (fail closed)",
                continuation.describe()
            ));
        }
        Outcome::LetGo => record.reason = Some(LET_GO.into()),
        Outcome::TornDown { continued } => {
            record.reason = Some(match continued {
                None => "guardd --teardown".into(),
                Some(c) => format!(
                    "guardd --teardown; {}: it ran without a decision",
                    c.describe()
                ),
            });
        }
    }
    Some(record)
}

fn log(ending: &Ending<'_>, outcome: &Outcome) {
    let pid = ending.pid;
    let id = ending.request.as_deref().unwrap_or("-");
    match outcome {
        Outcome::Approved { approver } => tracing::info!(id, pid, approver, "approved"),
        Outcome::Denied { approver, .. } => tracing::info!(id, pid, approver, "denied"),
        Outcome::TimedOut { allow, .. } => tracing::info!(id, pid, allow, "timed out"),
        Outcome::FailedClosed { why } => tracing::error!(pid, "{why}: killing it"),
        Outcome::Continued(c) => tracing::error!(pid, "{}: killing it", c.describe()),
        Outcome::LetGo => tracing::warn!(pid, "{LET_GO}"),
        _ => {}
    }
}

impl super::Guard {
    pub(super) fn finish(&mut self, ending: Ending<'_>, outcome: Outcome) {
        finish(self, ending, outcome);
    }

    /// The ending of a raised hold (taken out of the registry).
    pub(super) fn hold_ending<'a>(&self, hold: &'a Hold) -> Ending<'a> {
        let (held, subject) = match (&hold.gate, &hold.api) {
            (Some(gate), _) => (Held::Call { hold, gate }, gate.operation.clone()),
            (None, Some(stopped)) => (
                Held::Api {
                    process: &hold.process,
                    stopped,
                },
                stopped.call.clone(),
            ),
            (None, None) => (
                Held::Exec {
                    process: Some(&hold.process),
                    traced: hold.traced,
                    frozen: hold.frozen.as_ref(),
                },
                hold.command(),
            ),
        };
        Ending {
            pid: hold.process.pid,
            held,
            request: Some(hold.id.clone()),
            subject,
            stderr: hold.stderr.as_ref(),
            record: hold.record(AuditEvent::Hold),
        }
    }
}

/// The ending of a call the BPF LSM stopped that is no raised hold, with
/// `record` as its record's subject.
pub(super) fn lsm_call_ending<'a>(
    process: Option<&'a ProcessHandle>,
    pid: u32,
    root: FileKey,
    start_ns: u64,
    subject: String,
    record: AuditRecord,
) -> Ending<'a> {
    Ending {
        pid,
        held: Held::LsmCall {
            process,
            root,
            start_ns,
        },
        request: None,
        subject,
        stderr: None,
        record,
    }
}

/// The ending of an exec stop that is no raised hold (`request`: the saved
/// request, id and rule, it ends after a restart), with a bare record.
pub(super) fn stop_ending<'a>(
    pid: u32,
    process: Option<&'a dyn Signals>,
    session: u32,
    request: Option<(&str, &str)>,
    stderr: Option<&'a OwnedFd>,
) -> Ending<'a> {
    let mut record = AuditRecord::new(AuditEvent::Error);
    record.pid = Some(pid);
    record.session = Some(session);
    record.request_id = request.map(|(id, _)| id.to_string());
    record.rule = request.map(|(_, rule)| rule.to_string());
    Ending {
        pid,
        held: Held::Exec {
            process,
            traced: false,
            frozen: None,
        },
        request: request.map(|(id, _)| id.to_string()),
        subject: String::new(),
        stderr,
        record,
    }
}

impl super::Guard {
    /// A held system call's answer, through its gate.
    fn answer_call(&mut self, ending: &Ending<'_>, allowed: bool) {
        match ending.held {
            Held::Exec { .. } => {}
            Held::Api { process, stopped } => self.answer_api_call(process, stopped, allowed),
            Held::Call { hold, gate } => self.answer_gate(hold, gate, allowed),
            Held::LsmCall {
                process: Some(process),
                root,
                start_ns,
            } => self.answer_lsm_call(process, root, start_ns, allowed, &ending.record),
            Held::LsmCall { process: None, .. } => {}
        }
    }
}

/// The effects on the real kernel and processes.
impl Effects for super::Guard {
    fn release(&mut self, ending: &Ending<'_>) {
        match ending.held {
            Held::Exec {
                process,
                traced,
                frozen,
            } => {
                // Thawed first: detached while v1-frozen, a task would thaw
                // back into ptrace-stop with no tracer, stopped for good.
                if let Some(frozen) = frozen {
                    self.thaw(frozen, ending.pid);
                }
                if traced {
                    if let Err(err) = self.tracer.detach(ending.pid) {
                        tracing::error!(pid = ending.pid, "ptrace detach failed: {err}");
                    }
                }
                self.exec_gate.resumed_at = Some(super::monotonic_ns());
                if let Some(Err(err)) = process.map(|p| p.resume()) {
                    tracing::error!(pid = ending.pid, "resume failed: {err}");
                }
            }
            _ => self.answer_call(ending, true),
        }
    }

    fn refuse(&mut self, ending: &Ending<'_>) {
        match ending.held {
            Held::Exec {
                traced,
                process,
                frozen,
            } => {
                // The leaf first: a v1 frozen task dies only once thawed,
                // and the tracer waits for the exit.
                if let (Some(frozen), Ok(freezer)) = (frozen, &self.freezer) {
                    freezer.kill(frozen);
                }
                if traced {
                    self.tracer.kill(ending.pid);
                } else if let Some(Err(err)) = process.map(|p| p.kill()) {
                    tracing::error!(pid = ending.pid, "kill failed: {err}");
                }
            }
            _ => self.answer_call(ending, false),
        }
    }

    fn forget(&mut self, ending: &Ending<'_>) {
        match ending.held {
            Held::Exec { .. } => match self.exec_gate.resumed_at.take() {
                Some(at) => self.kernel.forget_held_before(ending.pid, at),
                None => self.kernel.forget_held(ending.pid),
            },
            Held::Call { gate, .. } => {
                if matches!(gate.waiter, GateWaiter::Lsm { .. }) {
                    self.kernel.forget_gate_held(ending.pid);
                }
            }
            Held::LsmCall { .. } => self.kernel.forget_gate_held(ending.pid),
            Held::Api { stopped, .. } => self
                .kernel
                .forget_api_held(stopped.tid, stopped.entry.ktime_ns),
        }
    }

    fn notice(&mut self, ending: &Ending<'_>, text: &str) {
        if let Some(stderr) = ending.stderr {
            crate::notice::write(stderr, text);
        }
    }

    fn audit(&mut self, record: &AuditRecord) {
        self.audit.write(record);
    }
}

#[cfg(test)]
mod tests;
