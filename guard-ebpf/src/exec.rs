//! The exec gate. `sched_process_exec` fires after the new image is loaded and
//! before its first user instruction, with `comm` already set to the basename
//! of the executed file (the script, not its interpreter, for `#!` scripts).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_send_signal},
    macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::{
    EventKind, SessionEntry, PROGRAM_AGENT, PROGRAM_INTERPRETER, PROGRAM_WATCHED, SESSION_DETECTED,
};

use crate::maps::{emit, held_entry, offsets, HELD, PROGRAMS, SESSIONS};

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
    let session = SESSIONS.get_ptr(pid).map(|entry| unsafe { *entry });
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    let flags = match PROGRAMS.get_ptr(comm) {
        Some(flags) => unsafe { *flags },
        None => return 0,
    };
    match session {
        Some(session) if flags & PROGRAM_WATCHED != 0 => {
            // Record the stop first: if the event is lost, the daemon still finds it here.
            let _ = HELD.insert(pid, held_entry(session.session_id), 0);
            let stopped = unsafe { bpf_send_signal(SIGSTOP) } == 0;
            let kind = if stopped {
                EventKind::ExecHeld
            } else {
                EventKind::ExecStopFailed
            };
            emit(kind, pid, session.session_id, comm);
        }
        Some(_) => {}
        None if flags & PROGRAM_AGENT != 0 => {
            let entry = SessionEntry {
                session_id: pid,
                flags: SESSION_DETECTED,
            };
            if SESSIONS.insert(pid, entry, BPF_NOEXIST as u64).is_ok() {
                emit(EventKind::SessionDetected, pid, pid, comm);
            } else {
                emit(EventKind::SessionOverflow, pid, pid, comm);
            }
        }
        None if flags & PROGRAM_INTERPRETER != 0 => {
            emit(EventKind::InterpreterExec, pid, 0, comm);
        }
        None => {}
    }
    0
}
