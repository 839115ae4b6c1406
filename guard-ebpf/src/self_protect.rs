//! Self-protection and hold integrity with the BPF LSM (only where
//! `/sys/kernel/security/lsm` lists `bpf`; the daemon loads these on demand).
//!
//! - `self_protect_task_kill`: only guardd may SIGCONT a process the exec gate
//!   or the syscall gate holds; session processes may not signal guardd.
//! - `self_protect_ptrace`: session processes may not trace guardd or a held process,
//!   nor (with `SETTING_ESCAPE_DENY`) attach to any process outside their own
//!   session: ptrace, /proc/PID/mem, process_vm_readv/writev and
//!   pidfd_getfd all pass this check with PTRACE_MODE_ATTACH.
//! - `self_protect_bpf`: session processes may not use bpf(2) at all (no detaching,
//!   no map writes, no reading the pins).
//! - `self_protect_file_open`, `self_protect_path_{unlink,rename,rmdir,truncate,mknod}`:
//!   session processes may not change the files in `PROTECTED` (guardd's
//!   binary, config, state, audit log, pins).
//!
//! Every hook first defers to an earlier BPF LSM program's refusal. On an
//! internal read error a hook allows: none of them can release a hold (that
//! takes guardd's SIGCONT or ptrace detach), they only narrow who may act.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::lsm,
    programs::LsmContext,
};
use guard_common::{FileKey, LsmOffsets, PROTECT_ENTRIES, PROTECT_FILE, SETTING_ESCAPE_DENY};

use crate::maps::{guardd, API_HELD_PROCS, GATE_HELD, HELD, PROTECTED, SESSIONS, SETTINGS};

const EPERM: i32 = 1;
const SIGCONT: i32 = 18;
const FMODE_WRITE: u32 = 0x2;
/// `ptrace_access_check`'s mode bit for attaching (as opposed to reading).
const PTRACE_MODE_ATTACH: u32 = 0x2;

/// Filled in by the daemon at load time from BTF.
#[unsafe(no_mangle)]
static LSM_OFFSETS: LsmOffsets = LsmOffsets {
    task_tgid: 0,
    file_mode: 0,
    file_dentry: 0,
    path_dentry: 0,
    dentry_inode: 0,
    dentry_parent: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    task_start_time: 0,
    file_flags: 0,
    sock_peer_pid: 0,
    pid_nr: 0,
    unix_dentry: 0,
};

#[inline(always)]
pub(crate) fn off() -> LsmOffsets {
    unsafe { core::ptr::read_volatile(&LSM_OFFSETS) }
}

#[inline(always)]
pub(crate) fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize).cast::<T>()).ok() }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn in_session() -> bool {
    SESSIONS
        .get_ptr(bpf_get_current_pid_tgid() as u32)
        .is_some()
}

/// Whether a process is held: by the exec gate, the LSM gate or an API probe.
#[inline(always)]
fn held(pid: u32) -> bool {
    HELD.get_ptr(pid).is_some()
        || GATE_HELD.get_ptr(pid).is_some()
        || API_HELD_PROCS.get_ptr(pid).is_some()
}

#[lsm(hook = "task_kill")]
pub fn self_protect_task_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let sig: i32 = ctx.arg(2);
    // Most signals on the host: neither a SIGCONT nor sent from a session.
    if sig == 0 || (sig != SIGCONT && !in_session()) {
        return 0;
    }
    let sender = current_tgid();
    let guardd = guardd();
    if sender == guardd && guardd != 0 {
        return 0;
    }
    let target: *const u8 = ctx.arg(0);
    let Some(target) = read::<u32>(target, off().task_tgid) else {
        return 0;
    };
    if (sig == SIGCONT && held(target)) || (target == guardd && in_session()) {
        return -EPERM;
    }
    0
}

#[lsm(hook = "ptrace_access_check")]
pub fn self_protect_ptrace(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(session) = (unsafe { SESSIONS.get(bpf_get_current_pid_tgid() as u32) }) else {
        return 0;
    };
    let child: *const u8 = ctx.arg(0);
    let Some(target) = read::<u32>(child, off().task_tgid) else {
        return 0;
    };
    if target == guardd() || held(target) {
        return -EPERM;
    }
    let mode: u32 = ctx.arg(1);
    let escape_denied = SETTINGS
        .get(0)
        .is_some_and(|s| s & SETTING_ESCAPE_DENY != 0);
    if mode & PTRACE_MODE_ATTACH != 0 && escape_denied {
        let same =
            unsafe { SESSIONS.get(target) }.is_some_and(|t| t.session_id == session.session_id);
        if !same {
            return -EPERM;
        }
    }
    0
}

/// `bpf(int cmd, union bpf_attr *attr, unsigned int size)`, before 6.9.
#[lsm(hook = "bpf")]
pub fn self_protect_bpf(ctx: LsmContext) -> i32 {
    deny_in_session(ctx.arg(3))
}

/// `bpf(int cmd, union bpf_attr *attr, unsigned int size, bool kernel)`, 6.9 on.
#[lsm(hook = "bpf")]
pub fn self_protect_bpf_6_9(ctx: LsmContext) -> i32 {
    deny_in_session(ctx.arg(4))
}

#[inline(always)]
fn deny_in_session(previous: i32) -> i32 {
    if previous != 0 {
        previous
    } else if in_session() {
        -EPERM
    } else {
        0
    }
}

#[lsm(hook = "file_open")]
pub fn self_protect_file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    if !in_session() {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    let Some(mode) = read::<u32>(file, off().file_mode) else {
        return 0;
    };
    if mode & FMODE_WRITE == 0 {
        return 0;
    }
    match read::<*const u8>(file, off().file_dentry) {
        Some(dentry) if dentry_is_protected(dentry) => -EPERM,
        _ => 0,
    }
}

/// `path_unlink(const struct path *dir, struct dentry *dentry)`
#[lsm(hook = "path_unlink")]
pub fn self_protect_path_unlink(ctx: LsmContext) -> i32 {
    deny_on_dentry(&ctx, 1, 2)
}

/// `path_rmdir(const struct path *dir, struct dentry *dentry)`
#[lsm(hook = "path_rmdir")]
pub fn self_protect_path_rmdir(ctx: LsmContext) -> i32 {
    deny_on_dentry(&ctx, 1, 2)
}

/// `path_mknod(const struct path *dir, struct dentry *dentry, umode_t, unsigned int)`:
/// also asked for `open(O_CREAT)` of a new file.
#[lsm(hook = "path_mknod")]
pub fn self_protect_path_mknod(ctx: LsmContext) -> i32 {
    deny_on_dentry(&ctx, 1, 4)
}

/// `path_rename(old_dir, old_dentry, new_dir, new_dentry, flags)` (5.19 on):
/// the source or the target (replaced, or created in a protected directory).
#[lsm(hook = "path_rename")]
pub fn self_protect_path_rename(ctx: LsmContext) -> i32 {
    deny_on_rename(&ctx, ctx.arg(5))
}

/// `path_rename(old_dir, old_dentry, new_dir, new_dentry)`, before 5.19.
#[lsm(hook = "path_rename")]
pub fn self_protect_path_rename_5_7(ctx: LsmContext) -> i32 {
    deny_on_rename(&ctx, ctx.arg(4))
}

#[inline(always)]
fn deny_on_rename(ctx: &LsmContext, previous: i32) -> i32 {
    if previous != 0 {
        return previous;
    }
    if !in_session() {
        return 0;
    }
    let old: *const u8 = ctx.arg(1);
    let new: *const u8 = ctx.arg(3);
    if dentry_is_protected(old) || dentry_is_protected(new) {
        return -EPERM;
    }
    0
}

/// `path_truncate(const struct path *path)`
#[lsm(hook = "path_truncate")]
pub fn self_protect_path_truncate(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    if !in_session() {
        return 0;
    }
    let path: *const u8 = ctx.arg(0);
    match read::<*const u8>(path, off().path_dentry) {
        Some(dentry) if dentry_is_protected(dentry) => -EPERM,
        _ => 0,
    }
}

#[inline(always)]
fn deny_on_dentry(ctx: &LsmContext, dentry_arg: usize, retval_arg: usize) -> i32 {
    let previous: i32 = ctx.arg(retval_arg);
    if previous != 0 {
        return previous;
    }
    if !in_session() {
        return 0;
    }
    let dentry: *const u8 = ctx.arg(dentry_arg);
    if dentry_is_protected(dentry) {
        -EPERM
    } else {
        0
    }
}

/// The dentry's own inode is protected, or its parent directory protects its entries.
#[inline(always)]
fn dentry_is_protected(dentry: *const u8) -> bool {
    if inode_flags(dentry) & PROTECT_FILE != 0 {
        return true;
    }
    match read::<*const u8>(dentry, off().dentry_parent) {
        Some(parent) => inode_flags(parent) & PROTECT_ENTRIES != 0,
        None => false,
    }
}

#[inline(always)]
fn inode_flags(dentry: *const u8) -> u32 {
    let o = off();
    let Some(inode) = read::<*const u8>(dentry, o.dentry_inode) else {
        return 0;
    };
    if inode.is_null() {
        return 0; // a negative dentry: the name does not exist yet
    }
    let (Some(ino), Some(sb)) = (
        read::<u64>(inode, o.inode_ino),
        read::<*const u8>(inode, o.inode_sb),
    ) else {
        return 0;
    };
    let Some(dev) = read::<u32>(sb, o.sb_dev) else {
        return 0;
    };
    let key = FileKey { dev, _pad: 0, ino };
    PROTECTED.get_ptr(&key).map_or(0, |flags| unsafe { *flags })
}
