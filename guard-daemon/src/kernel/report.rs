//! The report-only program: where the BPF LSM does not run, it reports a
//! session's gated calls from `syscalls` tracepoints, attached only while a
//! session needs it (and tried again after a failed attach).
use std::path::Path;

use aya::programs::{
    links::{FdLink, PinnedLink},
    TracePoint,
};

use guard_common::names::program;

use super::{offsets::TRACEFS, Kernel, KernelError};

/// How long after a failed attach of the report-only program it is tried again.
const REPORT_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the report-only program stays attached once no session needs
/// it. Its detach completes on another thread after RCU grace periods, and
/// until then the kernel refuses the same program on the same tracepoints
/// (EEXIST): attached again at once, for the next short session, it failed.
const REPORT_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// The `syscalls` tracepoints the report-only program is attached to
/// where the BPF LSM does not run (those this kernel has).
pub(super) const REPORT_TRACEPOINTS: [&str; 18] = [
    "sys_enter_unlink",
    "sys_enter_unlinkat",
    "sys_enter_rmdir",
    "sys_enter_rename",
    "sys_enter_renameat",
    "sys_enter_renameat2",
    "sys_enter_link",
    "sys_enter_linkat",
    "sys_enter_truncate",
    "sys_enter_open",
    "sys_enter_openat",
    "sys_enter_openat2",
    "sys_enter_creat",
    "sys_enter_chmod",
    "sys_enter_fchmodat",
    "sys_enter_chown",
    "sys_enter_lchown",
    "sys_enter_fchownat",
];

/// The report tracepoints this kernel has.
fn report_tracepoints() -> impl Iterator<Item = &'static str> {
    REPORT_TRACEPOINTS
        .into_iter()
        .filter(|tp| Path::new(TRACEFS).join("events/syscalls").join(tp).exists())
}

/// Where a report link is pinned (bpffs refuses dots in names).
pub(super) fn report_link(tracepoint: &str) -> String {
    format!("{}-{tracepoint}", program::REPORT_SYSCALL)
}

impl Kernel {
    /// Loads the report-only program. It is attached only while a session
    /// needs it (`set_reporting`): an enabled `sys_enter` tracepoint sends
    /// every system call of every process through the kernel's slow path.
    pub(super) fn load_report(&mut self) -> Result<(), KernelError> {
        let name = program::REPORT_SYSCALL;
        let program_err = KernelError::program(name);
        let program: &mut TracePoint = self.program(name)?;
        program.load().map_err(program_err)?;
        let info = program.info().map_err(program_err)?;
        let calls: Vec<&str> = report_tracepoints()
            .map(|tp| tp.trim_start_matches("sys_enter_"))
            .collect();
        let tracepoint = format!("syscalls/sys_enter_{{{}}}", calls.join(","));
        self.list_loaded(name, tracepoint, &info, false);
        // A session of an earlier run may still be reported on.
        let earlier = REPORT_TRACEPOINTS
            .iter()
            .any(|tp| self.pins.link(&report_link(tp)).exists());
        self.set_reporting(earlier).map(drop)
    }

    /// Attaches (or detaches) the report-only program; true when that changed.
    /// Not wanted any more, it is detached only after REPORT_LINGER.
    pub fn set_reporting(&mut self, on: bool) -> Result<bool, KernelError> {
        if on || !self.reporting {
            self.report_unneeded_since = None;
        } else {
            let since = *self
                .report_unneeded_since
                .get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < REPORT_LINGER {
                return Ok(false);
            }
            self.report_unneeded_since = None;
        }
        if on == self.reporting || self.report_missing.is_some() {
            return Ok(false);
        }
        let name = program::REPORT_SYSCALL;
        if on {
            let retry_due = self
                .report_failed
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= REPORT_RETRY);
            if !retry_due {
                return Ok(false);
            }
            if let Err(err) = self.attach_report() {
                // Retried after REPORT_RETRY; status says it is not working.
                self.detach_report();
                self.report_failed = Some((err.to_string(), std::time::Instant::now()));
                return Err(err);
            }
            self.report_failed = None;
        } else {
            self.detach_report();
        }
        self.reporting = on;
        for view in self.loaded.iter_mut().filter(|v| v.name == name) {
            view.attached = on;
        }
        Ok(true)
    }

    fn attach_report(&mut self) -> Result<(), KernelError> {
        let name = program::REPORT_SYSCALL;
        let program_err = KernelError::program(name);
        for tracepoint in report_tracepoints() {
            let program: &mut TracePoint = self.program(name)?;
            let link = program
                .attach("syscalls", tracepoint)
                .map_err(program_err)?;
            let link = program.take_link(link).map_err(program_err)?;
            let link = FdLink::try_from(link)
                .map_err(|source| KernelError::Pin(format!("{name}: {source}")))?;
            self.pin_link(report_link(tracepoint), link)?;
        }
        Ok(())
    }

    /// Detaching a tracepoint waits for the kernel's RCU grace periods
    /// (~70 ms each here): the links are closed on a thread of their own,
    /// not under the caller's lock.
    fn detach_report(&mut self) {
        let mut links: Vec<FdLink> = REPORT_TRACEPOINTS
            .iter()
            .filter_map(|tp| PinnedLink::from_pin(self.pins.link(&report_link(tp))).ok())
            .filter_map(|link| link.unpin().ok())
            .collect();
        // The fds guardd kept (their pins went with the unpin above).
        links.extend(
            REPORT_TRACEPOINTS
                .iter()
                .filter_map(|tp| self.links.remove(&report_link(tp)))
                .map(FdLink::from),
        );
        if !links.is_empty() {
            let _ = std::thread::Builder::new()
                .name("detach".into())
                .spawn(move || drop(links));
        }
    }

    /// Why the report-only program failed to attach when a session needed it
    /// (None: it is attached, or not needed); it is tried again meanwhile.
    pub fn report_failed(&self) -> Option<&str> {
        self.report_failed.as_ref().map(|(why, _)| why.as_str())
    }

    /// Why the report-only program is not loaded (None: it is, or the LSM runs).
    pub fn report_missing(&self) -> Option<&str> {
        self.report_missing.as_deref()
    }
}
