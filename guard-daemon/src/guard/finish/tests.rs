//! The sequence of effects of each outcome, without root or a kernel.
use super::*;

/// Records each effect as a word, and the final record's event and decision.
#[derive(Default)]
struct Recorder {
    effects: Vec<String>,
}

impl Effects for Recorder {
    fn release(&mut self, _: &Ending<'_>) {
        self.effects.push("release".into());
    }
    fn refuse(&mut self, _: &Ending<'_>) {
        self.effects.push("refuse".into());
    }
    fn forget(&mut self, _: &Ending<'_>) {
        self.effects.push("forget".into());
    }
    fn notice(&mut self, _: &Ending<'_>, text: &str) {
        self.effects.push(format!("notice: {text}"));
    }
    fn audit(&mut self, record: &AuditRecord) {
        let value = serde_json::to_value(record).unwrap();
        self.effects.push(format!(
            "audit {} {} {}",
            value["event"].as_str().unwrap_or("-"),
            value["decision"].as_str().unwrap_or("-"),
            value["reason"].as_str().unwrap_or("-"),
        ));
    }
}

/// A process that must not be signalled by `finish` itself (the Recorder
/// stands for every signal).
struct NoSignals;

impl Signals for NoSignals {
    fn resume(&self) -> std::io::Result<()> {
        panic!("finish signalled the process directly")
    }
    fn kill(&self) -> std::io::Result<()> {
        panic!("finish signalled the process directly")
    }
}

fn exec_ending(process: &NoSignals) -> Ending<'_> {
    let mut record = AuditRecord::new(AuditEvent::Hold);
    record.rule = Some("rule-1".into());
    Ending {
        pid: 42,
        held: Held::Exec {
            process: Some(process),
            traced: true,
            frozen: None,
        },
        request: Some("h-1".into()),
        subject: "terraform destroy".into(),
        stderr: None,
        record,
    }
}

fn effects_of(outcome: Outcome) -> Vec<String> {
    let process = NoSignals;
    let mut recorder = Recorder::default();
    finish(&mut recorder, exec_ending(&process), outcome);
    recorder.effects
}

fn continuation() -> Continuation {
    Continuation {
        by: 7,
        from_kernel: false,
    }
}

#[test]
fn a_plain_policy_allow_releases_and_forgets_without_a_record() {
    assert_eq!(
        effects_of(Outcome::PolicyAllowed { audited: false }),
        ["release", "forget"]
    );
    assert_eq!(
        effects_of(Outcome::PolicyAllowed { audited: true }),
        ["release", "forget", "audit audit allow -"]
    );
}

#[test]
fn a_policy_denial_says_so_before_it_kills() {
    assert_eq!(
        effects_of(Outcome::PolicyDenied {
            message: "no".into()
        }),
        [
            "notice: agent-guard: denied `terraform destroy` (rule rule-1): no. It did not run.\n",
            "refuse",
            "forget",
            "audit deny deny no",
        ]
    );
}

#[test]
fn an_approval_says_so_then_releases() {
    assert_eq!(
        effects_of(Outcome::Approved {
            approver: "uid 0 (root)".into()
        }),
        [
            "notice: agent-guard: request h-1 approved by uid 0 (root); running.\n",
            "release",
            "forget",
            "audit release - -",
        ]
    );
}

#[test]
fn a_denial_by_a_person_kills_with_the_reason() {
    assert_eq!(
        effects_of(Outcome::Denied {
            approver: "alice".into(),
            channel: Channel::Socket,
            reason: Some("not now".into()),
        }),
        [
            "notice: agent-guard: request h-1 denied by alice: not now. `terraform destroy` did \
             not run.\n",
            "refuse",
            "forget",
            "audit deny deny not now",
        ]
    );
}

#[test]
fn a_timeout_denies_unless_the_rule_allows() {
    assert_eq!(
        effects_of(Outcome::TimedOut {
            waited: "5m".into(),
            allow: false
        }),
        [
            "notice: agent-guard: request h-1 timed out after 5m without approval and was \
             denied. `terraform destroy` did not run.\n",
            "refuse",
            "forget",
            "audit timeout deny no decision within 5m",
        ]
    );
    assert_eq!(
        effects_of(Outcome::TimedOut {
            waited: "5m".into(),
            allow: true
        }),
        [
            "notice: agent-guard: request h-1 timed out; its rule lets it run.\n",
            "release",
            "forget",
            "audit timeout allow no decision within 5m; on_timeout = allow",
        ]
    );
}

#[test]
fn an_exit_or_a_let_go_sends_nothing() {
    assert_eq!(
        effects_of(Outcome::Exited { approver: None }),
        [
            "forget",
            "audit exit exited the held process ended before a decision"
        ]
    );
    assert_eq!(effects_of(Outcome::Gone), ["forget"]);
    let let_go = effects_of(Outcome::LetGo);
    assert_eq!(let_go[0], "forget");
    assert!(
        let_go[1].starts_with("audit error - recorded as stopped"),
        "{let_go:?}"
    );
}

#[test]
fn fail_closed_and_continued_kill() {
    assert_eq!(
        effects_of(Outcome::FailedClosed {
            why: "unreadable".into()
        }),
        [
            "refuse",
            "forget",
            "audit error deny unreadable; killed (fail closed)"
        ]
    );
    assert_eq!(
        effects_of(Outcome::Continued(continuation())),
        [
            "notice: agent-guard: pid 7 sent the stopped process SIGCONT: it ran without a \
             decision. Killed (fail closed).\n",
            "refuse",
            "forget",
            "audit error deny pid 7 sent the stopped process SIGCONT: it ran without a \
             decision; killed (fail closed)",
        ]
    );
    let torn = effects_of(Outcome::TornDown { continued: None });
    assert_eq!(
        &torn[1..],
        ["refuse", "forget", "audit deny deny guardd --teardown"]
    );
}

/// A gated call is answered through the gate, which drops its kernel entry
/// itself; only an unanswered end (an exit) drops it here.
#[test]
fn a_gated_call_is_answered_and_forgotten_only_when_unanswered() {
    use crate::holds::{GateGroup, GateHold, GateWaiter};
    let process = crate::process::ProcessHandle::open(std::process::id()).unwrap();
    let hold = crate::holds::tests::hold_of(process);
    let gate = GateHold {
        waiter: GateWaiter::Lsm {
            root: Default::default(),
            start_ns: 1,
        },
        group: GateGroup {
            pid: hold.process.pid,
            start_time: hold.process.start_time,
            protection: "p".into(),
            root: "/x".into(),
        },
        operation: "unlink /x/y".into(),
    };
    let run = |outcome| {
        let mut recorder = Recorder::default();
        let ending = Ending {
            pid: hold.process.pid,
            held: Held::Call {
                hold: &hold,
                gate: &gate,
            },
            request: Some("h-2".into()),
            subject: gate.operation.clone(),
            stderr: None,
            record: AuditRecord::new(AuditEvent::Hold),
        };
        finish(&mut recorder, ending, outcome);
        recorder.effects
    };
    assert_eq!(
        run(Outcome::Denied {
            approver: "bob".into(),
            channel: Channel::Socket,
            reason: None
        }),
        [
            "notice: agent-guard: request h-2 denied by bob. `unlink /x/y` failed with EPERM.\n",
            "refuse",
            "audit deny deny -",
        ]
    );
    assert_eq!(
        run(Outcome::Approved {
            approver: "bob".into()
        })[1..],
        ["release", "audit release - -"]
    );
    assert_eq!(run(Outcome::Exited { approver: None })[0], "forget");
}
