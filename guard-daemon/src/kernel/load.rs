//! Loading the programs on the pinned maps and attaching them: the
//! tracepoint programs always, the BPF LSM programs where this kernel runs it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{
    offsets::{ensure_tracefs, exe_name_offsets, lsm_offsets, tracepoint_offsets},
    pins::{lock_pin_dir, Pins},
    report::{report_link, REPORT_TRACEPOINTS},
    Kernel, KernelError, MapSizes, ProgramSets,
};
use crate::{btf::Btf, protocol::ProgramView};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        Lsm, TracePoint,
    },
    Ebpf, EbpfLoader,
};

/// Maps pinned under the pin directory (shared with the pinned programs).
pub(super) const MAPS: [&str; 13] = [
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

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf"));

/// (program, tracepoint category, tracepoint name)
pub(super) const PROGRAMS: [(&str, &str, &str); 4] = [
    ("sessions_fork", "sched", "sched_process_fork"),
    ("sessions_exit", "sched", "sched_process_exit"),
    ("exec_gate", "sched", "sched_process_exec"),
    ("holds_signal_generate", "signal", "signal_generate"),
];

/// (program, LSM hook, parameter count it is built for; None: any), loaded
/// only where the BPF LSM is active. Hooks whose signature changed have one
/// program per signature; the one matching this kernel's BTF is loaded.
pub(super) const LSM_PROGRAMS: [(&str, &str, Option<u32>); 21] = [
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
        let offsets = tracepoint_offsets()?;
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

    /// Why the BPF LSM hooks are not loaded here, or None when they are.
    pub fn lsm_missing(&self) -> Option<&str> {
        self.lsm_missing.as_deref()
    }

    pub fn recognises_exe_names(&self) -> bool {
        self.exe_names
    }

    pub fn loaded_programs(&self) -> &[ProgramView] {
        &self.loaded
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
}
