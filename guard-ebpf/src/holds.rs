//! Marks a held process that something other than guardd continued. Without
//! the BPF LSM nothing refuses that SIGCONT: a stop guardd has not yet taken
//! into ptrace-stop, or one left in group-stop while guardd is down, runs on.
//! The mark lets guardd say so and fail closed instead of holding a process
//! that already runs. The kernel's own SIGCONT to an orphaned process group
//! passes the LSM too, so this runs on both paths.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use guard_common::ContinuedEntry;

use crate::maps::{guardd, offsets, API_HELD, API_HELD_PROCS, CONTINUED, HELD};

const SIGCONT: i32 = 18;
/// `si_code` of a signal the kernel sent on its own.
const SI_KERNEL: i32 = 0x80;

#[tracepoint]
pub fn holds_signal_generate(ctx: TracePointContext) -> u32 {
    // Every signal of the machine passes here (a SIGCHLD per exit): leave at once.
    let Ok(sig) = (unsafe { ctx.read_at::<i32>(offsets().signal_sig as usize) }) else {
        return 0;
    };
    if sig != SIGCONT {
        return 0;
    }
    let Ok(target) = (unsafe { ctx.read_at::<i32>(offsets().signal_pid as usize) }) else {
        return 0;
    };
    // A stop of the exec gate, or of an API probe in any of the process's
    // threads (a SIGCONT to one thread continues them all): the mark is the
    // process's, with its latest API stop.
    let (key, stop_ktime_ns) = match HELD.get_ptr(target as u32) {
        Some(held) => (target as u32, unsafe { (*held).ktime_ns }),
        None => {
            let pid = match API_HELD.get_ptr(target as u32) {
                Some(held) => unsafe { (*held).pid },
                None => target as u32,
            };
            match API_HELD_PROCS.get_ptr(pid) {
                Some(at) => (pid, unsafe { *at }),
                None => return 0,
            }
        }
    };
    let sender = (bpf_get_current_pid_tgid() >> 32) as u32;
    if sender == guardd() {
        return 0;
    }
    let code = unsafe { ctx.read_at::<i32>(offsets().signal_code as usize) }.unwrap_or(0);
    let mark = ContinuedEntry {
        stop_ktime_ns,
        by: sender,
        from_kernel: u32::from(code == SI_KERNEL),
    };
    let _ = CONTINUED.insert(key, mark, 0);
    0
}
