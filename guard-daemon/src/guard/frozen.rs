//! How a raised exec hold is kept so that only guardd can end it: frozen in a
//! cgroup leaf where a cgroup freezer is (it stays frozen while guardd is
//! down), else in ptrace-stop (which ends with guardd).
use std::{collections::HashSet, path::Path};

use super::*;
use crate::freezer::{Freezer, Frozen};

/// `Hold::protection` of a frozen hold.
pub(super) fn frozen_protection(freezer: &Freezer) -> String {
    format!(
        "frozen ({}): only guardd can release it, also while it is down",
        freezer.name()
    )
}
pub(super) const TRACED: &str = "ptrace-stop: only guardd can release it";

impl Guard {
    /// Keeps a raised hold out of others' reach. Returns the SIGCONT another
    /// process (or the kernel) sent before that, if any: the process may
    /// have run part of its command.
    pub(super) fn keep_held(
        &mut self,
        hold: &mut Hold,
        record: &mut AuditRecord,
    ) -> Option<Continuation> {
        let pid = hold.process.pid;
        if self.freezer.as_ref().is_ok_and(|f| f.is_v1()) {
            // Traced first: a v1-frozen task cannot be attached to.
            self.seize(hold, record);
            let continued = self.kernel.continued_by(pid);
            let Ok(freezer) = &self.freezer else {
                return continued;
            };
            match freezer.freeze(pid, &hold.id) {
                Ok(frozen) => {
                    hold.frozen = Some(frozen);
                    hold.protection = frozen_protection(freezer);
                }
                Err(err) => tracing::warn!(id = hold.id, "not frozen ({err}): kept in ptrace-stop"),
            }
            return continued;
        }
        if let Ok(freezer) = &self.freezer {
            settle_stop(pid);
            match freezer.freeze(pid, &hold.id) {
                Ok(frozen) => {
                    hold.frozen = Some(frozen);
                    hold.protection = frozen_protection(freezer);
                    // Still stopped once in the frozen leaf: no SIGCONT reached it
                    // before (one clears the stop at once), and a later one finds
                    // it frozen. Otherwise a SIGCONT came first, maybe before.
                    let stopped = procfs::stat(pid).is_ok_and(|stat| stat.state == 'T');
                    let continued = (!stopped).then(|| self.kernel.continued_by(pid)).flatten();
                    // Also traced by guardd, so that no one else can attach and
                    // change what runs once it is approved.
                    self.seize(hold, record);
                    return continued;
                }
                Err(err) => {
                    let why = format!("not frozen ({err}): kept in ptrace-stop");
                    tracing::warn!(id = hold.id, "{why}");
                    record.reason = Some(why);
                }
            }
        }
        self.seize(hold, record);
        // Looked at in ptrace-stop, where a SIGCONT no longer wakes it.
        self.kernel.continued_by(pid)
    }

    /// A restarted guardd's check that a saved frozen hold is still frozen
    /// where it was left: then no SIGCONT since can have let it run.
    pub(super) fn still_frozen(&self, frozen: Option<&Frozen>, pid: u32) -> bool {
        match (frozen, &self.freezer) {
            (Some(frozen), Ok(freezer)) => freezer.holds(frozen, pid),
            _ => false,
        }
    }

    /// Traces a re-adopted frozen hold again where the freezer allows it.
    /// A v1-frozen task cannot be attached to, and thawing it for the attach
    /// would let a SIGCONT sent while guardd was down run it: it stays frozen
    /// and untraced; release checks that no one else attached meanwhile.
    pub(super) fn seize_frozen(&mut self, hold: &mut Hold, record: &mut AuditRecord) {
        if !self.freezer.as_ref().is_ok_and(|f| f.is_v1()) {
            self.seize(hold, record);
        }
    }

    /// Moves an approved process out of its frozen leaf, back where it came
    /// from. One that another process attached to (a v1-frozen hold guardd
    /// could not trace again after a restart) is killed instead: what it
    /// would run is no longer what was approved.
    pub(super) fn thaw(&self, frozen: &Frozen, pid: u32) {
        let Ok(freezer) = &self.freezer else {
            tracing::error!(pid, "a frozen hold and no freezer: it stays frozen");
            return;
        };
        if traced_by_another(pid) {
            let why = "approved, but another process attached to it (ptrace): killed, not run";
            tracing::error!(pid, "{why}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.pid = Some(pid);
            record.reason = Some(why.into());
            self.audit.write(&record);
            freezer.kill(frozen);
            return;
        }
        match freezer.release(frozen, pid) {
            Ok(cgroup) if cgroup != frozen.origin && !cgroup.is_empty() => {
                tracing::warn!(
                    pid,
                    origin = frozen.origin,
                    "released into {cgroup}: its cgroup is gone or takes no processes"
                )
            }
            Ok(_) => {}
            Err(err) => tracing::error!(pid, "cannot thaw the approved process: {err}"),
        }
    }

    /// Removes the leaves of ended holds once their processes are gone.
    pub(super) fn sweep_frozen(&self) {
        if let Ok(freezer) = &self.freezer {
            let keep: HashSet<&Path> = self
                .holds
                .iter()
                .filter_map(|hold| hold.frozen.as_ref())
                .map(|frozen| frozen.cgroup.as_path())
                .collect();
            freezer.sweep(&keep);
        }
    }

    /// `guardctl status`'s line on how holds are kept from being released.
    pub(super) fn hold_keeping(&self) -> String {
        match &self.freezer {
            Ok(freezer) => format!(
                "{}: a held process is moved into a frozen leaf under {} (SIGCONT from \
                 anyone wakes nothing, also while guardd is down) and moved back into its own \
                 cgroup when approved",
                freezer.name(),
                freezer.base().display()
            ),
            Err(why) => format!(
                "ptrace-stop (PTRACE_SEIZE + PTRACE_INTERRUPT): SIGCONT from others does not \
                 wake a held process while guardd runs; while it is down, one does (no cgroup \
                 freezer: {why})"
            ),
        }
    }
}

/// Waits (at most 50 ms) for the exec gate's SIGSTOP to take effect: it
/// lands as the task returns to user space, which may be a moment after
/// guardd read the stop. Frozen before that, the task would sit in the
/// freezer not stopped, and "still stopped" could not tell that no SIGCONT
/// came.
fn settle_stop(pid: u32) {
    for _ in 0..250 {
        match procfs::stat(pid) {
            Ok(stat) if stat.state != 'T' && stat.state != 'Z' => {
                std::thread::sleep(std::time::Duration::from_micros(200))
            }
            _ => return,
        }
    }
}

/// Whether a process other than guardd traces `pid` (TracerPid names the
/// tracing thread: guardd's is its tracer thread).
pub(super) fn traced_by_another(pid: u32) -> bool {
    procfs::tracer(pid).is_some_and(|tracer| {
        tracer != std::process::id() && !Path::new(&format!("/proc/self/task/{tracer}")).exists()
    })
}
