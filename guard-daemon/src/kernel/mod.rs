//! Loading and driving the kernel side: the three tracepoint programs, the
//! BPF LSM programs where this kernel runs the BPF LSM, their maps, and the
//! offsets they need from this kernel's tracefs and BTF.
//!
//! - `load`: loading the object on the pinned maps, attaching the programs;
//! - `pins`: the pin directory (its lock, layout, and pinning again);
//! - `layout`: the version of the pinned maps' layout, and pins of another;
//! - `offsets`: tracepoint fields from tracefs, struct members from BTF;
//! - `maps`: typed access to the maps guardd reads and fills;
//! - `api`: the API-client gate's uprobes and maps;
//! - `report`: the report-only program where the BPF LSM does not run;
//! - `teardown`: ending what a guardd pinned.
mod api;
mod api_follow;
mod argv_filters;
mod layout;
mod load;
mod maps;
mod offsets;
mod pins;
mod report;
mod teardown;
mod uprobe_events;

use std::{collections::BTreeMap, fs};

use aya::{
    maps::{lpm_trie::LpmTrie, Array, HashMap, MapData, PerCpuArray},
    programs::links::PinnedLink,
    Ebpf,
};
use guard_common::{
    ApiConnKey, ApiHeldEntry, ArgvFilter, ArgvWordKey, Comm, ContinuedEntry, FileKey, GateDecision,
    GateDecisionKey, GateHeldEntry, GateRoot, HeldEntry, ReportCall, SessionEntry,
};

use crate::protocol::ProgramView;
pub use api::{ApiTarget, FileId};
pub use api_follow::{
    followed as api_hook_followed, starts_tls as api_hook_starts_tls, FollowedProbe, FollowedView,
};
pub use layout::{describe as describe_layout, LayoutChange};
use pins::Pins;
pub use pins::StaleLink;
pub use teardown::teardown;
pub use uprobe_events::group_of as tracefs_group;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("tracefs: {0}")]
    Tracefs(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("kernel BTF: {0}")]
    Btf(String),
    #[error("pinning: {0}")]
    Pin(String),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

impl KernelError {
    /// For `map_err` on a call on map `name`.
    fn map(name: &'static str) -> impl Fn(aya::maps::MapError) -> Self + Copy {
        move |source| Self::Map { name, source }
    }

    /// For `map_err` on a call on program `name`.
    fn program(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> Self + Copy {
        move |source| Self::Program { name, source }
    }
}

/// Mounts a kernel pseudo file system (tracefs, securityfs, bpf) of type
/// `fs_type` at `at`.
fn mount_pseudo_fs(fs_type: &str, at: &(impl AsRef<std::path::Path> + ?Sized)) -> nix::Result<()> {
    nix::mount::mount(
        Some(fs_type),
        at.as_ref(),
        Some(fs_type),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
}

/// Which programs the kernel should react to.
pub struct ProgramSets {
    pub watched: Vec<String>,
    pub agents: Vec<String>,
    pub interpreters: Vec<String>,
    /// Watched multi-call binaries: run under another name, argv[0] decides.
    pub multi_call: Vec<String>,
    /// Shells and interpreters that stop when given a file to run: it may
    /// be a copy of a watched `#!` script.
    pub script_runners: Vec<String>,
    /// The system's program directories: a file of root's elsewhere is
    /// judged by what it is.
    pub exec_dirs: Vec<FileKey>,
    /// Each watched program's argv prefilter.
    pub prefilters: BTreeMap<String, crate::policy::prefilter::Prefilter>,
}

impl ProgramSets {
    pub fn of(policy: &crate::policy::Policy, files: &crate::program_files::ProgramFiles) -> Self {
        Self {
            exec_dirs: files.dir_keys(),
            script_runners: if policy.watched_programs().is_empty() {
                Vec::new()
            } else {
                files.script_runners()
            },
            watched: policy.watched_programs(),
            prefilters: policy.prefilters(),
            agents: policy.agents.programs.clone(),
            interpreters: policy.agents.interpreters.clone(),
            multi_call: crate::policy::wrappers::MULTI_CALL
                .iter()
                .map(|name| name.to_string())
                .collect(),
        }
    }
}

/// Map sizes other than the built-in ones; tests make them small to overflow them.
#[derive(Debug, Default, Clone)]
pub struct MapSizes {
    /// Event ring buffer bytes (a power of two, at least a page).
    pub ring_buffer_bytes: Option<u32>,
    /// Capacity of HELD, the exec gate's record of stopped processes.
    pub held_entries: Option<u32>,
}

pub struct Kernel {
    /// Keeps the programs loaded and attached for as long as the daemon runs.
    _ebpf: Ebpf,
    sessions: HashMap<MapData, u32, SessionEntry>,
    held: HashMap<MapData, u32, HeldEntry>,
    continued: HashMap<MapData, u32, ContinuedEntry>,
    programs: HashMap<MapData, Comm, u32>,
    protected: HashMap<MapData, FileKey, u32>,
    exec_dirs: HashMap<MapData, FileKey, u32>,
    gate_roots: HashMap<MapData, FileKey, GateRoot>,
    gate_held: HashMap<MapData, u32, GateHeldEntry>,
    gate_decided: HashMap<MapData, GateDecisionKey, GateDecision>,
    report_calls: HashMap<MapData, u32, ReportCall>,
    report_quiet_opens: HashMap<MapData, [u8; guard_common::QUIET_PATH], u8>,
    /// The paths in `report_quiet_opens`, as last written.
    quiet_opens: Vec<String>,
    guardd: Array<MapData, u32>,
    settings: Array<MapData, u32>,
    overflows: PerCpuArray<MapData, u64>,
    api_held: HashMap<MapData, u32, ApiHeldEntry>,
    api_conns: HashMap<MapData, ApiConnKey, u64>,
    api_held_procs: HashMap<MapData, u32, u64>,
    api_points: HashMap<MapData, u32, u32>,
    argv_filter_map: HashMap<MapData, Comm, ArgvFilter>,
    argv_words: LpmTrie<MapData, ArgvWordKey, u32>,
    kernel_counts: PerCpuArray<MapData, u64>,
    argv_filters: argv_filters::ArgvFilters,
    /// The libraries and programs the API probes are attached to.
    api_targets: Vec<ApiTarget>,
    /// The API probes that trap in session tasks only, and their events.
    following: api_follow::Following,
    loaded: Vec<ProgramView>,
    /// Whether the exec gate also recognises programs by their executed file's name.
    exe_names: bool,
    /// Why the LSM programs are not loaded (None: they are).
    lsm_missing: Option<String>,
    /// Why the report-only program is not loaded, where it should be.
    report_missing: Option<String>,
    /// Whether the report-only program is on its tracepoints now.
    reporting: bool,
    /// Since when no session has needed it (it is detached after REPORT_LINGER).
    report_unneeded_since: Option<std::time::Instant>,
    /// The last failure to attach it, and when: retried after REPORT_RETRY.
    report_failed: Option<(String, std::time::Instant)>,
    pins: Pins,
    /// Every link guardd pinned, with its fd kept open: removing a pin does
    /// not detach the program while guardd runs, and `repin_missing` puts
    /// the pin back.
    links: BTreeMap<String, PinnedLink>,
    /// A handle on every pinned map, to pin it again where it was removed.
    maps: Vec<(&'static str, MapData)>,
    /// Held while guardd runs (see `lock_pin_dir`).
    _pin_lock: fs::File,
    /// Pins of another layout this start found and did not reuse.
    layout_change: Option<LayoutChange>,
    /// Links pinned under names this guardd has no program of, found at start.
    stale_links: Vec<pins::StaleLink>,
}

/// A SIGCONT another process than guardd (or the kernel) sent to a process
/// the exec gate had stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuation {
    pub by: u32,
    pub from_kernel: bool,
}

impl Continuation {
    /// The mark, when it was made for this very stop (not an older stop of
    /// the same pid).
    fn of_stop(mark: &ContinuedEntry, held: &HeldEntry) -> Option<Self> {
        (mark.stop_ktime_ns == held.ktime_ns).then_some(Self {
            by: mark.by,
            from_kernel: mark.from_kernel != 0,
        })
    }

    /// For the audit log and the terminal.
    pub fn describe(&self) -> String {
        if self.from_kernel {
            format!(
                "the kernel sent the stopped process SIGCONT (its process group was orphaned \
                 as pid {} exited)",
                self.by
            )
        } else {
            format!("pid {} sent the stopped process SIGCONT", self.by)
        }
    }
}
