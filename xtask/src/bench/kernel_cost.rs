//! The guard's own time in the kernel per fork+exec+exit of the tiny loop,
//! outside sessions and in one,
//! from the kernel's run-time statistics of guardd's BPF programs. Wall-clock
//! ratios on a shared machine drift by several percent from run to run; this
//! figure counts only the programs' time, so it says how much of a ratio is
//! the guard. The statistics are on only while their fd is open
//! (BPF_ENABLE_STATS), so a crash cannot leave them on.
use std::{collections::BTreeMap, fs, os::fd::FromRawFd as _, os::fd::OwnedFd};

use super::{
    exec::{Bench, Guardd},
    results::{KernelCost, ProgramCost},
};
use anyhow::bail;

const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Nanoseconds per loop iteration, in total and per program, over one exec
/// loop (`Bench::tiny_loop` or `watched_loop`) while `guard` runs.
pub(super) fn per_exec(
    bench: &Bench,
    guard: &Guardd,
    exec_loop: (std::process::Command, u32),
) -> anyhow::Result<KernelCost> {
    let names: BTreeMap<u64, String> = guard
        .status()?
        .programs
        .into_iter()
        .map(|p| (u64::from(p.id), p.name))
        .collect();
    let _stats = enable_run_time_stats()?;
    let before = run_times(guard.child.id())?;
    let count = exec_loop.1;
    bench.per_exec_us(exec_loop)?;
    let after = run_times(guard.child.id())?;
    let mut programs = BTreeMap::new();
    let mut total = 0.0;
    for (id, (ns, runs)) in &after {
        let (ns_before, runs_before) = before.get(id).copied().unwrap_or_default();
        let (ns, runs) = (ns - ns_before, runs - runs_before);
        if runs == 0 {
            continue;
        }
        let per_iteration = ns as f64 / f64::from(count);
        total += per_iteration;
        let name = names.get(id).cloned().unwrap_or_else(|| format!("id {id}"));
        programs.insert(
            name,
            ProgramCost {
                ns_per_iteration: per_iteration,
                ns_per_run: ns as f64 / runs as f64,
                runs_per_iteration: runs as f64 / f64::from(count),
            },
        );
    }
    Ok(KernelCost {
        ns_per_iteration: total,
        programs,
    })
}

/// Program id -> (run time ns, runs), for every program fd `pid` holds.
fn run_times(pid: u32) -> anyhow::Result<BTreeMap<u64, (u64, u64)>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let info = fs::read_to_string(entry?.path()).unwrap_or_default();
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        if let (Some(id), Some(ns), Some(runs)) =
            (field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
        {
            out.insert(id, (ns, runs));
        }
    }
    Ok(out)
}

/// The fd that keeps the kernel's BPF run-time statistics on.
fn enable_run_time_stats() -> anyhow::Result<OwnedFd> {
    // union bpf_attr { struct { __u32 type; } enable_stats; }
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
