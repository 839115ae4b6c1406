//! agent-guard kernel programs. One file per area:
//! - `sessions`: which threads belong to an agent session (fork/exit);
//! - `exec`: the exec gate (stop watched programs in sessions, detect agents).
//!
//! Kernel compatibility (all attach to `sched/*` tracepoints, no BTF needed):
//!
//! | program          | tracepoint                 | min kernel | why                     |
//! |------------------|----------------------------|------------|-------------------------|
//! | `sessions_fork`  | `sched/sched_process_fork` | 5.8        | ring buffer             |
//! | `sessions_exit`  | `sched/sched_process_exit` | 5.8        | ring buffer             |
//! | `exec_gate`      | `sched/sched_process_exec` | 5.8        | ring buffer, send_signal (5.3) |
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod sessions;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
