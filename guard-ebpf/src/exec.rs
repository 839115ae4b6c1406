//! The exec gate. `sched_process_exec` fires after the new image is loaded and
//! before its first user instruction, with `comm` already set to the basename
//! of the executed file (the script, not its interpreter, for `#!` scripts).
//! In a session, a program run under another name (a symlink) is recognised
//! by the name of the file the kernel actually executed. A multi-call binary
//! (busybox) runs the applet argv[0] names, whatever the file is called, so
//! for it argv[0] decides. A script runs as its interpreter and its own file
//! is gone by now, so a shell given a file to run stops, for guardd to look
//! at that file.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes, bpf_send_signal,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::{
    Comm, EventKind, FileKey, SessionEntry, COMM_LEN, OVERFLOW_STOPS_KILLED, PROGRAM_AGENT,
    PROGRAM_INTERPRETER, PROGRAM_MULTI_CALL, PROGRAM_SCRIPT_RUNNER, PROGRAM_WATCHED,
    SESSION_DETECTED, SESSION_TLS_FOLLOWED, SETTING_EXEC_UNFOLLOWS, SETTING_ONE_LINK,
};

use crate::{
    gate::peek,
    maps::{
        count_overflow, count_prefilter_passed, emit, exe_offsets, held_entry, offsets,
        ARGV_FILTERS, EXEC_DIRS, HELD, PROGRAMS, SESSIONS, SETTINGS,
    },
};

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;

#[tracepoint]
pub fn exec_gate(ctx: TracePointContext) -> u32 {
    let pid = bpf_get_current_pid_tgid() as u32;
    // A non-leader thread that execs takes over the leader's pid; drop its old key.
    if let Ok(old_pid) = unsafe { ctx.read_at::<i32>(offsets().exec_old_pid as usize) } {
        if old_pid as u32 != pid {
            let _ = SESSIONS.remove(old_pid as u32);
        }
    }
    // Both always defined: an Option here let LLVM spill an undefined
    // register, which the verifier refuses.
    let entry = SESSIONS.get_ptr_mut(pid);
    let in_session = entry.is_some();
    let session_id = entry.map_or(0, |entry| unsafe { (*entry).session_id });
    if let Some(entry) = entry {
        drop_tls_follow(entry);
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    let flags = match PROGRAMS.get_ptr(comm) {
        Some(flags) => unsafe { *flags },
        None if !in_session => return 0,
        None => 0,
    };
    match in_session {
        true if flags & PROGRAM_WATCHED != 0 && passes_prefilter(&comm, flags) => {
            count_prefilter_passed();
        }
        true if flags & PROGRAM_WATCHED != 0
            || is_multi_call_name(&comm)
            || exe_needs_judging(&comm, flags) =>
        {
            stop_watched(pid, session_id, comm);
        }
        true => {}
        false if flags & PROGRAM_AGENT != 0 => {
            let entry = SessionEntry {
                session_id: pid,
                flags: SESSION_DETECTED,
                owner_uid: crate::maps::current_uid(),
                _pad: 0,
            };
            if SESSIONS.insert(pid, entry, BPF_NOEXIST as u64).is_ok() {
                emit(EventKind::SessionDetected, pid, pid, comm);
            } else {
                emit(EventKind::SessionOverflow, pid, pid, comm);
            }
        }
        false if flags & PROGRAM_INTERPRETER != 0 => {
            emit(EventKind::InterpreterExec, pid, 0, comm);
        }
        false => {}
    }
    0
}

/// Whether a watched exec in a session runs without a stop: the file run
/// is the program itself (its own name, root's, in a program directory; with
/// more than one link only where guardd found hard links root's own doing,
/// as git's `git-*` links are; not
/// a script, whose file the kernel no longer sees here, nor a multi-call
/// binary) and its argv passes the program's prefilter (`argv.rs`).
#[inline(always)]
fn passes_prefilter(comm: &Comm, flags: u32) -> bool {
    if flags & (PROGRAM_MULTI_CALL | PROGRAM_SCRIPT_RUNNER) != 0 || is_multi_call_name(comm) {
        return false;
    }
    let Some(filter) = ARGV_FILTERS.get_ptr(comm) else {
        return false;
    };
    let filter = unsafe { *filter };
    if exe_name().is_none_or(|name| name != *comm) {
        return false;
    }
    let trusted_links = |links: u32| links == 1 || !one_link_required();
    if !matches!(exe_file_owner_and_links(), Some((0, links)) if trusted_links(links))
        || !exe_dir_is_known()
    {
        return false;
    }
    let Some((start, end)) = arg_bounds() else {
        return false;
    };
    crate::argv::passes(comm, &filter, start, end)
}

/// The exec took the task's TLS write event away (`remove_on_exec`): the
/// new image is followed again once it starts a TLS connection.
#[inline(always)]
fn drop_tls_follow(entry: *mut SessionEntry) {
    let flags = unsafe { (*entry).flags };
    if flags & SESSION_TLS_FOLLOWED != 0
        && SETTINGS
            .get(0)
            .is_some_and(|bits| bits & SETTING_EXEC_UNFOLLOWS != 0)
    {
        unsafe { (*entry).flags = flags & !SESSION_TLS_FOLLOWED };
    }
}

/// guardd's `SETTING_ONE_LINK`; an unreadable setting requires one link.
#[inline(always)]
fn one_link_required() -> bool {
    SETTINGS
        .get(0)
        .is_none_or(|bits| bits & SETTING_ONE_LINK != 0)
}

/// `mm->arg_start` and `mm->arg_end` of the new image.
#[inline(always)]
fn arg_bounds() -> Option<(u64, u64)> {
    let off = exe_offsets();
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let mm: *const u8 = bpf_probe_read_kernel(task.add(off.task_mm as usize).cast()).ok()?;
        let start: u64 = bpf_probe_read_kernel(mm.add(off.mm_arg_start as usize).cast()).ok()?;
        let end: u64 = bpf_probe_read_kernel(mm.add(off.mm_arg_end as usize).cast()).ok()?;
        Some((start, end))
    }
}

/// Stops a watched exec for guardd to judge; the stop is recorded first in
/// HELD, so that a lost event is still found there.
#[inline(always)]
fn stop_watched(pid: u32, session_id: u32, comm: Comm) {
    let recorded = HELD.insert(pid, held_entry(session_id), 0).is_ok();
    let stopped = unsafe { bpf_send_signal(SIGSTOP) } == 0;
    let kind = if stopped {
        EventKind::ExecHeld
    } else {
        EventKind::ExecStopFailed
    };
    if !emit(kind, pid, session_id, comm) && !recorded {
        // Neither the map nor the ring buffer had room: guardd would never
        // learn of this stop. Fail closed: it must neither run unjudged nor
        // stay stopped forever.
        unsafe { bpf_send_signal(SIGKILL) };
        count_overflow(OVERFLOW_STOPS_KILLED);
    }
}

/// Whether an exec whose comm (with `PROGRAMS` flags `comm_flags`) is not
/// watched is still to be judged: its file
/// is a watched program by name (a symlink `k -> kubectl`), or it may be one
/// under another name (a hard link, a copy the user made, a memfd), which
/// guardd tells by inode and content, or it is a shell or interpreter given
/// a file to run, which may be a copy of a watched `#!` script. Only asked
/// in sessions.
#[inline(always)]
fn exe_needs_judging(comm: &Comm, comm_flags: u32) -> bool {
    let Some(name) = exe_name() else {
        return false;
    };
    // The file's own name is almost always the comm, looked up already.
    let flags = match name == *comm {
        true => comm_flags,
        false => match PROGRAMS.get_ptr(name) {
            Some(flags) => unsafe { *flags },
            None => 0,
        },
    };
    (name != *comm && is_watched_under_its_name(flags))
        || runs_a_file(flags)
        || has_prefix(&name, b"memfd:")
        || exe_file_is_unknown()
}

/// Whether the executed file's own name (not the name it was run by), whose
/// `PROGRAMS` flags are `flags`, is a watched program. A multi-call binary
/// run under another name stops only when the applet argv[0] names may be
/// watched or may run a script: busybox's `sleep` or `sh -c` links run
/// freely.
#[inline(always)]
fn is_watched_under_its_name(flags: u32) -> bool {
    if flags & PROGRAM_WATCHED == 0 {
        return false;
    }
    if flags & PROGRAM_MULTI_CALL == 0 {
        return true;
    }
    // An argv[0] that cannot be read or is cut short stops (fail closed).
    let Some(applet) = argv0_name() else {
        return true;
    };
    let applet_flags = match PROGRAMS.get_ptr(applet) {
        Some(flags) => unsafe { *flags },
        None => 0,
    };
    is_multi_call_name(&applet) || applet_flags & PROGRAM_WATCHED != 0 || runs_a_file(applet_flags)
}

/// Whether a script runner (flagged so by guardd: a shell, or the
/// interpreter of a watched `#!` script) runs a file rather than a command
/// string: anything but a `-c` option cluster as argv[1] stops, so that
/// `sh ./copy destroy` and a copy run by its `#!` line (argv `sh ./copy
/// destroy` too) are judged. No argv[1] stops as well: the script may come
/// from stdin.
#[inline(always)]
fn runs_a_file(flags: u32) -> bool {
    flags & PROGRAM_SCRIPT_RUNNER != 0 && !argv1_is_command_option()
}

/// Whether argv[1] is `-c`, or a cluster of lower-case options holding `c`
/// and none that takes the next argument (`-lc`, `-ec`, not `-oc` or
/// python's `-mc`). Anything unreadable or cut short is not.
#[inline(always)]
fn argv1_is_command_option() -> bool {
    let mut argv0 = [0u8; 128];
    let mut argv1 = [0u8; 8];
    let Some((start, end)) = arg_bounds() else {
        return false;
    };
    unsafe {
        // argv[0]'s length says where argv[1] starts; no scan for the NUL.
        let Ok(first) = bpf_probe_read_user_str_bytes(start as *const u8, &mut argv0) else {
            return false;
        };
        let len = first.len() as u64;
        if len >= argv0.len() as u64 - 1 {
            return false;
        }
        let at = start + len + 1;
        if at >= end {
            return false;
        }
        let Ok(second) = bpf_probe_read_user_str_bytes(at as *const u8, &mut argv1) else {
            return false;
        };
        if second.len() >= argv1.len() - 1 {
            return false;
        }
    }
    is_command_cluster(u64::from_le_bytes(argv1))
}

/// The test of `argv1_is_command_option` on argv[1]'s bytes in one register:
/// shifts, not indices into a stack buffer, which the 6.1 verifier refuses
/// when they are computed.
#[inline(always)]
fn is_command_cluster(word: u64) -> bool {
    if word as u8 != b'-' {
        return false;
    }
    let mut has_c = false;
    let mut shift = 8;
    while shift < 64 {
        let byte = (word >> shift) as u8;
        if byte == 0 {
            break;
        }
        if byte == b'c' {
            has_c = true;
        } else if !byte.is_ascii_lowercase() || byte == b'o' || byte == b'm' {
            return false;
        }
        shift += 8;
    }
    has_c
}

/// A file that root does not own (any copy a user made), whose link count
/// is not one (a hard link, an unlinked file) or that is not in one of the
/// system's program directories (a copy root made) is not known to be what
/// its name says. An unreadable inode counts as unknown.
#[inline(always)]
fn exe_file_is_unknown() -> bool {
    match exe_file_owner_and_links() {
        Some((uid, nlink)) => uid != 0 || nlink != 1 || !exe_dir_is_known(),
        None => true,
    }
}

/// Whether the directory the executed file was found in is in `EXEC_DIRS`.
#[inline(always)]
fn exe_dir_is_known() -> bool {
    let off = exe_offsets();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mm: *const u8 = peek(task, off.task_mm);
    let file: *const u8 = peek(mm, off.mm_exe_file);
    let dentry: *const u8 = peek(file, off.file_dentry);
    let dir: *const u8 = peek(dentry, off.dentry_parent);
    let inode: *const u8 = peek(dir, off.dentry_inode);
    let sb: *const u8 = peek(inode, off.inode_sb);
    let key = FileKey {
        dev: peek(sb, off.sb_dev),
        _pad: 0,
        ino: peek(inode, off.inode_ino),
    };
    EXEC_DIRS.get_ptr(key).is_some()
}

/// `i_uid` and `i_nlink` of `current->mm->exe_file->f_inode`. No closure:
/// one that is not inlined becomes a BPF function the 6.1 verifier refuses.
#[inline(always)]
fn exe_file_owner_and_links() -> Option<(u32, u32)> {
    let off = exe_offsets();
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let mm: *const u8 = bpf_probe_read_kernel(task.add(off.task_mm as usize).cast()).ok()?;
        let file: *const u8 =
            bpf_probe_read_kernel(mm.add(off.mm_exe_file as usize).cast()).ok()?;
        let inode: *const u8 =
            bpf_probe_read_kernel(file.add(off.file_inode as usize).cast()).ok()?;
        let uid: u32 = bpf_probe_read_kernel(inode.add(off.inode_uid as usize).cast()).ok()?;
        let nlink: u32 = bpf_probe_read_kernel(inode.add(off.inode_nlink as usize).cast()).ok()?;
        Some((uid, nlink))
    }
}

/// The applet name a multi-call binary takes from argv[0], when argv[0] is a
/// bare name (as a shell runs a command found on PATH): read straight into
/// a comm-sized key, without the `-` of a login shell. A path (`/bin/sleep`),
/// or a name as long as a comm or longer, gives None, and the caller stops
/// (fail closed): finding a basename here costs the verifier more than 6.1
/// can give under emulation.
#[inline(always)]
fn argv0_name() -> Option<Comm> {
    let off = exe_offsets();
    let mut key = [0u8; COMM_LEN];
    let len = unsafe {
        let task = bpf_get_current_task() as *const u8;
        let mm: *const u8 = bpf_probe_read_kernel(task.add(off.task_mm as usize).cast()).ok()?;
        let mut at: u64 = bpf_probe_read_kernel(mm.add(off.mm_arg_start as usize).cast()).ok()?;
        let first: u8 = bpf_probe_read_user(at as *const u8).ok()?;
        if first == b'-' {
            at += 1;
        }
        bpf_probe_read_user_str_bytes(at as *const u8, &mut key)
            .ok()?
            .len()
    };
    if len == 0 || len >= COMM_LEN - 1 {
        return None;
    }
    // Not `contains`: that is core's memchr, with pointer masking the
    // verifier refuses.
    for byte in key {
        if byte == b'/' {
            return None;
        }
    }
    Some(key)
}

/// busybox and toybox act as themselves (applet from argv[1]) under any name
/// they start with (`busybox.static`).
#[inline(always)]
fn is_multi_call_name(name: &Comm) -> bool {
    has_prefix(name, b"busybox") || has_prefix(name, b"toybox")
}

/// Byte by byte: `starts_with` calls `bcmp`, a BPF function taking stack
/// pointers, which the 6.1 verifier refuses.
#[inline(always)]
fn has_prefix(name: &Comm, prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() && i < COMM_LEN {
        if name[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `current->mm->exe_file->f_path.dentry->d_name.name`, cut like a comm.
#[inline(always)]
fn exe_name() -> Option<Comm> {
    let off = exe_offsets();
    if off.enabled == 0 {
        return None;
    }
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let mm: *const u8 = bpf_probe_read_kernel(task.add(off.task_mm as usize).cast()).ok()?;
        let file: *const u8 =
            bpf_probe_read_kernel(mm.add(off.mm_exe_file as usize).cast()).ok()?;
        let dentry: *const u8 =
            bpf_probe_read_kernel(file.add(off.file_dentry as usize).cast()).ok()?;
        let name: *const u8 =
            bpf_probe_read_kernel(dentry.add(off.dentry_name as usize).cast()).ok()?;
        let mut key = [0u8; COMM_LEN];
        // Reads at most 15 bytes and the NUL, like the kernel cuts comm.
        bpf_probe_read_kernel_str_bytes(name, &mut key).ok()?;
        Some(key)
    }
}
