//! The launcher's side: a seccomp filter that sends the gated calls to guardd
//! (SECCOMP_RET_USER_NOTIF) and lets everything else through untouched.
use std::os::fd::{FromRawFd as _, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterAttr, ScmpFilterContext, ScmpSyscall,
};

use super::syscalls::{Escape, ESCAPES, GATED, PTRACE_ATTACH, PTRACE_SEIZE, WRITE_FLAGS};

#[derive(Debug, thiserror::Error)]
#[error("seccomp filter: {0}")]
pub struct FilterError(String);

/// What the filter sends to guardd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    /// The file calls of the syscall gate (`[defaults] syscall_gate`).
    pub files: bool,
    /// ptrace attach/seize, process_vm_writev, pidfd_getfd and connect
    /// (`[defaults] session_escape`).
    pub escape: bool,
}

/// Ways past the notified calls, refused by the filter itself (no round trip
/// to guardd): TIOCSTI pushes input into the terminal the session shares with
/// the user's shell, which runs it outside the session; io_uring makes
/// connects and file calls that no system call of the session shows.
/// io_uring is answered ENOSYS, which runtimes take as "not here" and fall
/// back from.
fn refuse_in_kernel(filter: &mut ScmpFilterContext) -> Result<(), libseccomp::error::SeccompError> {
    let ioctl = ScmpSyscall::from_name("ioctl")?;
    let tiocsti = ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xffff_ffff), libc::TIOCSTI);
    filter.add_rule_conditional(ScmpAction::Errno(libc::EPERM), ioctl, &[tiocsti])?;
    for name in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        if let Ok(syscall) = ScmpSyscall::from_name(name) {
            filter.add_rule(ScmpAction::Errno(libc::ENOSYS), syscall)?;
        }
    }
    Ok(())
}

/// Calls that would give a path another file than guardd resolves it to:
/// the gate judges paths as the session's own mount namespace shows them, so
/// a bind mount (`unshare -Urm` then `mount --bind ~/.ssh /tmp/x`, or a root
/// session's plain mount) or joining another namespace would let a protected
/// file be deleted by an unprotected name. Refused (EPERM) where the file
/// calls are gated; a new namespace alone, or chroot, changes no path.
fn refuse_remounts(filter: &mut ScmpFilterContext) -> Result<(), libseccomp::error::SeccompError> {
    for name in [
        "mount",
        "umount2",
        "open_tree",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "pivot_root",
        "setns",
    ] {
        if let Ok(syscall) = ScmpSyscall::from_name(name) {
            filter.add_rule(ScmpAction::Errno(libc::EPERM), syscall)?;
        }
    }
    Ok(())
}

/// Installs the filter on the calling thread's process and returns the
/// notification listener, which must go to guardd and be closed here before
/// anything untrusted runs. A launcher without CAP_SYS_ADMIN must set
/// no_new_privs first (the kernel's rule), so setuid programs in the session
/// then run without their privileges; root's launcher does not set it.
pub fn install(calls: Calls) -> Result<OwnedFd, FilterError> {
    let fail =
        |what: &str, err: libseccomp::error::SeccompError| FilterError(format!("{what}: {err}"));
    let mut filter = ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| fail("new", e))?;
    if rustix::process::geteuid().is_root() {
        filter
            .set_filter_attr(ScmpFilterAttr::CtlNnp, 0)
            .map_err(|e| fail("no_new_privs", e))?;
    }
    for gated in GATED.iter().filter(|_| calls.files) {
        // A name this libseccomp or architecture does not know has no number to gate.
        let Ok(syscall) = ScmpSyscall::from_name(gated.name) else {
            continue;
        };
        match gated.open_flags {
            None => {
                filter
                    .add_rule(ScmpAction::Notify, syscall)
                    .map_err(|e| fail(gated.name, e))?;
            }
            Some(arg) => {
                // One rule per flag bit: libseccomp ORs rules of one syscall.
                for bit in WRITE_FLAGS {
                    let condition =
                        ScmpArgCompare::new(arg as u32, ScmpCompareOp::MaskedEqual(bit), bit);
                    filter
                        .add_rule_conditional(ScmpAction::Notify, syscall, &[condition])
                        .map_err(|e| fail(gated.name, e))?;
                }
            }
        }
    }
    for &(name, escape) in ESCAPES.iter().filter(|_| calls.escape) {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            continue;
        };
        if escape == Escape::Ptrace {
            // Other requests act on tracees already attached: they pass in the kernel.
            for request in [PTRACE_ATTACH, PTRACE_SEIZE] {
                let condition = ScmpArgCompare::new(0, ScmpCompareOp::Equal, request);
                filter
                    .add_rule_conditional(ScmpAction::Notify, syscall, &[condition])
                    .map_err(|e| fail(name, e))?;
            }
        } else {
            filter
                .add_rule(ScmpAction::Notify, syscall)
                .map_err(|e| fail(name, e))?;
        }
    }
    if calls.escape || calls.files {
        refuse_in_kernel(&mut filter).map_err(|e| fail("kernel-side refusals", e))?;
    }
    if calls.files {
        refuse_remounts(&mut filter).map_err(|e| fail("mount refusals", e))?;
    }
    filter.load().map_err(|e| fail("load", e))?;
    let fd = filter.get_notify_fd().map_err(|e| fail("notify fd", e))?;
    // SAFETY: libseccomp hands over the listener it just created; we own it now.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
