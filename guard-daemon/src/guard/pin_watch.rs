//! guardd's own pins under `--pin-dir`: a process that removes them (an agent
//! as root with `rm -rf` or `shutil.rmtree`) does not detach anything while
//! guardd runs, since guardd keeps every link's fd; the pins are put back at
//! once so that the next guardd finds them, and each removal is audited.
use std::time::{Duration, Instant};

use super::*;

/// How often the pins are looked at (a stat per pin).
pub(super) const PIN_CHECK_EVERY: Duration = Duration::from_secs(1);

/// When the pins were last looked at, and how often they had to be put back.
#[derive(Default)]
pub(super) struct PinWatch {
    checked: Option<Instant>,
    repairs: u64,
}

impl PinWatch {
    /// Whether to look now; if so, counts this look.
    fn due(&mut self, now: Instant) -> bool {
        if self.checked.is_some_and(|at| now - at < PIN_CHECK_EVERY) {
            return false;
        }
        self.checked = Some(now);
        true
    }
}

impl Guard {
    pub(super) fn watch_pins(&mut self, now: Instant) {
        if !self.pins.due(now) {
            return;
        }
        let (repinned, failure) = match self.kernel.repin_missing() {
            Ok(repinned) if repinned.is_empty() => return,
            Ok(repinned) => (repinned, None),
            Err(err) => (Vec::new(), Some(err.to_string())),
        };
        let dir = self.kernel.pin_dir().display().to_string();
        let reason = match &failure {
            None => format!(
                "pins under {dir} were removed while guardd ran (the programs stayed attached \
                 through guardd's own fds); pinned again: {}",
                repinned.join(", ")
            ),
            Some(err) => {
                format!("pins under {dir} were removed and could not be pinned again: {err}")
            }
        };
        self.pins.repairs += 1;
        tracing::error!("{reason}");
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.reason = Some(reason);
        self.audit.write(&record);
    }
}

impl Guard {
    /// Status lines for what guardd checks of itself and of approvers.
    pub(super) fn own_mechanisms(&self) -> Vec<(String, String)> {
        let pins = format!(
            "guardd keeps an fd on every link it pinned under {} (removing a pin detaches \
             nothing while it runs) and pins again what was removed within {} s, audited; \
             repaired {} time(s) since start (a re-pin that fails is audited: that program is then DETACHED)",
            self.kernel.pin_dir().display(),
            PIN_CHECK_EVERY.as_secs(),
            self.pins.repairs
        );
        let root = match self.kernel.lsm_missing() {
            None => "root sessions: the BPF LSM keeps them from signalling or tracing guardd, \
                     using bpf(2) and writing agent-guard's files"
                .to_string(),
            Some(why) => format!(
                "root sessions: NOT contained without the BPF LSM ({why}): a session running as \
                 root can kill guardd, detach its programs and rewrite its files; agent-guard \
                 holds or audits what it sees of that"
            ),
        };
        vec![
            (
                "approval_authentication".into(),
                self.same_uid_auth().describe(),
            ),
            ("pin_watch".into(), pins),
            ("policy_files".into(), self.policy_files_status()),
            ("root_sessions".into(), root),
        ]
    }
}

impl Guard {
    /// A saved hold whose process is gone when guardd starts: if someone
    /// sent it SIGCONT while guardd was down (an agent that killed guardd
    /// and continued its own command), it ran without a decision, and the
    /// record says so and by whom; otherwise it ended unrun.
    pub(super) fn audit_ended_while_down(
        &mut self,
        entry: &crate::state::SavedHold,
        now_unix: u64,
    ) {
        // The stop happened when the hold was made: its monotonic time, roughly.
        let held_for_ns = now_unix.saturating_sub(entry.created_unix) * 1_000_000_000;
        let stopped_near = monotonic_ns().saturating_sub(held_for_ns);
        let continued = self
            .kernel
            .continued_mark(entry.pid)
            .filter(|(_, stop_ns)| {
                stop_ns + 60_000_000_000 >= stopped_near && *stop_ns <= stopped_near + 5_000_000_000
            })
            .map(|(continuation, _)| continuation);
        let mut record = match continued {
            Some(continuation) => {
                let mut record = AuditRecord::new(AuditEvent::Error);
                record.decision = Some(AuditDecision::Ran);
                record.reason = Some(format!(
                    "{} while guardd was down: it ran without a decision, and has ended",
                    continuation.describe()
                ));
                tracing::error!(
                    id = entry.id,
                    pid = entry.pid,
                    "a held process ran while guardd was down"
                );
                record
            }
            None => {
                let mut record = AuditRecord::new(AuditEvent::Exit);
                record.decision = Some(AuditDecision::Exited);
                record.reason = Some("the held process ended while guardd was down".into());
                record
            }
        };
        record.request_id = Some(entry.id.clone());
        record.pid = Some(entry.pid);
        record.rule = Some(entry.rule.clone());
        record.session = Some(entry.session);
        self.audit.write(&record);
    }
}

impl Guard {
    /// A `guardctl run` session that outlived the guardd holding its seccomp
    /// listener: the kernel now fails its gated calls (connect, ptrace
    /// attach, and file calls with `syscall_gate = true`) with ENOSYS. Closed
    /// for holds, but the agent's network is gone: said, not silent.
    pub(super) fn audit_lost_listener(&mut self, session: u32) {
        let reason = format!(
            "session {session} (guardctl run) lost its seccomp listener with the previous guardd: \
             its gated calls (connect, ptrace attach, and file calls with syscall_gate = true) \
             now fail with ENOSYS; restart the session to gate them again"
        );
        tracing::warn!("{reason}");
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.session = Some(session);
        record.reason = Some(reason);
        self.audit.write(&record);
    }
}
