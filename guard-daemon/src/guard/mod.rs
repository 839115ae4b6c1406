//! The daemon's state machine: kernel events -> session table -> policy ->
//! hold registry -> approvals -> release or kill -> audit log. All methods are
//! synchronous and short; callers hold the one lock around `Guard`.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use finish::{lsm_call_ending, stop_ending, Ending, Held, Outcome};
use guard_common::{Event, EventKind, SessionEntry, SESSION_DETECTED, SESSION_LAUNCHED};
use record::identity;

use crate::{
    audit::{AuditDecision, AuditEvent, AuditLog, AuditRecord, Channel},
    escape::escape_bytes,
    freezer::Freezer,
    holds::{format_duration, Hold, HoldRegistry},
    kernel::{Continuation, Kernel, ProgramSets},
    notice,
    policy::{Action, CommandContext, Explanation, OnTimeout, Policy},
    process::{Pidfd, ProcessHandle, Recorded},
    procfs,
    program_files::ProgramFiles,
    protected::OwnFiles,
    protocol::{GateStats, HoldState, PolicySummary, Response, SessionView, StatusView},
    request::Request,
    state::{SavedHold, SavedSession, SavedState, StateStore},
    stats::ExecStats,
    tracer::Tracer,
};

/// A process stopped by the kernel is raised from the HELD map when its ring
/// buffer event has not arrived after this long.
const RECOVERY_GRACE: Duration = Duration::from_secs(1);
/// Who sent a control request, from SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: u32,
}

impl Peer {
    /// A decision that came through the fleet relay (it carries its own
    /// signature; the relay proves nothing).
    pub const RELAY: Peer = Peer {
        pid: None,
        uid: u32::MAX,
    };
}

pub struct Guard {
    policy: Policy,
    tracer: Tracer,
    /// Where held processes are frozen, or why they cannot be here.
    freezer: Result<Freezer, String>,
    source: reload::PolicySource,
    own: own_files::OwnFileGuard,
    kernel: Kernel,
    sessions: Sessions,
    holds: HoldRegistry,
    audit: AuditLog,
    exec_gate: ExecGate,
    state: StateStore,
    gates: syscall_gate::SyscallGates,
    pins: pin_watch::PinWatch,
    api: api_gate::ApiGate,
}

/// What the kernel said about one stopped process.
struct Stop<'a> {
    pid: u32,
    session: u32,
    comm: &'a str,
    stopped_at_ns: Option<u64>,
    /// When the kernel's HELD map recorded the stop (a SIGCONT mark names it).
    recorded_ns: Option<u64>,
    stop_failed: bool,
}

mod api_gate;
mod approvals;
pub use approvals::Reauth;
use approvals::SameUidAuth;
mod events;
mod exec_gate;
use exec_gate::ExecGate;
pub(crate) mod finish;
mod fleet_policy;
mod frozen;
mod map_scan;
mod outside;
mod own_files;
mod pin_layout;
mod pin_watch;
mod policy_lock;
mod policy_writes;
mod prefilter;
mod record;
mod reload;
mod requests;
mod restore;
mod sessions;
pub use sessions::Session;
use sessions::Sessions;
mod status;
mod syscall_gate;

/// What keeps held processes from running: the ptrace thread, and the
/// cgroup freezer or why there is none here.
pub struct HoldKeepers {
    pub tracer: Tracer,
    pub freezer: Result<Freezer, String>,
}

impl Guard {
    pub fn new(
        policy: Policy,
        program_files: ProgramFiles,
        own_files: OwnFiles,
        kernel: Kernel,
        keepers: HoldKeepers,
        audit: AuditLog,
        mut state: StateStore,
    ) -> Self {
        let HoldKeepers { tracer, freezer } = keepers;
        let saved = state.load().unwrap_or_else(|err| {
            // The stopped processes stay stopped: the kernel's HELD map raises them anew.
            tracing::error!("state unreadable, starting without it: {err}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.reason = Some(format!(
                "state unreadable: {err}; held processes are raised again from the kernel map"
            ));
            audit.write(&record);
            None
        });
        let fresh = || crate::state::new_state(format!("{:04x}", (monotonic_ns() / 1000) as u16));
        let restored = saved.unwrap_or_else(fresh);
        let exec_gate = ExecGate::new(program_files);
        if let Err(why) = &freezer {
            tracing::warn!("held processes are kept in ptrace-stop, not frozen: {why}");
        }
        let mut guard = Self {
            source: reload::PolicySource::new(own_files.config.clone(), &policy),
            pins: Default::default(),
            gates: Default::default(),
            api: Default::default(),
            policy,
            tracer,
            freezer,
            own: own_files::OwnFileGuard::new(own_files),
            kernel,
            sessions: Sessions::default(),
            holds: HoldRegistry::new(restored.id_prefix.clone(), restored.next_id),
            audit,
            exec_gate,
            state,
        };
        guard.restore(restored);
        guard.probe_session_programs(None);
        guard.sync_own_files();
        guard.sync_gate_roots();
        guard.set_report_calls();
        guard.sync_settings();
        guard.start_policy_lock();
        guard
    }
}

fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn error(message: &str) -> Response {
    Response::Error {
        message: message.to_string(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
