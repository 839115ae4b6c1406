//! Maps and load-time constants shared by the programs. The daemon finds
//! the maps by these identifiers, as `guard_common::names::map` spells
//! them (a test of guard-daemon checks the two agree).
use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use guard_common::{
    ApiConnKey, ApiHeldEntry, ArgvFilter, ArgvWordKey, Comm, ContinuedEntry, Event, EventKind,
    ExeNameOffsets, FileKey, GateDecision, GateDecisionKey, GateHeldEntry, GateRoot, HeldEntry,
    ReportCall, SessionEntry, TracepointOffsets, API_PEEK, ARGV_LONG_ARG, COUNT_PREFILTER_PASSED,
    COUNT_QUIET_OPENS, COUNT_SLOTS, EVENTS_BYTES, MAX_API_CONNS, MAX_API_HELD, MAX_API_POINTS,
    MAX_ARGV_WORDS, MAX_EXEC_DIRS, MAX_GATE_DECISIONS, MAX_GATE_ROOTS, MAX_HELD, MAX_PROGRAMS,
    MAX_PROTECTED, MAX_QUIET_PATHS, MAX_REPORT_CALLS, MAX_SESSION_TASKS, OVERFLOW_EVENTS_LOST,
    OVERFLOW_SLOTS, QUIET_PATH,
};

/// Thread id -> session, for every thread in an agent session.
#[map]
pub static SESSIONS: HashMap<u32, SessionEntry> = HashMap::with_max_entries(MAX_SESSION_TASKS, 0);

/// Program name (`comm`) -> `PROGRAM_*` flags, derived from the policy by the daemon.
#[map]
pub static PROGRAMS: HashMap<Comm, u32> = HashMap::with_max_entries(MAX_PROGRAMS, 0);

/// Program name (`comm`) -> its argv prefilter, for the watched programs
/// guardd could summarise (see `argv.rs`); a watched program without one
/// always stops.
#[map]
pub static ARGV_FILTERS: HashMap<Comm, ArgvFilter> = HashMap::with_max_entries(MAX_PROGRAMS, 0);

/// (filter id, word or prefix) -> 1: the arguments that stop a prefiltered program.
#[map]
pub static ARGV_WORDS: LpmTrie<ArgvWordKey, u32> = LpmTrie::with_max_entries(MAX_ARGV_WORDS, 0);

/// Per CPU: a long argument, read whole to learn where the next one starts.
#[map]
pub static ARGV_SCRATCH: PerCpuArray<[u8; ARGV_LONG_ARG]> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, by `COUNT_*` slot: what the programs decided without guardd.
#[map]
pub static KERNEL_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_SLOTS, 0);

/// Counts one watched exec the prefilter let run.
#[inline(always)]
pub fn count_prefilter_passed() {
    count(COUNT_PREFILTER_PASSED);
}

/// Counts one writing open of a quiet path the report-only program did not send.
#[inline(always)]
pub fn count_quiet_open() {
    count(COUNT_QUIET_OPENS);
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(count) = KERNEL_COUNTS.get_ptr_mut(slot) {
        unsafe { *count += 1 };
    }
}

/// The system's program directories (device, inode) -> 1: in a session, a
/// file of root's elsewhere (a copy an agent running as root made) stops
/// for guardd to tell what it is.
#[map]
pub static EXEC_DIRS: HashMap<FileKey, u32> = HashMap::with_max_entries(MAX_EXEC_DIRS, 0);

/// Pid -> stop record, for every process the exec gate stopped and the daemon has not decided.
#[map]
pub static HELD: HashMap<u32, HeldEntry> = HashMap::with_max_entries(MAX_HELD, 0);

/// Pid -> a SIGCONT from another process than guardd while HELD listed it.
/// Never deleted by the programs: LRU bounds it, and a mark names its stop.
/// Sized like HELD by the daemon.
#[map]
pub static CONTINUED: LruHashMap<u32, ContinuedEntry> = LruHashMap::with_max_entries(MAX_HELD, 0);

/// Files session processes may not change (`PROTECT_*` flags), for the LSM hooks.
#[map]
pub static PROTECTED: HashMap<FileKey, u32> = HashMap::with_max_entries(MAX_PROTECTED, 0);

/// Protected roots of the syscall gate (by device and inode), for the LSM hooks.
#[map]
pub static GATE_ROOTS: HashMap<FileKey, GateRoot> = HashMap::with_max_entries(MAX_GATE_ROOTS, 0);

/// Pid -> the gated call that stopped it, until guardd has decided.
#[map]
pub static GATE_HELD: HashMap<u32, GateHeldEntry> = HashMap::with_max_entries(MAX_HELD, 0);

/// (pid, protected root) -> guardd's decision, for the restarted call and the
/// process's later calls on that tree.
#[map]
pub static GATE_DECIDED: HashMap<GateDecisionKey, GateDecision> =
    HashMap::with_max_entries(MAX_GATE_DECISIONS, 0);

/// Syscall number -> where its arguments are, for the report-only tracepoint
/// (empty unless guardd reports: no BPF LSM and the gate not off).
#[map]
pub static REPORT_CALLS: HashMap<u32, ReportCall> = HashMap::with_max_entries(MAX_REPORT_CALLS, 0);

/// Absolute paths (zero-padded) whose writing opens the report-only program
/// does not send: device files only root can replace that no `[[protect]]`
/// entry can cover, such as /dev/null (guardd checks both).
#[map]
pub static REPORT_QUIET_OPENS: HashMap<[u8; QUIET_PATH], u8> =
    HashMap::with_max_entries(MAX_QUIET_PATHS, 0);

/// Thread id -> the client call an API probe stopped, until guardd has decided.
#[map]
pub static API_HELD: HashMap<u32, ApiHeldEntry> = HashMap::with_max_entries(MAX_API_HELD, 0);

/// Process id -> when an API probe last stopped one of its threads, while
/// any is stopped: a SIGCONT, a ptrace or a `process_vm_writev` reaches the
/// process, whichever thread is held. guardd removes it with the last stop.
#[map]
pub static API_HELD_PROCS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_API_HELD, 0);

/// (event index, page offset of the probed address) -> the attach cookie
/// of one function of a shared probe event (see `API_COOKIE_POINTS`).
#[map]
pub static API_POINTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_API_POINTS, 0);

/// (pid, connection) -> body bytes guardd expects next on a TLS connection
/// it is in the middle of a request of, or `API_OPAQUE`. Filled by guardd;
/// LRU, so that a process's forgotten connections make room.
#[map]
pub static API_CONNS: LruHashMap<ApiConnKey, u64> = LruHashMap::with_max_entries(MAX_API_CONNS, 0);

/// Per CPU: the bytes of a write or query the API probes look at.
#[map]
pub static API_SCRATCH: PerCpuArray<[u8; API_PEEK]> = PerCpuArray::with_max_entries(1, 0);

/// `[0]`: pid of the running guardd, the only process that may release a hold
/// (0 while none runs).
#[map]
pub static GUARDD: Array<u32> = Array::with_max_entries(1, 0);

/// `[0]`: the policy's `SETTING_*` bits that the kernel side obeys.
#[map]
pub static SETTINGS: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// What did not fit, per CPU, by `OVERFLOW_*` slot, so that guardd can say
/// so: events the ring buffer refused (the stops among them are still in
/// HELD), and stops killed because nothing had room to record them.
#[map]
pub static OVERFLOWS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OVERFLOW_SLOTS, 0);

/// Counts one event the ring buffer refused.
#[inline(always)]
pub fn count_lost() {
    count_overflow(OVERFLOW_EVENTS_LOST);
}

#[inline(always)]
pub fn count_overflow(slot: u32) {
    if let Some(count) = OVERFLOWS.get_ptr_mut(slot) {
        unsafe { *count += 1 };
    }
}

/// Filled in by the daemon at load time from tracefs `format` files.
#[unsafe(no_mangle)]
static TP_OFFSETS: TracepointOffsets = TracepointOffsets {
    fork_child_pid: 0,
    exec_old_pid: 0,
    signal_sig: 0,
    signal_pid: 0,
    signal_code: 0,
};

/// Filled in by the daemon at load time from BTF (all zero without BTF).
#[unsafe(no_mangle)]
static EXE_OFFSETS: ExeNameOffsets = ExeNameOffsets {
    enabled: 0,
    task_mm: 0,
    mm_exe_file: 0,
    file_dentry: 0,
    dentry_name: 0,
    mm_arg_start: 0,
    file_inode: 0,
    inode_uid: 0,
    inode_nlink: 0,
    mm_arg_end: 0,
    dentry_parent: 0,
    dentry_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
};

#[inline(always)]
pub fn exe_offsets() -> ExeNameOffsets {
    unsafe { core::ptr::read_volatile(&EXE_OFFSETS) }
}

#[inline(always)]
pub fn offsets() -> TracepointOffsets {
    // Volatile: the value is patched after compilation, so it must not be constant-folded.
    unsafe { core::ptr::read_volatile(&TP_OFFSETS) }
}

/// Pid of the running guardd; 0 while none runs (then nobody may release).
#[inline(always)]
pub fn guardd() -> u32 {
    GUARDD.get(0).copied().unwrap_or(0)
}

#[inline(always)]
pub fn current_uid() -> u32 {
    bpf_get_current_uid_gid() as u32
}

/// Events wake guardd whether or not it has read the records before them:
/// the kernel's default wakes it only when it has (adaptive), and HTTP/2
/// writes copied to it are submitted without a wake-up of their own.
const WAKE: u64 = aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64;

/// Sends one event to the daemon. Returns false when the ring buffer is full.
#[inline(always)]
pub fn emit(kind: EventKind, pid: u32, session_id: u32, comm: Comm) -> bool {
    let event = Event {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        kind: kind as u32,
        pid,
        session_id,
        uid: current_uid(),
        comm,
        tid: 0,
        op: 0,
        root: FileKey::default(),
    };
    let sent = EVENTS.output::<Event>(&event, WAKE).is_ok();
    if !sent {
        count_lost();
    }
    sent
}

/// Sends one syscall-gate event. Returns false when the ring buffer is full.
#[inline(always)]
pub fn emit_gate(
    kind: EventKind,
    pid: u32,
    tid: u32,
    session_id: u32,
    op: u32,
    root: FileKey,
) -> bool {
    let event = Event {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        kind: kind as u32,
        pid,
        session_id,
        uid: current_uid(),
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or_default(),
        tid,
        op,
        root,
    };
    let sent = EVENTS.output::<Event>(&event, WAKE).is_ok();
    if !sent {
        count_lost();
    }
    sent
}

#[inline(always)]
pub fn held_entry(session_id: u32) -> HeldEntry {
    HeldEntry {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        session_id,
        uid: current_uid(),
    }
}
