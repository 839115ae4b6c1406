//! The exec gate. `sched_process_exec` fires after the new image is loaded and
//! before its first user instruction, with `comm` already set to the basename
//! of the executed file (the script, not its interpreter, for `#!` scripts).
//! In a session, a program run under another name (a symlink) is recognised
//! by the name of the file the kernel actually executed.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_send_signal,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::{
    Comm, EventKind, SessionEntry, COMM_LEN, OVERFLOW_STOPS_KILLED, PROGRAM_AGENT,
    PROGRAM_INTERPRETER, PROGRAM_WATCHED, SESSION_DETECTED,
};

use crate::maps::{
    count_overflow, emit, exe_offsets, held_entry, offsets, HELD, PROGRAMS, SESSIONS,
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
    let entry = SESSIONS.get_ptr(pid);
    let in_session = entry.is_some();
    let session_id = entry.map_or(0, |entry| unsafe { (*entry).session_id });
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    let flags = match PROGRAMS.get_ptr(comm) {
        Some(flags) => unsafe { *flags },
        None if !in_session => return 0,
        None => 0,
    };
    match in_session {
        true if flags & PROGRAM_WATCHED != 0 || exe_name_is_watched(&comm) => {
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

/// Whether the executed file's own name (not the name it was run by, as for a
/// symlink `k -> kubectl`) is a watched program. Only asked in sessions.
#[inline(always)]
fn exe_name_is_watched(comm: &Comm) -> bool {
    let Some(name) = exe_name() else {
        return false;
    };
    if name == *comm {
        return false;
    }
    PROGRAMS
        .get_ptr(name)
        .is_some_and(|flags| unsafe { *flags } & PROGRAM_WATCHED != 0)
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
