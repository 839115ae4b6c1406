//! A start on pins of another layout (see kernel/layout.rs): the kernel
//! loaded fresh maps and kept nothing of the old ones but the pids their
//! HELD and GATE_HELD listed. What the maps held for the running processes is
//! put back from what can be trusted: the state file's sessions (their
//! process trees) and a fresh HELD entry for every process still stopped
//! that the state file or the old HELD names. Nothing is continued.
//!
//! Also, at every start: the links of another guardd version's programs,
//! pinned under names this one does not use, which the load removed.
use std::collections::BTreeMap;

use guard_common::{SessionEntry, LAYOUT_VERSION, SESSION_DETECTED, SESSION_LAUNCHED};

use super::*;
use crate::kernel::describe_layout;

/// Where a process to re-hold was named.
#[derive(Default)]
struct Named {
    /// The state file's hold: its request id, start time and session.
    saved: Option<(String, u64, u32)>,
    in_old_held: bool,
}

impl Guard {
    /// Before the state's holds are re-adopted: audits the links of another
    /// guardd's programs the load removed; after a change of layout, re-fills
    /// the fresh maps and audits each process the old maps held, then the
    /// change itself.
    pub(super) fn rehold_after_layout_change(&mut self, saved: &SavedState) {
        self.audit_stale_links();
        let Some(change) = self.kernel.layout_change().cloned() else {
            return;
        };
        let layouts = format!(
            "the pins under {} had {}, this guardd has layout {LAYOUT_VERSION}",
            self.kernel.pin_dir().display(),
            describe_layout(change.found)
        );
        for session in &saved.sessions {
            self.readd_session(session);
        }
        let mut named: BTreeMap<u32, Named> = BTreeMap::new();
        for hold in &saved.holds {
            named.entry(hold.pid).or_default().saved =
                Some((hold.id.clone(), hold.start_time, hold.session));
        }
        for pid in change.held.as_ref().into_iter().flatten() {
            named.entry(*pid).or_default().in_old_held = true;
        }
        let (mut reheld, mut denied) = (0, 0);
        for (pid, named) in named {
            reheld += u32::from(self.rehold_one(pid, &named, &layouts));
        }
        for pid in change.gate_held.as_ref().into_iter().flatten() {
            let process = ProcessHandle::open(*pid).ok();
            let stopped = procfs::stat(*pid).is_ok_and(|s| s.is_stopped());
            if let (Some(process), true) = (process, stopped) {
                let session = self.kernel.session_of(*pid).map_or(0, |s| s.session_id);
                let why = format!(
                    "{layouts}: the system call the BPF LSM gate held could not be read from \
                     the old GATE_HELD; denied (it never ran)"
                );
                self.fail_closed(&process, session, &why, None);
                denied += 1;
            }
        }
        let unread = |name: &str, result: &Result<Vec<u32>, String>| match result {
            Ok(_) => String::new(),
            Err(err) => format!("; the old {name} could not be read ({err})"),
        };
        let reason = format!(
            "{layouts}: the old maps were not reused; fresh maps were loaded, {} session(s) \
             re-added from the state file, {reheld} stopped process(es) held again, {denied} \
             held system call(s) denied{}{}",
            saved.sessions.len(),
            unread("HELD", &change.held),
            unread("GATE_HELD", &change.gate_held),
        );
        tracing::warn!("{reason}");
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.reason = Some(reason);
        self.audit.write(&record);
    }

    /// One record for the links the load found pinned under names no program
    /// of this guardd has (a program another version named differently): they
    /// were unpinned, so detached, once this guardd's own were attached.
    fn audit_stale_links(&mut self) {
        let stale = self.kernel.stale_links();
        if stale.is_empty() {
            return;
        }
        let describe = |link: &crate::kernel::StaleLink| match &link.left {
            None => link.pin.clone(),
            Some(err) => format!("{} (NOT removed: {err})", link.pin),
        };
        let pins: Vec<String> = stale.iter().map(describe).collect();
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.reason = Some(format!(
            "links under {} named no program of this guardd (pinned by another version of \
             guardd): {}; unpinned, detaching their programs, after this guardd's own were \
             attached",
            self.kernel.pin_dir().display(),
            pins.join(", ")
        ));
        self.audit.write(&record);
    }

    /// Puts a saved session's process tree back into the kernel's session map.
    fn readd_session(&mut self, session: &SavedSession) {
        if procfs::stat(session.id).is_err() {
            return;
        }
        let entry = SessionEntry {
            session_id: session.id,
            flags: if session.origin == "launched" {
                SESSION_LAUNCHED
            } else {
                SESSION_DETECTED
            },
            owner_uid: session.uid,
            _pad: 0,
        };
        for pid in procfs::process_tree(session.id) {
            for tid in procfs::threads(pid) {
                if let Err(err) = self.kernel.add_to_session(tid, entry) {
                    tracing::error!(tid, "cannot add to session {}: {err}", session.id);
                }
            }
        }
    }

    /// A fresh HELD entry for `pid` if it is the process named and still
    /// stopped (the restore or the scan of HELD then takes it up); one audit
    /// record either way. Returns whether it was held again.
    fn rehold_one(&mut self, pid: u32, named: &Named, layouts: &str) -> bool {
        let process = ProcessHandle::open(pid).ok().filter(|p| {
            p.is_alive()
                && named
                    .saved
                    .as_ref()
                    .is_none_or(|(_, start, _)| *start == p.start_time)
        });
        let stat = process.as_ref().and_then(|_| procfs::stat(pid).ok());
        let source = match (&named.saved, named.in_old_held) {
            (Some(_), true) => "the state file and the old HELD",
            (Some(_), false) => "the state file",
            (None, _) => "the old HELD",
        };
        let session = named
            .saved
            .as_ref()
            .map(|(_, _, session)| *session)
            .or_else(|| self.kernel.session_of(pid).map(|s| s.session_id))
            .unwrap_or(0);
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.pid = Some(pid);
        record.session = Some(session);
        record.request_id = named.saved.as_ref().map(|(id, _, _)| id.clone());
        let held = match stat {
            None => {
                record.reason = Some(format!(
                    "{layouts}: pid {pid}, named as held by {source}, is gone (or another process)"
                ));
                false
            }
            Some(stat) if !stat.is_stopped() => {
                record.reason = Some(format!(
                    "{layouts}: pid {pid}, named as held by {source}, is running: not held \
                     again (the previous guardd let it go, or another process continued it: the \
                     old CONTINUED was not read)"
                ));
                false
            }
            Some(_) => {
                let uid = procfs::uid(pid).unwrap_or(u32::MAX);
                match self.kernel.rehold(pid, session, uid) {
                    Ok(()) => {
                        record.decision = Some(AuditDecision::Hold);
                        record.reason = Some(format!(
                            "{layouts}: pid {pid}, named as held by {source}, is still stopped: \
                             held again on the fresh maps"
                        ));
                    }
                    Err(err) => {
                        // Still stopped, and the state file or the scan finds it.
                        record.reason = Some(format!(
                            "{layouts}: pid {pid}, named as held by {source}, is still stopped \
                             and stays so, but HELD refused it ({err}): no foreign SIGCONT is \
                             noticed for it"
                        ));
                    }
                }
                true
            }
        };
        self.audit.write(&record);
        held
    }

    /// The `pin_layout` line of `guardctl status`.
    pub(super) fn pin_layout_status(&self) -> (String, String) {
        let line = match self.kernel.layout_change() {
            None => format!(
                "maps of layout {LAYOUT_VERSION} under {} (marker layout-{LAYOUT_VERSION}), \
                 reused across restarts",
                self.kernel.pin_dir().display()
            ),
            Some(change) => format!(
                "MIGRATED at this start: the pins under {} had {}; fresh maps of layout \
                 {LAYOUT_VERSION} were loaded, the stopped processes held again (audited)",
                self.kernel.pin_dir().display(),
                describe_layout(change.found)
            ),
        };
        ("pin_layout".into(), line)
    }
}
