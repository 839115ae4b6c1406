//! Report-only syscall gate, where the BPF LSM does not run: one program on
//! the `syscalls/sys_enter_*` tracepoints of the gated calls. For a thread in
//! a session it copies the call's path arguments to guardd, which reports
//! those on protected paths. Nothing is held or refused here: a tracepoint
//! cannot stop the call, and guardd's status says so per operation. Writing
//! opens of a few device files (`>/dev/null`) are not sent: each report
//! wakes guardd, and shells and git open /dev/null all the time.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::{
    EventKind, FileKey, ReportCall, ReportEvent, NO_ARG, QUIET_PATH, SESSION_SECCOMP,
};

use crate::maps::{
    count_lost, count_quiet_open, current_uid, EVENTS, REPORT_CALLS, REPORT_QUIET_OPENS, SESSIONS,
};

const AT_FDCWD: i32 = -100;
/// O_WRONLY, O_RDWR, O_CREAT, O_TRUNC: an open that writes.
const OPEN_WRITES: u64 = 0o1 | 0o2 | 0o100 | 0o1000;
/// `sys_enter_*` records: `__syscall_nr` then the six arguments as u64.
const NR_OFFSET: usize = 8;
const ARGS_OFFSET: usize = 16;

#[tracepoint]
pub fn report_syscall(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(session) = SESSIONS.get_ptr(tid) else {
        return 0;
    };
    let session = unsafe { *session };
    if session.flags & SESSION_SECCOMP != 0 {
        return 0;
    }
    let session_id = session.session_id;
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(NR_OFFSET) }) else {
        return 0;
    };
    let Some(call) = REPORT_CALLS.get_ptr(&(nr as u32)) else {
        return 0;
    };
    let call = unsafe { *call };
    let flags = arg(&ctx, call.flags_arg);
    if call.open_flags != 0 && flags & OPEN_WRITES == 0 {
        return 0;
    }
    if call.open_flags != 0 && opens_quiet_path(&ctx, &call) {
        count_quiet_open();
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ReportEvent>(0) else {
        count_lost();
        return 0;
    };
    let report = entry.as_mut_ptr();
    unsafe {
        let event = &mut (*report).event;
        event.ktime_ns = bpf_ktime_get_ns();
        event.kind = EventKind::GateReported as u32;
        event.pid = (pid_tgid >> 32) as u32;
        event.session_id = session_id;
        event.uid = current_uid();
        event.comm = bpf_get_current_comm().unwrap_or_default();
        event.tid = tid;
        event.op = call.op;
        event.root = FileKey::default();
        (*report).flags = flags;
        for i in 0..2 {
            let dirfd = call.dirfd_args[i];
            (*report).dirfd[i] = if dirfd == NO_ARG {
                AT_FDCWD
            } else {
                arg(&ctx, dirfd) as i32
            };
            let path = &mut (*report).paths[i];
            path[0] = 0;
            let at = call.path_args[i];
            if at != NO_ARG {
                let pointer = arg(&ctx, at) as *const u8;
                if aya_ebpf::helpers::bpf_probe_read_user_str_bytes(pointer, path).is_err() {
                    path[0] = 0;
                }
            }
        }
    }
    entry.submit(0);
    0
}

/// Syscall argument `index` (0..6), or 0 for `NO_ARG`.
#[inline(always)]
fn arg(ctx: &TracePointContext, index: u32) -> u64 {
    if index >= 6 {
        return 0;
    }
    unsafe { ctx.read_at::<u64>(ARGS_OFFSET + 8 * index as usize) }.unwrap_or(0)
}

/// Whether an open's path is, byte for byte, one of `REPORT_QUIET_OPENS`.
#[inline(always)]
fn opens_quiet_path(ctx: &TracePointContext, call: &ReportCall) -> bool {
    let at = call.path_args[0];
    if at == NO_ARG {
        return false;
    }
    let mut key = [0u8; QUIET_PATH];
    let pointer = arg(ctx, at) as *const u8;
    match unsafe { aya_ebpf::helpers::bpf_probe_read_user_str_bytes(pointer, &mut key) } {
        // A read that filled the key may have been cut: never quiet.
        Ok(path) if path.len() < QUIET_PATH - 1 => {}
        _ => return false,
    }
    REPORT_QUIET_OPENS.get_ptr(&key).is_some()
}
