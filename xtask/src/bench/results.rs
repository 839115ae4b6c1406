//! The shape of `target/bench/results.json`, written by a bench run and read
//! back by `--report`. A renamed figure fails to compile instead of leaving a
//! hole in BENCHMARKS.md. guardd's answers are read as guard-protocol's types
//! (`StatusView`, `GateStats`, `Latency`...), the ones guardd writes them with.
use std::collections::BTreeMap;

use guard_protocol::Latency;
use serde::{Deserialize, Serialize};

/// Median, p99, min and max of a set of runs, and how many there were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Summary {
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// The same runs without and with the guard, and their ratios (with / without).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PairSummary {
    pub no_guard_us: Summary,
    pub guard_us: Summary,
    pub ratio: Summary,
}

/// A measurement that may not run on this machine (a peer, the floor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum Measured<T> {
    Skipped { skipped: String },
    Done(T),
}

impl<T> Measured<T> {
    pub fn of<P>(result: Result<P, String>, summarize: impl FnOnce(&P) -> T) -> Self {
        match result {
            Ok(pair) => Self::Done(summarize(&pair)),
            Err(skipped) => Self::Skipped { skipped },
        }
    }
}

/// The guard's BPF programs over one loop (`super::kernel_cost`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct KernelCost {
    pub ns_per_iteration: f64,
    /// By program name.
    pub programs: BTreeMap<String, ProgramCost>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ProgramCost {
    pub ns_per_iteration: f64,
    pub ns_per_run: f64,
    pub runs_per_iteration: f64,
}

/// Exec load on the exec gate (`super::burst`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ExecLoad {
    pub sustained: Sustained,
    pub bursts: Vec<Burst>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Sustained {
    pub execs: u32,
    pub execs_per_second_no_guard: f64,
    pub execs_per_second: f64,
    pub stops: u64,
    pub events_lost: u64,
    pub raised_from_map: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Burst {
    pub size: u32,
    pub spawn_ms_while_frozen: f64,
    pub completed: bool,
    pub drain_ms_after_thaw: f64,
    pub stops: u64,
    pub events_lost: u64,
    pub raised_from_map: u64,
}

/// Everything one `cargo xtask bench` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Results {
    pub machine: String,
    pub commit: String,
    pub execs_per_run: u32,
    pub rounds: usize,
    pub outside_session: PairSummary,
    pub outside_session_bpf_ns_per_exec: Summary,
    pub outside_session_bpf_programs_last_round: BTreeMap<String, ProgramCost>,
    pub in_session_bpf_ns_per_exec: Summary,
    pub in_session_bpf_programs_last_round: BTreeMap<String, ProgramCost>,
    /// A watched program the argv prefilter lets run: argv read in the
    /// kernel (absent from runs before it).
    #[serde(default)]
    pub prefiltered_bpf_ns_per_exec: Option<Summary>,
    #[serde(default)]
    pub prefiltered_bpf_programs_last_round: BTreeMap<String, ProgramCost>,
    pub in_session_unwatched: PairSummary,
    pub watched_allowed_added_us: Summary,
    /// Absent from runs before the kernel's argv prefilter.
    #[serde(default)]
    pub watched_prefiltered: Option<PairSummary>,
    pub guardd_stop_to_decision_us: Latency,
    pub guardd_stop_to_event_us: Latency,
    pub approve_to_running_us: Summary,
    pub guardd_rss_idle_mib: Summary,
    pub guardd_rss_under_load_mib: Summary,
    pub guardd_cpu_percent_under_load: Summary,
    pub bpf_map_memlock_mib: Summary,
    pub unlinks_per_run: u32,
    pub gated_unlink: PairSummary,
    /// Absent from runs before it was measured.
    #[serde(default)]
    pub seccomp_notify_floor_unlink: Option<PairSummary>,
    pub detected_session_unlink: PairSummary,
    /// Gated unlinks where the BPF LSM runs (vm-test's kernel under QEMU),
    /// `lsm_gate::UNLINKS` per run. Absent from runs before it was measured.
    #[serde(default)]
    pub lsm_gate_unlink: Option<Measured<PairSummary>>,
    pub workload_make_j2: PairSummary,
    pub workload_git: PairSummary,
    /// Absent from runs before the kernel's argv prefilter.
    #[serde(default)]
    pub workload_git_status: Option<PairSummary>,
    /// `git status` under a bare allow-all seccomp filter, no guard.
    #[serde(default)]
    pub workload_git_status_seccomp_floor: Option<PairSummary>,
    /// `git status` in a session guardd detected (no seccomp filter).
    #[serde(default)]
    pub workload_git_status_detected: Option<PairSummary>,
    pub peer_bpftrace_exec_tracepoint: Measured<PairSummary>,
    pub peer_auditd_execve_rule: Measured<PairSummary>,
    pub peer_fapolicyd: Measured<PairSummary>,
    pub stop_continue_floor_added_us: Measured<Summary>,
    pub exec_load: ExecLoad,
    /// Absent from runs before the API-client gate.
    #[serde(default)]
    pub api_client_gate: Option<ApiCost>,
    /// Absent from runs before Go programs were probed.
    #[serde(default)]
    pub api_client_gate_go: Option<GoApiCost>,
    /// Absent from runs before the fleet relay's bench.
    #[serde(default)]
    pub fleet: Option<super::fleet::FleetCost>,
}

/// The API-client gate on Go programs (`super::go_api`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct GoApiCost {
    /// GETs on one keep-alive connection, in a session / without guardd.
    pub get_loop: PairSummary,
    /// The same over HTTP/2.
    #[serde(default)]
    pub get_loop_http2: Option<PairSummary>,
    /// A session's first exec of a Go binary against a later one.
    pub first_exec_extra_ms: Summary,
}

/// The API-client gate (`super::api`): microseconds per 1 KiB `SSL_write`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ApiCost {
    /// Bytes that are no request, outside any session: the probe's trap only.
    pub outside_session_raw: PairSummary,
    /// Whole GET request heads in a session: let through by the kernel.
    pub in_session_get: PairSummary,
    /// The same GET heads with a bare breakpoint on the probed instruction.
    pub bare_breakpoint: PairSummary,
    /// POST heads in a session: each stopped, judged and let go.
    pub in_session_post_added_us: Summary,
    /// guardd's API stop -> decision, over the last round's POSTs.
    pub guardd_stop_to_decision_us: guard_protocol::Latency,
    /// A held DELETE: the approve request -> its first bytes at the server.
    pub approve_to_wire_us: Summary,
    /// A process's first `SSL_new`: in a session (stopped until guardd
    /// follows it) minus outside, microseconds.
    #[serde(default)]
    pub first_connection_added_us: Summary,
}
