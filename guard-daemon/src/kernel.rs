//! Loading and driving the kernel side: the three tracepoint programs, the
//! BPF LSM programs where this kernel runs the BPF LSM, their maps, and the
//! offsets they need from this kernel's tracefs and BTF.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        Lsm, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use guard_common::{
    comm_key, Comm, ContinuedEntry, ExeNameOffsets, FileKey, GateDecision, GateDecisionKey,
    GateHeldEntry, GateRoot, HeldEntry, LsmOffsets, ReportCall, SessionEntry, TracepointOffsets,
    OVERFLOW_EVENTS_LOST, OVERFLOW_STOPS_KILLED, PROGRAM_AGENT, PROGRAM_INTERPRETER,
    PROGRAM_WATCHED, SESSION_SECCOMP,
};

use crate::{btf::Btf, protocol::ProgramView};

/// Maps pinned under the pin directory (shared with the pinned programs).
const MAPS: [&str; 13] = [
    "SESSIONS",
    "HELD",
    "PROGRAMS",
    "EVENTS",
    "PROTECTED",
    "GUARDD",
    "GATE_ROOTS",
    "GATE_HELD",
    "GATE_DECIDED",
    "REPORT_CALLS",
    "OVERFLOWS",
    "CONTINUED",
    "SETTINGS",
];
/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf"));

const TRACEFS: &str = "/sys/kernel/tracing";
const SECURITYFS: &str = "/sys/kernel/security";

/// (program, tracepoint category, tracepoint name)
const PROGRAMS: [(&str, &str, &str); 4] = [
    ("sessions_fork", "sched", "sched_process_fork"),
    ("sessions_exit", "sched", "sched_process_exit"),
    ("exec_gate", "sched", "sched_process_exec"),
    ("holds_signal_generate", "signal", "signal_generate"),
];

/// How long after a failed attach of the report-only program it is tried again.
const REPORT_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// The report-only program and the `syscalls` tracepoints it is attached to
/// where the BPF LSM does not run (those this kernel has).
const REPORT_PROGRAM: &str = "report_syscall";
const REPORT_TRACEPOINTS: [&str; 16] = [
    "sys_enter_unlink",
    "sys_enter_unlinkat",
    "sys_enter_rmdir",
    "sys_enter_rename",
    "sys_enter_renameat",
    "sys_enter_renameat2",
    "sys_enter_truncate",
    "sys_enter_open",
    "sys_enter_openat",
    "sys_enter_openat2",
    "sys_enter_creat",
    "sys_enter_chmod",
    "sys_enter_fchmodat",
    "sys_enter_chown",
    "sys_enter_lchown",
    "sys_enter_fchownat",
];

/// The report tracepoints this kernel has.
fn report_tracepoints() -> impl Iterator<Item = &'static str> {
    REPORT_TRACEPOINTS
        .into_iter()
        .filter(|tp| Path::new(TRACEFS).join("events/syscalls").join(tp).exists())
}

/// Where a report link is pinned (bpffs refuses dots in names).
fn report_link(tracepoint: &str) -> String {
    format!("{REPORT_PROGRAM}-{tracepoint}")
}

/// (program, LSM hook, parameter count it is built for; None: any), loaded
/// only where the BPF LSM is active. Hooks whose signature changed have one
/// program per signature; the one matching this kernel's BTF is loaded.
const LSM_PROGRAMS: [(&str, &str, Option<u32>); 21] = [
    ("protect_task_kill", "task_kill", None),
    ("protect_ptrace", "ptrace_access_check", None),
    ("protect_bpf", "bpf", Some(3)),
    ("protect_bpf_6_9", "bpf", Some(4)),
    ("protect_file_open", "file_open", None),
    ("protect_path_unlink", "path_unlink", None),
    ("protect_path_rmdir", "path_rmdir", None),
    ("protect_path_mknod", "path_mknod", None),
    ("protect_path_rename", "path_rename", Some(5)),
    ("protect_path_rename_5_7", "path_rename", Some(4)),
    ("protect_path_truncate", "path_truncate", None),
    ("gate_path_unlink", "path_unlink", None),
    ("gate_path_rmdir", "path_rmdir", None),
    ("gate_path_mknod", "path_mknod", None),
    ("gate_path_rename", "path_rename", Some(5)),
    ("gate_path_rename_5_7", "path_rename", Some(4)),
    ("gate_path_truncate", "path_truncate", None),
    ("gate_path_chmod", "path_chmod", None),
    ("gate_path_chown", "path_chown", None),
    ("gate_file_open", "file_open", None),
    ("escape_unix_stream_connect", "unix_stream_connect", None),
];

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

/// Which programs the kernel should react to.
pub struct ProgramSets {
    pub watched: Vec<String>,
    pub agents: Vec<String>,
    pub interpreters: Vec<String>,
}

impl ProgramSets {
    pub fn of(policy: &crate::policy::Policy) -> Self {
        Self {
            watched: policy
                .watched_programs()
                .into_iter()
                .map(str::to_string)
                .collect(),
            agents: policy.agents.programs.clone(),
            interpreters: policy.agents.interpreters.clone(),
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
    gate_roots: HashMap<MapData, FileKey, GateRoot>,
    gate_held: HashMap<MapData, u32, GateHeldEntry>,
    gate_decided: HashMap<MapData, GateDecisionKey, GateDecision>,
    report_calls: HashMap<MapData, u32, ReportCall>,
    guardd: Array<MapData, u32>,
    settings: Array<MapData, u32>,
    overflows: PerCpuArray<MapData, u64>,
    loaded: Vec<ProgramView>,
    /// Whether the exec gate also recognises programs by their executed file's name.
    exe_names: bool,
    /// Why the LSM programs are not loaded (None: they are).
    lsm_missing: Option<String>,
    /// Why the report-only program is not loaded, where it should be.
    report_missing: Option<String>,
    /// Whether the report-only program is on its tracepoints now.
    reporting: bool,
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
}

impl Kernel {
    /// Loads and attaches everything. The returned ring buffer carries the events.
    /// Loads the programs on the maps pinned under `pin_dir` (created on first
    /// use, re-used after a restart) and pins their links there, so that
    /// enforcement goes on while guardd is down or restarting.
    pub fn load(
        sets: &ProgramSets,
        pin_dir: &Path,
        sizes: &MapSizes,
    ) -> Result<(Self, RingBuf<MapData>), KernelError> {
        if EBPF_OBJECT.is_empty() {
            return Err(KernelError::Tracefs(
                "this guardd was built with AYA_BUILD_SKIP: it has no eBPF programs".into(),
            ));
        }
        ensure_tracefs()?;
        let pins = Pins::prepare(pin_dir)?;
        let pin_lock = lock_pin_dir(pin_dir, "another guardd is running with")?;
        let offsets = TracepointOffsets {
            fork_child_pid: field_offset("sched", "sched_process_fork", "child_pid")?,
            exec_old_pid: field_offset("sched", "sched_process_exec", "old_pid")?,
            signal_sig: field_offset("signal", "signal_generate", "sig")?,
            signal_pid: field_offset("signal", "signal_generate", "pid")?,
            signal_code: field_offset("signal", "signal_generate", "code")?,
        };
        let exe_offsets = exe_name_offsets();
        let lsm = lsm_offsets();
        let lsm_values = lsm.clone().unwrap_or_default();
        let mut loader = EbpfLoader::new();
        loader
            .override_global("TP_OFFSETS", &offsets, true)
            .override_global("EXE_OFFSETS", &exe_offsets, true)
            .override_global("LSM_OFFSETS", &lsm_values, true);
        let map_pins: Vec<(&str, PathBuf)> =
            MAPS.iter().map(|name| (*name, pins.map(name))).collect();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        if let Some(bytes) = sizes.ring_buffer_bytes {
            loader.map_max_entries("EVENTS", bytes);
        }
        if let Some(entries) = sizes.held_entries {
            loader.map_max_entries("HELD", entries);
            loader.map_max_entries("CONTINUED", entries);
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        let map = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(KernelError::Map {
                name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            })
        };
        let map_err = |name: &'static str| move |source| KernelError::Map { name, source };
        let sessions =
            HashMap::try_from(map(&mut ebpf, "SESSIONS")?).map_err(map_err("SESSIONS"))?;
        let held = HashMap::try_from(map(&mut ebpf, "HELD")?).map_err(map_err("HELD"))?;
        let continued =
            HashMap::try_from(map(&mut ebpf, "CONTINUED")?).map_err(map_err("CONTINUED"))?;
        let programs =
            HashMap::try_from(map(&mut ebpf, "PROGRAMS")?).map_err(map_err("PROGRAMS"))?;
        let protected =
            HashMap::try_from(map(&mut ebpf, "PROTECTED")?).map_err(map_err("PROTECTED"))?;
        let gate_roots =
            HashMap::try_from(map(&mut ebpf, "GATE_ROOTS")?).map_err(map_err("GATE_ROOTS"))?;
        let gate_held =
            HashMap::try_from(map(&mut ebpf, "GATE_HELD")?).map_err(map_err("GATE_HELD"))?;
        let gate_decided =
            HashMap::try_from(map(&mut ebpf, "GATE_DECIDED")?).map_err(map_err("GATE_DECIDED"))?;
        let report_calls =
            HashMap::try_from(map(&mut ebpf, "REPORT_CALLS")?).map_err(map_err("REPORT_CALLS"))?;
        let guardd = Array::try_from(map(&mut ebpf, "GUARDD")?).map_err(map_err("GUARDD"))?;
        let settings = Array::try_from(map(&mut ebpf, "SETTINGS")?).map_err(map_err("SETTINGS"))?;
        let events = RingBuf::try_from(map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
        let overflows =
            PerCpuArray::try_from(map(&mut ebpf, "OVERFLOWS")?).map_err(map_err("OVERFLOWS"))?;
        let mut kernel = Self {
            _ebpf: ebpf,
            sessions,
            held,
            continued,
            programs,
            protected,
            gate_roots,
            gate_held,
            gate_decided,
            report_calls,
            guardd,
            settings,
            overflows,
            loaded: Vec::new(),
            exe_names: exe_offsets.enabled != 0,
            lsm_missing: lsm.as_ref().err().cloned(),
            report_missing: None,
            reporting: false,
            report_failed: None,
            pins: pins.clone(),
            links: BTreeMap::new(),
            maps: MAPS
                .iter()
                .filter_map(|name| Some((*name, MapData::from_pin(pins.map(name)).ok()?)))
                .collect(),
            _pin_lock: pin_lock,
        };
        // Fill the program map before anything is attached.
        kernel.set_programs(sets)?;
        // This guardd is the one that may release holds from now on (its
        // SIGCONTs are no foreign continuation, and with the LSM the only ones).
        kernel.set_guardd(std::process::id())?;
        for (name, category, tracepoint) in PROGRAMS {
            let program_err = |source| KernelError::Program { name, source };
            let program: &mut TracePoint = kernel
                ._ebpf
                .program_mut(name)
                .ok_or_else(|| KernelError::Tracefs(format!("program {name} missing from object")))?
                .try_into()
                .map_err(program_err)?;
            program.load().map_err(program_err)?;
            let link = program.attach(category, tracepoint).map_err(program_err)?;
            let link = program.take_link(link).map_err(program_err)?;
            let link = FdLink::try_from(link)
                .map_err(|source| KernelError::Pin(format!("{name}: {source}")))?;
            let pinned = pins.replace_link(name, link)?;
            kernel.links.insert(name.to_string(), pinned);
            let program: &mut TracePoint = kernel
                ._ebpf
                .program_mut(name)
                .expect("loaded above")
                .try_into()
                .map_err(program_err)?;
            let info = program.info().map_err(program_err)?;
            kernel.loaded.push(ProgramView {
                name: name.to_string(),
                id: info.id(),
                tracepoint: format!("{category}/{tracepoint}"),
                map_ids: info.map_ids().ok().flatten().unwrap_or_default(),
                attached: true,
            });
        }
        if kernel.lsm_missing.is_none() {
            let started = std::time::Instant::now();
            let attached = kernel.attach_lsm(&pins);
            if attached.is_ok() {
                tracing::info!(elapsed = ?started.elapsed(), "BPF LSM programs verified and attached");
            }
            if let Err(err) = attached {
                // All or none, so that status tells the truth; the holds keep ptrace.
                tracing::error!("BPF LSM programs not loaded, falling back to ptrace only: {err}");
                kernel.lsm_missing = Some(format!("loading the LSM programs failed: {err}"));
                // Those that did attach go with their pins below (guardd keeps no fd of them).
                for (name, _, _) in LSM_PROGRAMS {
                    kernel.links.remove(name);
                }
                kernel.loaded.retain(|p| !p.tracepoint.starts_with("lsm/"));
            }
        }
        if kernel.lsm_missing.is_none() {
            // An earlier run's report-only links, on a kernel booted without the LSM.
            for tracepoint in REPORT_TRACEPOINTS {
                let pin = pins.link(&report_link(tracepoint));
                if let Ok(link) = PinnedLink::from_pin(pin) {
                    drop(link.unpin());
                }
            }
        }
        if kernel.lsm_missing.is_some() {
            // Also the programs of an earlier run on a kernel booted differently.
            for (name, _, _) in LSM_PROGRAMS {
                if let Ok(link) = PinnedLink::from_pin(pins.link(name)) {
                    drop(link.unpin());
                }
            }
            if let Err(err) = kernel.load_report() {
                tracing::error!("report-only syscall gate not loaded: {err}");
                kernel.report_missing = Some(err.to_string());
            }
        }
        Ok((kernel, events))
    }

    /// Loads the report-only program. It is attached only while a session
    /// needs it (`set_reporting`): an enabled `sys_enter` tracepoint sends
    /// every system call of every process through the kernel's slow path.
    fn load_report(&mut self) -> Result<(), KernelError> {
        let name = REPORT_PROGRAM;
        let program_err = |source| KernelError::Program { name, source };
        let program = self.report_program()?;
        program.load().map_err(program_err)?;
        let info = program.info().map_err(program_err)?;
        let calls: Vec<&str> = report_tracepoints()
            .map(|tp| tp.trim_start_matches("sys_enter_"))
            .collect();
        self.loaded.push(ProgramView {
            name: name.to_string(),
            id: info.id(),
            tracepoint: format!("syscalls/sys_enter_{{{}}}", calls.join(",")),
            map_ids: info.map_ids().ok().flatten().unwrap_or_default(),
            attached: false,
        });
        // A session of an earlier run may still be reported on.
        let earlier = REPORT_TRACEPOINTS
            .iter()
            .any(|tp| self.pins.link(&report_link(tp)).exists());
        self.set_reporting(earlier).map(drop)
    }

    /// Attaches (or detaches) the report-only program; true when that changed.
    pub fn set_reporting(&mut self, on: bool) -> Result<bool, KernelError> {
        if on == self.reporting || self.report_missing.is_some() {
            return Ok(false);
        }
        let name = REPORT_PROGRAM;
        if on {
            let retry_due = self
                .report_failed
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= REPORT_RETRY);
            if !retry_due {
                return Ok(false);
            }
            if let Err(err) = self.attach_report() {
                // Retried after REPORT_RETRY; status says it is not working.
                self.detach_report();
                self.report_failed = Some((err.to_string(), std::time::Instant::now()));
                return Err(err);
            }
            self.report_failed = None;
        } else {
            self.detach_report();
        }
        self.reporting = on;
        for view in self.loaded.iter_mut().filter(|v| v.name == name) {
            view.attached = on;
        }
        Ok(true)
    }

    fn report_program(&mut self) -> Result<&mut TracePoint, KernelError> {
        let name = REPORT_PROGRAM;
        self._ebpf
            .program_mut(name)
            .ok_or_else(|| KernelError::Tracefs(format!("program {name} missing from object")))?
            .try_into()
            .map_err(|source| KernelError::Program { name, source })
    }

    fn attach_report(&mut self) -> Result<(), KernelError> {
        let name = REPORT_PROGRAM;
        let program_err = |source| KernelError::Program { name, source };
        let pins = self.pins.clone();
        for tracepoint in report_tracepoints() {
            let program = self.report_program()?;
            let link = program
                .attach("syscalls", tracepoint)
                .map_err(program_err)?;
            let link = program.take_link(link).map_err(program_err)?;
            let link = FdLink::try_from(link)
                .map_err(|source| KernelError::Pin(format!("{name}: {source}")))?;
            let pinned = pins.replace_link(&report_link(tracepoint), link)?;
            self.links.insert(report_link(tracepoint), pinned);
        }
        Ok(())
    }

    /// Detaching a tracepoint waits for the kernel's RCU grace periods
    /// (~70 ms each here): the links are closed on a thread of their own,
    /// not under the caller's lock.
    fn detach_report(&mut self) {
        let mut links: Vec<FdLink> = REPORT_TRACEPOINTS
            .iter()
            .filter_map(|tp| PinnedLink::from_pin(self.pins.link(&report_link(tp))).ok())
            .filter_map(|link| link.unpin().ok())
            .collect();
        // The fds guardd kept (their pins went with the unpin above).
        links.extend(
            REPORT_TRACEPOINTS
                .iter()
                .filter_map(|tp| self.links.remove(&report_link(tp)))
                .map(FdLink::from),
        );
        if !links.is_empty() {
            let _ = std::thread::Builder::new()
                .name("detach".into())
                .spawn(move || drop(links));
        }
    }

    /// Whether some session's calls are not seen by seccomp (so only a
    /// report can tell of them where the BPF LSM does not run).
    pub fn any_session_without_seccomp(&self) -> bool {
        self.sessions
            .iter()
            .filter_map(Result::ok)
            .any(|(_, entry)| entry.flags & SESSION_SECCOMP == 0)
    }

    /// Pins again every link and map whose pin someone removed (guardd's own
    /// fds kept them attached meanwhile); returns what was re-pinned. The
    /// pin directory itself is made again if it went.
    pub fn repin_missing(&mut self) -> Result<Vec<String>, KernelError> {
        let links_gone: Vec<String> = self
            .links
            .keys()
            .filter(|name| !self.pins.link(name).exists())
            .cloned()
            .collect();
        let maps_gone: Vec<&'static str> = self
            .maps
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !self.pins.map(name).exists())
            .collect();
        if links_gone.is_empty() && maps_gone.is_empty() {
            return Ok(Vec::new());
        }
        Pins::prepare(&self.pins.root)?;
        let mut repinned = Vec::new();
        for name in links_gone {
            let path = self.pins.link(&name);
            let link = FdLink::from(self.links.remove(&name).expect("listed above"));
            // A failed pin drops the fd, which detaches the program: say so.
            let pinned = link.pin(&path).map_err(|err| {
                KernelError::Pin(format!(
                    "{}: {err}: the program is DETACHED",
                    path.display()
                ))
            })?;
            self.links.insert(name.clone(), pinned);
            repinned.push(format!("links/{name}"));
        }
        for name in maps_gone {
            let path = self.pins.map(name);
            let (_, data) = self
                .maps
                .iter()
                .find(|(n, _)| *n == name)
                .expect("listed above");
            data.pin(&path)
                .map_err(|err| KernelError::Pin(format!("{}: {err}", path.display())))?;
            repinned.push(format!("maps/{name}"));
        }
        Ok(repinned)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pins.root
    }

    /// Why the report-only program failed to attach when a session needed it
    /// (None: it is attached, or not needed); it is tried again meanwhile.
    pub fn report_failed(&self) -> Option<&str> {
        self.report_failed.as_ref().map(|(why, _)| why.as_str())
    }

    /// Why the report-only program is not loaded (None: it is, or the LSM runs).
    pub fn report_missing(&self) -> Option<&str> {
        self.report_missing.as_deref()
    }

    /// Makes the report-only call map exactly `calls` (empty: report nothing).
    pub fn set_report_calls(
        &mut self,
        calls: &std::collections::HashMap<u32, ReportCall>,
    ) -> Result<(), KernelError> {
        let stale: Vec<u32> = self
            .report_calls
            .keys()
            .filter_map(Result::ok)
            .filter(|nr| !calls.contains_key(nr))
            .collect();
        for nr in stale {
            let _ = self.report_calls.remove(&nr);
        }
        for (nr, call) in calls {
            self.report_calls
                .insert(nr, call, 0)
                .map_err(|source| KernelError::Map {
                    name: "REPORT_CALLS",
                    source,
                })?;
        }
        Ok(())
    }

    fn attach_lsm(&mut self, pins: &Pins) -> Result<(), KernelError> {
        // aya's BTF attaches the programs; ours (aya keeps function prototypes
        // private) picks the variant matching each hook's signature.
        let btf = aya::Btf::from_sys_fs().map_err(|err| KernelError::Btf(err.to_string()))?;
        let own_btf = Btf::from_sys_fs().map_err(|err| KernelError::Btf(err.to_string()))?;
        for (name, hook, params) in LSM_PROGRAMS {
            if let Some(params) = params {
                let here = own_btf
                    .function_params(&format!("bpf_lsm_{hook}"))
                    .map_err(|err| KernelError::Btf(err.to_string()))?;
                if here != params {
                    continue;
                }
            }
            let program_err = |source| KernelError::Program { name, source };
            let program: &mut Lsm = self
                ._ebpf
                .program_mut(name)
                .ok_or_else(|| KernelError::Tracefs(format!("program {name} missing from object")))?
                .try_into()
                .map_err(program_err)?;
            program.load(hook, &btf).map_err(program_err)?;
            let link = program.attach().map_err(program_err)?;
            let link = program.take_link(link).map_err(program_err)?;
            let pinned = pins.replace_link(name, FdLink::from(link))?;
            self.links.insert(name.to_string(), pinned);
            let program: &mut Lsm = self
                ._ebpf
                .program_mut(name)
                .expect("loaded above")
                .try_into()
                .map_err(program_err)?;
            let info = program.info().map_err(program_err)?;
            self.loaded.push(ProgramView {
                name: name.to_string(),
                id: info.id(),
                tracepoint: format!("lsm/{hook}"),
                map_ids: info.map_ids().ok().flatten().unwrap_or_default(),
                attached: true,
            });
        }
        Ok(())
    }

    /// Events the ring buffer had no room for, summed over the CPUs.
    pub fn events_lost(&self) -> u64 {
        self.overflow(OVERFLOW_EVENTS_LOST)
    }

    /// Watched execs the kernel killed because neither HELD nor the ring
    /// buffer had room to record their stop.
    pub fn stops_killed(&self) -> u64 {
        self.overflow(OVERFLOW_STOPS_KILLED)
    }

    fn overflow(&self, slot: u32) -> u64 {
        self.overflows
            .get(&slot, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum())
    }

    /// Why the BPF LSM hooks are not loaded here, or None when they are.
    pub fn lsm_missing(&self) -> Option<&str> {
        self.lsm_missing.as_deref()
    }

    /// Names the process the LSM lets release holds (0: none, while guardd is down).
    pub fn set_guardd(&mut self, pid: u32) -> Result<(), KernelError> {
        self.guardd
            .set(0, pid, 0)
            .map_err(|source| KernelError::Map {
                name: "GUARDD",
                source,
            })
    }

    /// The policy's `SETTING_*` bits for the kernel side.
    pub fn set_settings(&mut self, bits: u32) -> Result<(), KernelError> {
        self.settings
            .set(0, bits, 0)
            .map_err(|source| KernelError::Map {
                name: "SETTINGS",
                source,
            })
    }

    /// Makes the protected-file map exactly `keys`.
    pub fn set_protected(&mut self, keys: &[(FileKey, u32)]) -> Result<(), KernelError> {
        let stale: Vec<FileKey> = self
            .protected
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !keys.iter().any(|(k, _)| k == key))
            .collect();
        for key in stale {
            let _ = self.protected.remove(&key);
        }
        for (key, flags) in keys {
            self.protected
                .insert(key, flags, 0)
                .map_err(|source| KernelError::Map {
                    name: "PROTECTED",
                    source,
                })?;
        }
        Ok(())
    }

    /// Makes the program map exactly `sets` (entries no longer wanted are removed).
    pub fn set_programs(&mut self, sets: &ProgramSets) -> Result<(), KernelError> {
        let mut flags: std::collections::HashMap<Comm, u32> = std::collections::HashMap::new();
        for name in &sets.watched {
            *flags.entry(comm_key(name.as_bytes())).or_default() |= PROGRAM_WATCHED;
        }
        for name in &sets.agents {
            *flags.entry(comm_key(name.as_bytes())).or_default() |= PROGRAM_AGENT;
        }
        for name in &sets.interpreters {
            *flags.entry(comm_key(name.as_bytes())).or_default() |= PROGRAM_INTERPRETER;
        }
        let stale: Vec<Comm> = self
            .programs
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !flags.contains_key(key))
            .collect();
        for key in stale {
            let _ = self.programs.remove(&key);
        }
        for (key, value) in flags {
            self.programs
                .insert(key, value, 0)
                .map_err(|source| KernelError::Map {
                    name: "PROGRAMS",
                    source,
                })?;
        }
        Ok(())
    }

    pub fn recognises_exe_names(&self) -> bool {
        self.exe_names
    }

    pub fn loaded_programs(&self) -> &[ProgramView] {
        &self.loaded
    }

    /// The session a thread belongs to, from the kernel's own map.
    pub fn session_of(&self, tid: u32) -> Option<SessionEntry> {
        self.sessions.get(&tid, 0).ok()
    }

    pub fn add_to_session(&mut self, tid: u32, entry: SessionEntry) -> Result<(), KernelError> {
        self.sessions
            .insert(tid, entry, 0)
            .map_err(|source| KernelError::Map {
                name: "SESSIONS",
                source,
            })
    }

    /// The stop the kernel recorded for `pid`, if it is still undecided.
    pub fn held_entry(&self, pid: u32) -> Option<HeldEntry> {
        self.held.get(&pid, 0).ok()
    }

    /// Who else than guardd sent SIGCONT to `pid` while HELD recorded its
    /// stop, if anyone did. Almost always one lookup that misses.
    pub fn continued_by(&self, pid: u32) -> Option<Continuation> {
        let mark = self.continued.get(&pid, 0).ok()?;
        Continuation::of_stop(&mark, &self.held_entry(pid)?)
    }

    /// The SIGCONT mark of a process whose stop the kernel no longer lists
    /// (it has exited), with the ktime of the stop it was made for.
    pub fn continued_mark(&self, pid: u32) -> Option<(Continuation, u64)> {
        let mark = self.continued.get(&pid, 0).ok()?;
        Some((
            Continuation {
                by: mark.by,
                from_kernel: mark.from_kernel != 0,
            },
            mark.stop_ktime_ns,
        ))
    }

    /// Drops the mark of a SIGCONT that could not take effect: sent while
    /// guardd held the process in ptrace-stop, and undone by a new SIGSTOP.
    pub fn clear_continued(&mut self, pid: u32) {
        let _ = self.continued.remove(&pid);
    }

    /// Every stopped-and-undecided process, once each. Bounded: a key the
    /// kernel deletes mid-walk makes the walk start over.
    pub fn held(&self) -> Vec<(u32, HeldEntry)> {
        let mut held: Vec<(u32, HeldEntry)> = self
            .held
            .iter()
            .take(2 * guard_common::MAX_HELD as usize)
            .filter_map(Result::ok)
            .collect();
        held.sort_unstable_by_key(|(pid, _)| *pid);
        held.dedup_by_key(|(pid, _)| *pid);
        held
    }

    pub fn forget_held(&mut self, pid: u32) {
        let _ = self.held.remove(&pid);
    }

    /// Makes the syscall gate's root map exactly `roots`.
    pub fn set_gate_roots(
        &mut self,
        roots: &std::collections::HashMap<FileKey, GateRoot>,
    ) -> Result<(), KernelError> {
        let stale: Vec<FileKey> = self
            .gate_roots
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !roots.contains_key(key))
            .collect();
        for key in stale {
            let _ = self.gate_roots.remove(&key);
        }
        for (key, root) in roots {
            if self.gate_roots.get(key, 0).ok().as_ref() == Some(root) {
                continue;
            }
            self.gate_roots
                .insert(key, root, 0)
                .map_err(|source| KernelError::Map {
                    name: "GATE_ROOTS",
                    source,
                })?;
        }
        Ok(())
    }

    /// The gated calls the kernel holds, by pid.
    pub fn gate_held(&self) -> Vec<(u32, GateHeldEntry)> {
        self.gate_held.iter().filter_map(Result::ok).collect()
    }

    pub fn forget_gate_held(&mut self, pid: u32) {
        let _ = self.gate_held.remove(&pid);
    }

    pub fn gate_held_entry(&self, pid: u32) -> Option<GateHeldEntry> {
        self.gate_held.get(&pid, 0).ok()
    }

    /// Records the decision for a process on a protected root and ends its
    /// hold entry. The caller continues the process afterwards, never before.
    pub fn decide_gate(
        &mut self,
        pid: u32,
        root: FileKey,
        start_ns: u64,
        allow: bool,
    ) -> Result<(), KernelError> {
        let key = GateDecisionKey { pid, _pad: 0, root };
        let decision = GateDecision {
            start_ns,
            allow: allow.into(),
            _pad: 0,
        };
        self.gate_decided
            .insert(key, decision, 0)
            .map_err(|source| KernelError::Map {
                name: "GATE_DECIDED",
                source,
            })?;
        let _ = self.gate_held.remove(&pid);
        Ok(())
    }

    /// Drops the decisions of processes `alive` says have ended.
    pub fn prune_gate_decisions(&mut self, alive: impl Fn(u32, u64) -> bool) {
        let ended: Vec<GateDecisionKey> = self
            .gate_decided
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, decision)| !alive(key.pid, decision.start_ns))
            .map(|(key, _)| key)
            .collect();
        for key in ended {
            let _ = self.gate_decided.remove(&key);
        }
    }
}

/// Offsets for reading the executed file's name, from this kernel's BTF.
/// Without BTF the gate matches by comm only (and says so in status).
fn exe_name_offsets() -> ExeNameOffsets {
    let read = || -> Result<ExeNameOffsets, crate::btf::BtfError> {
        let btf = Btf::from_sys_fs()?;
        Ok(ExeNameOffsets {
            enabled: 1,
            task_mm: btf.member_offset("task_struct", "mm")?,
            mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
            file_dentry: btf.member_offset("file", "f_path")?
                + btf.member_offset("path", "dentry")?,
            dentry_name: btf.member_offset("dentry", "d_name")?
                + btf.member_offset("qstr", "name")?,
            _pad: 0,
        })
    };
    read().unwrap_or_else(|err| {
        tracing::warn!("{err}: programs run under another name (symlinks) are not recognised");
        ExeNameOffsets::default()
    })
}

/// Offsets for the LSM programs, or why they cannot run on this kernel.
fn lsm_offsets() -> Result<LsmOffsets, String> {
    ensure_securityfs();
    let active = fs::read_to_string(format!("{SECURITYFS}/lsm"))
        .map_err(|err| format!("{SECURITYFS}/lsm: {err}"))?;
    if !active.trim().split(',').any(|lsm| lsm == "bpf") {
        return Err(format!(
            "the BPF LSM is not active (lsm={}; boot with bpf in lsm=)",
            active.trim()
        ));
    }
    let read = || -> Result<LsmOffsets, crate::btf::BtfError> {
        let btf = Btf::from_sys_fs()?;
        Ok(LsmOffsets {
            task_tgid: btf.member_offset("task_struct", "tgid")?,
            file_mode: btf.member_offset("file", "f_mode")?,
            file_dentry: btf.member_offset("file", "f_path")?
                + btf.member_offset("path", "dentry")?,
            path_dentry: btf.member_offset("path", "dentry")?,
            dentry_inode: btf.member_offset("dentry", "d_inode")?,
            dentry_parent: btf.member_offset("dentry", "d_parent")?,
            inode_ino: btf.member_offset("inode", "i_ino")?,
            inode_sb: btf.member_offset("inode", "i_sb")?,
            sb_dev: btf.member_offset("super_block", "s_dev")?,
            task_start_time: btf.member_offset("task_struct", "start_time")?,
            file_flags: btf.member_offset("file", "f_flags")?,
            sock_peer_pid: btf.member_offset("sock", "sk_peer_pid")?,
            pid_nr: btf.member_offset("pid", "numbers")? + btf.member_offset("upid", "nr")?,
            unix_dentry: btf.member_offset("unix_sock", "path")?
                + btf.member_offset("path", "dentry")?,
        })
    };
    read().map_err(|err| format!("BTF for the LSM hooks: {err}"))
}

/// securityfs is not mounted at boot on every system; without it the LSM list is unreadable.
fn ensure_securityfs() {
    if Path::new(SECURITYFS).join("lsm").exists() {
        return;
    }
    let _ = nix::mount::mount(
        Some("securityfs"),
        SECURITYFS,
        Some("securityfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
}

/// Locks the pin directory for as long as the returned file is open: two
/// guardds on one pin directory would share its maps and take each other's
/// events, and a teardown would pull the programs from under a running one.
fn lock_pin_dir(root: &Path, busy: &str) -> Result<fs::File, KernelError> {
    let pin_err = |err: std::io::Error| KernelError::Pin(format!("{}: {err}", root.display()));
    let dir = fs::File::open(root).map_err(pin_err)?;
    match rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(dir),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(KernelError::Pin(format!(
            "{busy} {} (stop it first, or give each its own --pin-dir)",
            root.display()
        ))),
        Err(err) => Err(pin_err(err.into())),
    }
}

/// The pin directory: `maps/NAME` and `links/NAME`.
#[derive(Clone)]
struct Pins {
    root: PathBuf,
}

impl Pins {
    fn prepare(root: &Path) -> Result<Self, KernelError> {
        let pins = Self {
            root: root.to_path_buf(),
        };
        ensure_bpffs(root)?;
        for dir in ["maps", "links"] {
            fs::create_dir_all(root.join(dir))
                .map_err(|err| KernelError::Pin(format!("{}: {err}", root.join(dir).display())))?;
        }
        Ok(pins)
    }

    fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    fn link(&self, name: &str) -> PathBuf {
        self.root.join("links").join(name)
    }

    /// Pins `link` in place of the previous run's: the new program is attached
    /// before the old one is detached, so nothing runs unguarded in between.
    fn replace_link(&self, name: &str, link: FdLink) -> Result<PinnedLink, KernelError> {
        let path = self.link(name);
        if path.exists() {
            match PinnedLink::from_pin(&path) {
                Ok(old) => drop(old.unpin()),
                Err(_) => drop(fs::remove_file(&path)),
            }
        }
        link.pin(&path)
            .map_err(|err| KernelError::Pin(format!("{}: {err}", path.display())))
    }
}

/// Ends everything pinned under `pin_dir`: the links (which detaches the
/// programs) and the maps. Returns the pids HELD and GATE_HELD still list,
/// each with the SIGCONT another process sent it, so the caller can deny them.
pub fn teardown(pin_dir: &Path) -> Result<Vec<(u32, Option<Continuation>)>, KernelError> {
    let pins = Pins {
        root: pin_dir.to_path_buf(),
    };
    let _lock = match lock_pin_dir(pin_dir, "guardd is running with") {
        Err(KernelError::Pin(why)) if pin_dir.exists() => return Err(KernelError::Pin(why)),
        other => other.ok(),
    };
    let mut held = Vec::new();
    if let Ok(data) = MapData::from_pin(pins.map("HELD")) {
        if let Ok(map) = HashMap::<_, u32, HeldEntry>::try_from(aya::maps::Map::HashMap(data)) {
            let continued = MapData::from_pin(pins.map("CONTINUED"))
                .ok()
                .and_then(|data| {
                    HashMap::<_, u32, ContinuedEntry>::try_from(aya::maps::Map::LruHashMap(data))
                        .ok()
                });
            held = map
                .iter()
                .filter_map(Result::ok)
                .map(|(pid, entry)| {
                    let mark = continued.as_ref().and_then(|c| c.get(&pid, 0).ok());
                    (
                        pid,
                        mark.and_then(|mark| Continuation::of_stop(&mark, &entry)),
                    )
                })
                .collect();
        }
    }
    // Processes the LSM gate stopped: without the programs their call would run.
    if let Ok(data) = MapData::from_pin(pins.map("GATE_HELD")) {
        if let Ok(map) = HashMap::<_, u32, GateHeldEntry>::try_from(aya::maps::Map::HashMap(data)) {
            held.extend(map.keys().filter_map(Result::ok).map(|pid| (pid, None)));
        }
    }
    let names = PROGRAMS
        .iter()
        .map(|(name, _, _)| *name)
        .chain(LSM_PROGRAMS.iter().map(|(name, _, _)| *name));
    let report_links = REPORT_TRACEPOINTS.iter().map(|tp| report_link(tp));
    for name in names.map(str::to_string).chain(report_links) {
        if let Ok(link) = PinnedLink::from_pin(pins.link(&name)) {
            drop(link.unpin());
        }
    }
    for name in MAPS {
        let _ = fs::remove_file(pins.map(name));
    }
    for dir in ["maps", "links", ""] {
        let _ = fs::remove_dir(pin_dir.join(dir));
    }
    Ok(held)
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

/// Mounts bpffs at /sys/fs/bpf when the pin directory is there and it is not mounted.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    let bpffs = Path::new("/sys/fs/bpf");
    // f_type's width differs between architectures, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let is_bpffs = |path: &Path| {
        nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 as i64 == BPF_FS_MAGIC)
    };
    if pin_dir.starts_with(bpffs) && !is_bpffs(bpffs) {
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|err| KernelError::Pin(format!("mounting bpffs at {}: {err}", bpffs.display())))?;
    }
    let probe = pin_dir.ancestors().find(|p| p.exists()).unwrap_or(bpffs);
    if !is_bpffs(probe) {
        return Err(KernelError::Pin(format!(
            "{} is not on a bpf file system",
            pin_dir.display()
        )));
    }
    Ok(())
}

fn ensure_tracefs() -> Result<(), KernelError> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|err| KernelError::Tracefs(format!("mounting tracefs at {TRACEFS}: {err}")))
}

fn field_offset(category: &str, event: &str, field: &str) -> Result<u32, KernelError> {
    let path = format!("{TRACEFS}/events/{category}/{event}/format");
    let format =
        fs::read_to_string(&path).map_err(|err| KernelError::Tracefs(format!("{path}: {err}")))?;
    parse_field_offset(&format, field)
        .ok_or_else(|| KernelError::Tracefs(format!("{path}: no field {field}")))
}

/// Finds `offset:N` on the line declaring `field` in a tracefs format file.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = declaration.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_both_fork_layouts() {
        // 6.18: comm fields are __data_loc.
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                   \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(new, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(new, "parent_pid"), Some(12));
        // 6.1: comm fields are inline char[16].
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(old, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(old, "child_comm"), Some(28));
        assert_eq!(parse_field_offset(old, "missing"), None);
    }

    #[test]
    fn offsets_are_read_from_the_signal_generate_format() {
        // 6.18; `pid` must not match `common_pid`.
        let format = "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
                      \tfield:int sig;\toffset:8;\tsize:4;\tsigned:1;\n\
                      \tfield:int errno;\toffset:12;\tsize:4;\tsigned:1;\n\
                      \tfield:int code;\toffset:16;\tsize:4;\tsigned:1;\n\
                      \tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;\n\
                      \tfield:pid_t pid;\toffset:36;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(format, "sig"), Some(8));
        assert_eq!(parse_field_offset(format, "code"), Some(16));
        assert_eq!(parse_field_offset(format, "pid"), Some(36));
    }
}
