//! The syscall gate on the BPF LSM. In a session, an unlink, rmdir, rename,
//! hard link (as a rename), truncate, write-open, create, chmod or chown
//! below a protected root
//! (`GATE_ROOTS`, by device and inode, found by walking the target's parent
//! dentries, so paths are seen as the kernel resolved them) is denied,
//! audited or held; an `except` directory met on the way up ends the walk.
//!
//! A hold records the call in `GATE_HELD`, stops the process with SIGSTOP and
//! returns -ERESTARTNOINTR: the kernel runs the call again once the process
//! is continued, and only guardd may continue it (`self_protect_task_kill`). Before
//! that guardd writes its decision for the process and root into
//! `GATE_DECIDED`, which the restarted call and the process's later calls on
//! that tree obey. A stop that cannot be sent refuses the call: nothing held
//! runs without a decision.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_send_signal},
    macros::lsm,
    programs::LsmContext,
};
use guard_common::{
    EventKind, FileKey, GateDecisionKey, GateHeldEntry, ANY_OWNER, GATE_CHMOD, GATE_CHOWN,
    GATE_RENAME, GATE_RMDIR, GATE_TRUNCATE, GATE_UNLINK, GATE_WRITE,
};

use crate::{
    maps::{current_uid, emit_gate, GATE_DECIDED, GATE_HELD, GATE_ROOTS, SESSIONS},
    self_protect::{off, read},
};

const EPERM: i32 = 1;
/// The kernel restarts a call that returns this once its signal is handled.
const ERESTARTNOINTR: i32 = 513;
const SIGSTOP: u32 = 19;
const FMODE_WRITE: u32 = 0x2;
/// Set on a file the open created; creation was judged by `gate_path_mknod`.
const FMODE_CREATED: u32 = 0x10_0000;
const O_TRUNC: u32 = 0o1000;
/// Parent dentries walked up from a target: deeper entries are judged by
/// these levels only (documented in docs/syscall-gate.md).
const MAX_WALK: u32 = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Audit,
    Hold,
    Deny,
}

/// `path_unlink(const struct path *dir, struct dentry *dentry)`
#[lsm(hook = "path_unlink")]
pub fn gate_path_unlink(ctx: LsmContext) -> i32 {
    gate(GATE_UNLINK, ctx.arg(1), ctx.arg(2))
}

/// `path_rmdir(const struct path *dir, struct dentry *dentry)`
#[lsm(hook = "path_rmdir")]
pub fn gate_path_rmdir(ctx: LsmContext) -> i32 {
    gate(GATE_RMDIR, ctx.arg(1), ctx.arg(2))
}

/// `path_mknod(dir, dentry, mode, dev)`: also asked for `open(O_CREAT)`.
#[lsm(hook = "path_mknod")]
pub fn gate_path_mknod(ctx: LsmContext) -> i32 {
    gate(GATE_WRITE, ctx.arg(1), ctx.arg(4))
}

/// `path_rename(old_dir, old_dentry, new_dir, new_dentry, flags)` (5.19 on).
#[lsm(hook = "path_rename")]
pub fn gate_path_rename(ctx: LsmContext) -> i32 {
    gate_rename(&ctx, ctx.arg(5))
}

/// `path_rename(old_dir, old_dentry, new_dir, new_dentry)`, before 5.19.
#[lsm(hook = "path_rename")]
pub fn gate_path_rename_5_7(ctx: LsmContext) -> i32 {
    gate_rename(&ctx, ctx.arg(4))
}

#[inline(always)]
fn gate_rename(ctx: &LsmContext, previous: i32) -> i32 {
    // The source, then the target (replaced, or a new name in a protected tree).
    match gate(GATE_RENAME, ctx.arg(1), previous) {
        0 => gate(GATE_RENAME, ctx.arg(3), 0),
        refused => refused,
    }
}

/// `path_link(old_dentry, new_dir, new_dentry)`: a second name for a
/// protected file, outside its protection, is judged as renaming it away.
#[lsm(hook = "path_link")]
pub fn gate_path_link(ctx: LsmContext) -> i32 {
    gate(GATE_RENAME, ctx.arg(0), ctx.arg(3))
}

/// `path_truncate(const struct path *path)`
#[lsm(hook = "path_truncate")]
pub fn gate_path_truncate(ctx: LsmContext) -> i32 {
    gate_path(GATE_TRUNCATE, ctx.arg(0), ctx.arg(1))
}

/// `path_chmod(const struct path *path, umode_t mode)`
#[lsm(hook = "path_chmod")]
pub fn gate_path_chmod(ctx: LsmContext) -> i32 {
    gate_path(GATE_CHMOD, ctx.arg(0), ctx.arg(2))
}

/// `path_chown(const struct path *path, kuid_t uid, kgid_t gid)`
#[lsm(hook = "path_chown")]
pub fn gate_path_chown(ctx: LsmContext) -> i32 {
    gate_path(GATE_CHOWN, ctx.arg(0), ctx.arg(3))
}

/// `file_open(struct file *file)`: opens for writing or truncating.
#[lsm(hook = "file_open")]
pub fn gate_file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let file: *const u8 = ctx.arg(0);
    let o = off();
    let (Some(mode), Some(flags)) = (
        read::<u32>(file, o.file_mode),
        read::<u32>(file, o.file_flags),
    ) else {
        return 0;
    };
    if (mode & FMODE_WRITE == 0 && flags & O_TRUNC == 0) || mode & FMODE_CREATED != 0 {
        return 0;
    }
    // O_TRUNC of a file that exists empties it: a truncate too. From 6.2 the
    // kernel no longer calls `path_truncate` for it, so it is judged here.
    let op = match flags & O_TRUNC {
        0 => GATE_WRITE,
        _ => GATE_WRITE | GATE_TRUNCATE,
    };
    match read::<*const u8>(file, o.file_dentry) {
        Some(dentry) => gate(op, dentry, 0),
        None => 0,
    }
}

#[inline(always)]
fn gate_path(op: u32, path: *const u8, previous: i32) -> i32 {
    if previous != 0 {
        return previous;
    }
    match read::<*const u8>(path, off().path_dentry) {
        Some(dentry) => gate(op, dentry, 0),
        None => 0,
    }
}

#[inline(always)]
fn gate(op: u32, dentry: *const u8, previous: i32) -> i32 {
    if previous != 0 {
        return previous;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(session) = SESSIONS.get_ptr(tid) else {
        return 0;
    };
    let session = unsafe { *session };
    // From here `op` is what the root protects of it (a truncating open of a
    // root that guards truncates but not writes is a truncate to guardd).
    let Some((root, action, op)) = protected_root(dentry, op, session.owner_uid) else {
        return 0;
    };
    let pid = (pid_tgid >> 32) as u32;
    match action {
        Action::Audit => {
            emit_gate(
                EventKind::GateAudited,
                pid,
                tid,
                session.session_id,
                op,
                root,
            );
            0
        }
        Action::Deny => {
            emit_gate(
                EventKind::GateDenied,
                pid,
                tid,
                session.session_id,
                op,
                root,
            );
            -EPERM
        }
        Action::Hold => hold(pid, tid, session.session_id, op, root),
    }
}

#[inline(always)]
pub(crate) fn hold(pid: u32, tid: u32, session_id: u32, op: u32, root: FileKey) -> i32 {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Some(start_ns) = read::<u64>(task, off().task_start_time) else {
        return -EPERM;
    };
    let key = GateDecisionKey { pid, _pad: 0, root };
    if let Some(decision) = GATE_DECIDED.get_ptr(&key) {
        let decision = unsafe { *decision };
        // Another start time: a reused pid, the decision is not this process's.
        if decision.start_ns == start_ns {
            return if decision.allow != 0 { 0 } else { -EPERM };
        }
    }
    let entry = GateHeldEntry {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        start_ns,
        root,
        session_id,
        tid,
        op,
        uid: current_uid(),
    };
    // Another thread's call may hold the process already: it stops all the same.
    let first = GATE_HELD.insert(&pid, &entry, BPF_NOEXIST as u64).is_ok();
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        if first {
            let _ = GATE_HELD.remove(&pid);
        }
        emit_gate(EventKind::GateStopFailed, pid, tid, session_id, op, root);
        return -EPERM;
    }
    if first {
        emit_gate(EventKind::GateHeld, pid, tid, session_id, op, root);
    }
    -ERESTARTNOINTR
}

/// The outermost protected root at or above `dentry` whose entry covers `op`
/// in sessions of `owner`, what to do there and which bits of `op` it
/// covers. Kept cheap to verify (the
/// verifier walks every level): reads do not branch (a failed read gives
/// zero, which no root has), and the loop carries only the key it found.
#[inline(always)]
fn protected_root(mut dentry: *const u8, op: u32, owner: u32) -> Option<(FileKey, Action, u32)> {
    let o = off();
    let mut found = FileKey::default();
    for _ in 0..MAX_WALK {
        let key = dentry_key(dentry, &o);
        if let Some(root) = GATE_ROOTS.get_ptr(&key) {
            let root = unsafe { *root };
            if root.owner == ANY_OWNER || root.owner == owner {
                if root.exempt & op != 0 {
                    // An `except` path: its subtree is left out of the roots above it.
                    break;
                }
                if (root.deny | root.hold | root.audit) & op != 0 {
                    found = key;
                }
            }
        }
        let parent: *const u8 = peek(dentry, o.dentry_parent);
        // A file system's root is its own parent.
        if parent.is_null() || parent == dentry {
            break;
        }
        dentry = parent;
    }
    if found.ino == 0 {
        return None;
    }
    // Gone since the walk: guardd dropped the root, the policy no longer protects it.
    let root = unsafe { *GATE_ROOTS.get_ptr(&found)? };
    let action = if root.deny & op != 0 {
        Action::Deny
    } else if root.hold & op != 0 {
        Action::Hold
    } else {
        Action::Audit
    };
    Some((found, action, (root.deny | root.hold | root.audit) & op))
}

/// Device and inode of a dentry's inode (zero for a name that does not exist yet).
#[inline(always)]
pub(crate) fn dentry_key(dentry: *const u8, o: &guard_common::LsmOffsets) -> FileKey {
    let inode: *const u8 = peek(dentry, o.dentry_inode);
    let sb: *const u8 = peek(inode, o.inode_sb);
    FileKey {
        dev: peek(sb, o.sb_dev),
        _pad: 0,
        ino: peek(inode, o.inode_ino),
    }
}

/// Reads a `T` at `base + offset`; zero when the read fails (the helper
/// zeroes its destination then).
#[inline(always)]
pub(crate) fn peek<T>(base: *const u8, offset: u32) -> T {
    let mut value = core::mem::MaybeUninit::<T>::zeroed();
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(offset as usize).cast(),
        );
        value.assume_init()
    }
}
