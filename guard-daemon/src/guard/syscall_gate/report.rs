//! The report-only syscall gate (`guard-ebpf/src/report.rs`), where the BPF
//! LSM does not run: calls on protected paths by session processes the
//! seccomp gate does not see are written to the audit log. They have run.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use guard_common::{ReportCall, ReportEvent, NO_ARG};

use super::*;
use crate::{
    policy::{
        protect::{Operation, Protection},
        GateMode,
    },
    seccomp::{syscalls, Call},
};

fn arg_index(arg: Option<usize>) -> u32 {
    arg.map_or(NO_ARG, |a| a as u32)
}

/// Where each gated call (by this machine's syscall numbers) has its arguments.
fn report_calls() -> HashMap<u32, ReportCall> {
    syscalls::GATED
        .iter()
        .filter_map(|gated| {
            let number = libseccomp::ScmpSyscall::from_name(gated.name).ok()?;
            let path = |i: usize| gated.paths.get(i).map(|(_, p)| *p);
            let dirfd = |i: usize| gated.paths.get(i).and_then(|(d, _)| *d);
            // unlinkat's flags say whether it is an rmdir.
            let flags_arg = gated.open_flags.or((gated.name == "unlinkat").then_some(2));
            let call = ReportCall {
                op: gated.operation.gate_bit(),
                flags_arg: arg_index(flags_arg),
                open_flags: gated.open_flags.is_some().into(),
                path_args: [arg_index(path(0)), arg_index(path(1))],
                dirfd_args: [arg_index(dirfd(0)), arg_index(dirfd(1))],
                _pad: 0,
            };
            Some((number.as_raw_syscall() as u32, call))
        })
        .collect()
}

/// Device files shells and tools open for writing all the time
/// (`>/dev/null`, a terminal): reporting each would wake guardd for nothing.
const QUIET_CANDIDATES: [&str; 7] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/random",
    "/dev/urandom",
];

/// The candidates whose writing opens need no report: a character device
/// only root can replace (root owns it and every directory above it, none
/// writable by others) that no `[[protect]]` entry covers in any session.
fn quiet_opens(protections: &[Protection]) -> Vec<&'static str> {
    QUIET_CANDIDATES
        .into_iter()
        .filter(|path| {
            only_root_can_replace(Path::new(path))
                && crate::policy::protect::unprotected_anywhere(protections, Path::new(path))
        })
        .collect()
}

fn only_root_can_replace(device: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let root_only_dir = |dir: &Path| {
        std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0)
    };
    std::fs::symlink_metadata(device).is_ok_and(|m| m.file_type().is_char_device() && m.uid() == 0)
        && device.ancestors().skip(1).all(root_only_dir)
}

impl Guard {
    /// Whether calls are reported: no BPF LSM here, and the gate not off.
    pub(in crate::guard) fn reports_calls(&self) -> bool {
        self.policy.syscall_gate != GateMode::Off
            && self.kernel.lsm_missing().is_some()
            && self.kernel.report_missing().is_none()
            && !self.policy.protections.is_empty()
    }

    /// Fills (or empties) the kernel's table of calls to report.
    pub(in crate::guard) fn set_report_calls(&mut self) {
        if self.kernel.lsm_missing().is_none() {
            return;
        }
        let calls = if self.reports_calls() {
            report_calls()
        } else {
            HashMap::new()
        };
        if let Err(err) = self.kernel.set_report_calls(&calls) {
            tracing::error!("report-only syscall gate: {err}");
        }
        let quiet = match self.reports_calls() {
            true => quiet_opens(&self.policy.protections),
            false => Vec::new(),
        };
        if let Err(err) = self.kernel.set_report_quiet_opens(&quiet) {
            // Those opens are then sent and judged like any other: no loss.
            tracing::error!("report-only syscall gate, quiet opens: {err}");
        }
        self.sync_reporting();
    }

    /// Attaches the report-only program while a session needs it and
    /// detaches it after: attached, it slows every system call of the
    /// machine (~40 ns each here), sessions or not.
    pub(in crate::guard) fn sync_reporting(&mut self) {
        let wanted = self.reports_calls() && self.kernel.any_session_without_seccomp();
        let started = std::time::Instant::now();
        let failing = self.kernel.report_failed().is_some();
        match self.kernel.set_reporting(wanted) {
            Ok(true) if wanted => {
                tracing::info!(elapsed = ?started.elapsed(), "report-only syscall tracepoints attached");
                if failing {
                    let mut record = AuditRecord::new(AuditEvent::Error);
                    record.decision = Some(AuditDecision::Recovered);
                    record.reason =
                        Some("report-only syscall gate attached after earlier failures".into());
                    self.audit.write(&record);
                }
            }
            Ok(true) => {
                tracing::info!(elapsed = ?started.elapsed(), "report-only syscall tracepoints detached: no session")
            }
            Ok(false) => {}
            Err(err) => {
                tracing::error!("report-only syscall gate not attached (retried): {err}");
                let mut record = AuditRecord::new(AuditEvent::Error);
                record.reason = Some(format!(
                    "report-only syscall gate not attached: {err}; calls on protected paths \
                     are not reported until it is (retried)"
                ));
                self.audit.write(&record);
            }
        }
    }

    pub fn on_report(&mut self, report: &ReportEvent) {
        let event = &report.event;
        if self.sessions.gated_by_seccomp(event.session_id) || !self.reports_calls() {
            return;
        }
        let Some(mut operation) = Operation::ALL
            .iter()
            .copied()
            .find(|o| o.gate_bit() == event.op)
        else {
            return;
        };
        if operation == Operation::Unlink && report.flags & syscalls::AT_REMOVEDIR != 0 {
            operation = Operation::Rmdir;
        }
        // An open's flags (0 where the call has none: creat, openat2).
        let open_flags = (operation == Operation::Write).then_some(report.flags);
        let paths: Vec<PathBuf> = (0..2)
            .filter_map(|i| {
                let raw = &report.paths[i];
                let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
                // The thread may be gone: its cwd and fds with it, then the path stays as given.
                (len > 0).then(|| {
                    let (tid, dirfd) = (event.tid, report.dirfd[i]);
                    crate::seccomp::resolve_path(tid, dirfd, &raw[..len], operation, open_flags)
                })
            })
            .collect();
        let owner = self
            .sessions
            .owner_of(event.session_id)
            .unwrap_or(event.uid);
        self.note_policy_writes(event.pid, event.session_id, event.uid, operation, &paths);
        let call = Call {
            id: 0,
            tid: event.tid,
            syscall: "",
            operation,
            also: None,
            paths,
        };
        let Some((protected, path)) = self.protected(event.session_id, owner, &call) else {
            return;
        };
        let protection = &self.policy.protections[protected.protection];
        let mut record = AuditRecord::new(AuditEvent::Audit);
        record.pid = Some(event.pid);
        record.session = Some(event.session_id);
        record.uid = Some(event.uid);
        record.agent = self.sessions.agent_of(event.session_id);
        record.argv = procfs::cmdline(event.pid)
            .unwrap_or_default()
            .iter()
            .map(|a| escape_bytes(a))
            .collect();
        record.rule = Some(protection.id.clone());
        record.operation = Some(format!(
            "{} {}",
            operation.name(),
            escape_bytes(path.as_os_str().as_encoded_bytes())
        ));
        record.decision = Some(AuditDecision::Allow);
        record.reason = Some(format!(
            "report only: no BPF LSM here, the call ran (protect {} wanted {:?})",
            protection.id, protection.action
        ));
        tracing::warn!(
            pid = event.pid,
            operation = record.operation.as_deref().unwrap_or(""),
            "protected path changed in a session (report only)"
        );
        self.audit.write(&record);
    }
}
