//! The launcher's side: a seccomp filter that sends the gated calls to guardd
//! (SECCOMP_RET_USER_NOTIF) and lets everything else through untouched.
use std::os::fd::{FromRawFd as _, OwnedFd};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::syscalls::{GATED, WRITE_FLAGS};

#[derive(Debug, thiserror::Error)]
#[error("seccomp filter: {0}")]
pub struct FilterError(String);

/// Installs the filter on the calling thread's process (sets no_new_privs)
/// and returns the notification listener, which must go to guardd and be
/// closed here before anything untrusted runs.
pub fn install() -> Result<OwnedFd, FilterError> {
    let fail =
        |what: &str, err: libseccomp::error::SeccompError| FilterError(format!("{what}: {err}"));
    let mut filter = ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| fail("new", e))?;
    for gated in GATED {
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
    filter.load().map_err(|e| fail("load", e))?;
    let fd = filter.get_notify_fd().map_err(|e| fail("notify fd", e))?;
    // SAFETY: libseccomp hands over the listener it just created; we own it now.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
