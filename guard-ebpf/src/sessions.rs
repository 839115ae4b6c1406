//! Session membership: a forked child inherits its parent's session; an
//! exiting thread leaves it.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::EventKind;

use crate::maps::{emit, offsets, API_HELD, GATE_HELD, HELD, SESSIONS};

#[tracepoint]
pub fn sessions_fork(ctx: TracePointContext) -> u32 {
    // The tracepoint runs in the parent: the current thread is the one that forked.
    let parent = bpf_get_current_pid_tgid() as u32;
    let Some(entry) = SESSIONS.get_ptr(parent) else {
        return 0;
    };
    let entry = unsafe { *entry };
    let Ok(child) = (unsafe { ctx.read_at::<i32>(offsets().fork_child_pid as usize) }) else {
        report_overflow(entry.session_id);
        return 0;
    };
    if SESSIONS.insert(child as u32, entry, 0).is_err() {
        // The child escapes its session: never silently.
        report_overflow(entry.session_id);
    }
    0
}

#[tracepoint]
pub fn sessions_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(entry) = SESSIONS.get_ptr(tid) else {
        return 0;
    };
    let session_id = unsafe { (*entry).session_id };
    let _ = SESSIONS.remove(tid);
    // A stopped process can still be killed; tell the daemon its hold is moot.
    // Looked up before removed: a miss is lock-free, a removal takes the
    // bucket lock even when there is nothing to remove.
    let leader = (pid_tgid >> 32) as u32 == tid;
    if (HELD.get_ptr(tid).is_some() && HELD.remove(tid).is_ok())
        || (leader && GATE_HELD.get_ptr(tid).is_some() && GATE_HELD.remove(tid).is_ok())
    {
        emit(
            EventKind::HeldExit,
            tid,
            session_id,
            bpf_get_current_comm().unwrap_or_default(),
        );
    }
    // A thread an API probe stopped: its process's hold is moot only if
    // the whole process goes, which guardd checks.
    if API_HELD.get_ptr(tid).is_some() && API_HELD.remove(tid).is_ok() {
        emit(
            EventKind::HeldExit,
            (pid_tgid >> 32) as u32,
            session_id,
            bpf_get_current_comm().unwrap_or_default(),
        );
    }
    0
}

#[inline(always)]
fn report_overflow(session_id: u32) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    emit(
        EventKind::SessionOverflow,
        pid,
        session_id,
        bpf_get_current_comm().unwrap_or_default(),
    );
}
