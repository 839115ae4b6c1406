//! agent-guard kernel programs. One file per area:
//! - `sessions`: which threads belong to an agent session (fork/exit);
//! - `exec`: the exec gate (stop watched programs in sessions, detect agents);
//! - `argv`: the exec gate's prefilter (a watched exec no rule can match runs);
//! - `holds`: marks a held process another process continued (SIGCONT);
//! - `self_protect`: BPF LSM hooks for hold integrity and self-protection;
//! - `gate`: BPF LSM syscall gate on protected paths (hold, deny, audit);
//! - `report`: report-only syscall gate where the BPF LSM does not run;
//! - `escape`: BPF LSM hold of connects to servers outside the session;
//! - `api`: uprobes on TLS and SQL client libraries (the API-client gate).
//!
//! Kernel compatibility. The tracepoints need no BTF; the LSM programs need
//! BTF and a kernel booted with `bpf` in `lsm=` (loaded only there):
//!
//! | program          | tracepoint                 | min kernel | why                     |
//! |------------------|----------------------------|------------|-------------------------|
//! | `sessions_fork`  | `sched/sched_process_fork` | 5.8        | ring buffer             |
//! | `sessions_exit`  | `sched/sched_process_exit` | 5.8        | ring buffer             |
//! | `exec_gate`      | `sched/sched_process_exec` | 5.8        | ring buffer, send_signal (5.3); argv prefilter: LPM trie (4.11), probe_read_user_str (5.5) |
//! | `holds_signal_generate` | `signal/signal_generate` | 4.10 | LRU hash map        |
//! | `report_syscall` | `syscalls/sys_enter_*` of the gated calls | 5.8 | ring buffer; CONFIG_FTRACE_SYSCALLS |
//! | `self_protect_task_kill` | LSM `task_kill`         | 5.7        | BPF LSM                 |
//! | `self_protect_ptrace` | LSM `ptrace_access_check`  | 5.7        | BPF LSM                 |
//! | `self_protect_bpf`    | LSM `bpf` (3 parameters)   | 5.7        | BPF LSM; before 6.9     |
//! | `self_protect_bpf_6_9` | LSM `bpf` (4 parameters)  | 6.9        | gained `kernel`         |
//! | `self_protect_file_open` | LSM `file_open`         | 5.7        | BPF LSM                 |
//! | `self_protect_path_*` | LSM `path_{unlink,rmdir,mknod,truncate}` | 5.7 | CONFIG_SECURITY_PATH |
//! | `self_protect_path_rename` | LSM `path_rename` (5 parameters) | 5.19 | gained `flags` |
//! | `self_protect_path_rename_5_7` | LSM `path_rename` (4 parameters) | 5.7 | before 5.19 |
//! | `gate_path_{unlink,rmdir,mknod,truncate,chmod,chown}` | LSM `path_*` | 5.7 | CONFIG_SECURITY_PATH, bounded loop (5.3) |
//! | `gate_file_open` | LSM `file_open`            | 5.7        | BPF LSM                 |
//! | `gate_path_rename` | LSM `path_rename` (5 parameters) | 5.19 | gained `flags`      |
//! | `gate_path_rename_5_7` | LSM `path_rename` (4 parameters) | 5.7 | before 5.19     |
//! | `escape_unix_stream_connect` | LSM `unix_stream_connect` | 5.7 | CONFIG_SECURITY_NETWORK |
//! | `api_tls_write`, `api_sql_query`, `api_tls_free` | uprobes on libssl, libgnutls, libpq | 5.15 | attach cookie (perf link) |
//!
//! Where a hook's signature changed, the daemon loads the variant whose
//! parameter count matches `bpf_lsm_<hook>` in this kernel's BTF.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod api;
#[cfg(target_arch = "bpf")]
mod argv;
#[cfg(target_arch = "bpf")]
mod escape;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod gate;
#[cfg(target_arch = "bpf")]
mod holds;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod report;
#[cfg(target_arch = "bpf")]
mod self_protect;
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
