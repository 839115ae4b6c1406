//! agent-guard kernel programs. One file per area:
//! - `sessions`: which threads belong to an agent session (fork/exit);
//! - `exec`: the exec gate (stop watched programs in sessions, detect agents);
//! - `protect`: BPF LSM hooks for hold integrity and self-protection.
//!
//! Kernel compatibility. The tracepoints need no BTF; the LSM programs need
//! BTF and a kernel booted with `bpf` in `lsm=` (loaded only there):
//!
//! | program          | tracepoint                 | min kernel | why                     |
//! |------------------|----------------------------|------------|-------------------------|
//! | `sessions_fork`  | `sched/sched_process_fork` | 5.8        | ring buffer             |
//! | `sessions_exit`  | `sched/sched_process_exit` | 5.8        | ring buffer             |
//! | `exec_gate`      | `sched/sched_process_exec` | 5.8        | ring buffer, send_signal (5.3) |
//! | `protect_task_kill` | LSM `task_kill`         | 5.7        | BPF LSM                 |
//! | `protect_ptrace` | LSM `ptrace_access_check`  | 5.7        | BPF LSM                 |
//! | `protect_bpf`    | LSM `bpf`                  | 5.7        | BPF LSM                 |
//! | `protect_file_open` | LSM `file_open`         | 5.7        | BPF LSM                 |
//! | `protect_path_*` | LSM `path_{unlink,rmdir,mknod,rename,truncate}` | 5.7 | CONFIG_SECURITY_PATH |
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod protect;
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
