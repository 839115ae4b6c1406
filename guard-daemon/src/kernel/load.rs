//! Loading the programs on the pinned maps and attaching them: the
//! tracepoint programs always, the BPF LSM programs where this kernel runs it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use guard_common::{
    names::{map, program},
    ArgvFilter, Comm,
};

use super::{
    layout::{self, Found, OldPins},
    offsets::{ensure_tracefs, exe_name_offsets, lsm_offsets, tracepoint_offsets},
    pins::{lock_pin_dir, Pins, StaleLink},
    report::{report_link, REPORT_TRACEPOINTS},
    Kernel, KernelError, LayoutChange, MapSizes, ProgramSets,
};
use crate::{btf::Btf, protocol::ProgramView};
use aya::{
    maps::{Map, MapData, MapError, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        Lsm, Program, ProgramError, ProgramInfo, TracePoint,
    },
    Ebpf, EbpfLoader,
};

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf"));

/// (program, tracepoint category, tracepoint name)
pub(super) const PROGRAMS: [(&str, &str, &str); 4] = [
    (program::SESSIONS_FORK, "sched", "sched_process_fork"),
    (program::SESSIONS_EXIT, "sched", "sched_process_exit"),
    (program::EXEC_GATE, "sched", "sched_process_exec"),
    (program::HOLDS_SIGNAL_GENERATE, "signal", "signal_generate"),
];

/// (program, LSM hook, parameter count it is built for; None: any), loaded
/// only where the BPF LSM is active. Hooks whose signature changed have one
/// program per signature; the one matching this kernel's BTF is loaded.
pub(super) const LSM_PROGRAMS: [(&str, &str, Option<u32>); 22] = [
    (program::SELF_PROTECT_TASK_KILL, "task_kill", None),
    (program::SELF_PROTECT_PTRACE, "ptrace_access_check", None),
    (program::SELF_PROTECT_BPF, "bpf", Some(3)),
    (program::SELF_PROTECT_BPF_6_9, "bpf", Some(4)),
    (program::SELF_PROTECT_FILE_OPEN, "file_open", None),
    (program::SELF_PROTECT_PATH_UNLINK, "path_unlink", None),
    (program::SELF_PROTECT_PATH_RMDIR, "path_rmdir", None),
    (program::SELF_PROTECT_PATH_MKNOD, "path_mknod", None),
    (program::SELF_PROTECT_PATH_RENAME, "path_rename", Some(5)),
    (
        program::SELF_PROTECT_PATH_RENAME_5_7,
        "path_rename",
        Some(4),
    ),
    (program::SELF_PROTECT_PATH_TRUNCATE, "path_truncate", None),
    (program::GATE_PATH_UNLINK, "path_unlink", None),
    (program::GATE_PATH_RMDIR, "path_rmdir", None),
    (program::GATE_PATH_MKNOD, "path_mknod", None),
    (program::GATE_PATH_RENAME, "path_rename", Some(5)),
    (program::GATE_PATH_RENAME_5_7, "path_rename", Some(4)),
    (program::GATE_PATH_LINK, "path_link", None),
    (program::GATE_PATH_TRUNCATE, "path_truncate", None),
    (program::GATE_PATH_CHMOD, "path_chmod", None),
    (program::GATE_PATH_CHOWN, "path_chown", None),
    (program::GATE_FILE_OPEN, "file_open", None),
    (
        program::ESCAPE_UNIX_STREAM_CONNECT,
        "unix_stream_connect",
        None,
    ),
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
        super::api_follow::raise_fd_limit();
        let pins = Pins::prepare(pin_dir)?;
        let pin_lock = lock_pin_dir(pin_dir, "another guardd is running with")?;
        // Maps of another layout are never loaded on: set aside, and fresh ones pinned.
        let old_pins = match layout::found(pin_dir) {
            Found::Other(version) => {
                tracing::warn!(
                    "pins under {} have {}, this guardd has layout {}: loading fresh maps",
                    pin_dir.display(),
                    layout::describe(version),
                    guard_common::LAYOUT_VERSION
                );
                Some(OldPins::set_aside(&pins, version)?)
            }
            Found::NoPins | Found::Same => None,
        };
        let offsets = tracepoint_offsets()?;
        let exe_offsets = exe_name_offsets();
        let lsm = lsm_offsets();
        let lsm_values = lsm.clone().unwrap_or_default();
        let mut loader = EbpfLoader::new();
        loader
            .override_global("TP_OFFSETS", &offsets, true)
            .override_global("EXE_OFFSETS", &exe_offsets, true)
            .override_global("LSM_OFFSETS", &lsm_values, true);
        let map_pins: Vec<(&str, PathBuf)> = map::ALL
            .iter()
            .map(|name| (*name, pins.map(name)))
            .collect();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        if let Some(bytes) = sizes.ring_buffer_bytes {
            loader.map_max_entries(map::EVENTS, bytes);
        }
        if let Some(entries) = sizes.held_entries {
            loader.map_max_entries(map::HELD, entries);
            loader.map_max_entries(map::CONTINUED, entries);
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        layout::mark(pin_dir).map_err(|err| {
            KernelError::Pin(format!("{}: {err}", layout::marker(pin_dir).display()))
        })?;
        let sessions = take_map(&mut ebpf, map::SESSIONS)?;
        let held = take_map(&mut ebpf, map::HELD)?;
        let continued = take_map(&mut ebpf, map::CONTINUED)?;
        let programs = take_map(&mut ebpf, map::PROGRAMS)?;
        let protected = take_map(&mut ebpf, map::PROTECTED)?;
        let exec_dirs = take_map(&mut ebpf, map::EXEC_DIRS)?;
        let gate_roots = take_map(&mut ebpf, map::GATE_ROOTS)?;
        let gate_held = take_map(&mut ebpf, map::GATE_HELD)?;
        let gate_decided = take_map(&mut ebpf, map::GATE_DECIDED)?;
        let report_calls = take_map(&mut ebpf, map::REPORT_CALLS)?;
        let report_quiet_opens = take_map(&mut ebpf, map::REPORT_QUIET_OPENS)?;
        let guardd = take_map(&mut ebpf, map::GUARDD)?;
        let settings = take_map(&mut ebpf, map::SETTINGS)?;
        let events = take_map(&mut ebpf, map::EVENTS)?;
        let overflows = take_map(&mut ebpf, map::OVERFLOWS)?;
        let api_held = take_map(&mut ebpf, map::API_HELD)?;
        let api_held_procs = take_map(&mut ebpf, map::API_HELD_PROCS)?;
        let api_points = take_map(&mut ebpf, map::API_POINTS)?;
        let api_conns = take_map(&mut ebpf, map::API_CONNS)?;
        let argv_filter_map: aya::maps::HashMap<_, Comm, ArgvFilter> =
            take_map(&mut ebpf, map::ARGV_FILTERS)?;
        let argv_words = take_map(&mut ebpf, map::ARGV_WORDS)?;
        let kernel_counts = take_map(&mut ebpf, map::KERNEL_COUNTS)?;
        let argv_filters = super::argv_filters::ArgvFilters::after(
            (argv_filter_map.iter())
                .filter_map(Result::ok)
                .map(|(_, filter)| filter.id),
        );
        let mut kernel = Self {
            _ebpf: ebpf,
            sessions,
            held,
            continued,
            programs,
            protected,
            exec_dirs,
            gate_roots,
            gate_held,
            gate_decided,
            report_calls,
            report_quiet_opens,
            quiet_opens: Vec::new(),
            guardd,
            settings,
            overflows,
            api_held,
            api_held_procs,
            api_points,
            api_conns,
            argv_filter_map,
            argv_words,
            kernel_counts,
            argv_filters,
            api_targets: Vec::new(),
            following: Default::default(),
            loaded: Vec::new(),
            exe_names: exe_offsets.enabled != 0,
            lsm_missing: lsm.as_ref().err().cloned(),
            report_missing: None,
            reporting: false,
            report_unneeded_since: None,
            report_failed: None,
            pins: pins.clone(),
            links: BTreeMap::new(),
            maps: map::ALL
                .iter()
                .filter_map(|name| Some((*name, MapData::from_pin(pins.map(name)).ok()?)))
                .collect(),
            _pin_lock: pin_lock,
            layout_change: None,
            stale_links: Vec::new(),
        };
        // Fill the program map before anything is attached.
        kernel.set_programs(sets)?;
        // This guardd is the one that may release holds from now on (its
        // SIGCONTs are no foreign continuation, and with the LSM the only ones).
        kernel.set_guardd(std::process::id())?;
        for (name, category, tracepoint) in PROGRAMS {
            let program_err = KernelError::program(name);
            let program: &mut TracePoint = kernel.program(name)?;
            program.load().map_err(program_err)?;
            let link = program.attach(category, tracepoint).map_err(program_err)?;
            let link = program.take_link(link).map_err(program_err)?;
            let link = FdLink::try_from(link)
                .map_err(|source| KernelError::Pin(format!("{name}: {source}")))?;
            kernel.pin_link(name.to_string(), link)?;
            let program: &mut TracePoint = kernel.program(name)?;
            let info = program.info().map_err(program_err)?;
            kernel.list_loaded(name, format!("{category}/{tracepoint}"), &info, true);
        }
        if kernel.lsm_missing.is_none() {
            let started = std::time::Instant::now();
            let attached = kernel.attach_lsm();
            if attached.is_ok() {
                tracing::info!(elapsed = ?started.elapsed(), "BPF LSM programs verified and attached");
            }
            if let Err(err) = attached {
                // All or none, so that status tells the truth.
                let why = match refused_outright(&err) {
                    true => {
                        let why = "this kernel lists bpf among its LSMs but refuses LSM \
                                   programs (Operation not permitted before the verifier ran: \
                                   a sandbox or lockdown policy)";
                        tracing::warn!(
                            "BPF LSM not available: {why}; `guardctl status` says what each \
                             mechanism uses instead"
                        );
                        why.to_string()
                    }
                    false => {
                        tracing::error!("BPF LSM programs not loaded: {err}");
                        format!("loading the LSM programs failed: {err}")
                    }
                };
                kernel.lsm_missing = Some(why);
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
        let started = std::time::Instant::now();
        kernel.attach_api_system();
        tracing::info!(
            elapsed = ?started.elapsed(),
            targets = kernel.api_targets.len(),
            "API probes attached"
        );
        // Every program of this guardd is attached and pinned: links an older
        // guardd left under other names (a program renamed since) go now.
        let ours: Vec<&str> = kernel.links.keys().map(String::as_str).collect();
        kernel.stale_links = pins.remove_links_except(&ours);
        for link in &kernel.stale_links {
            match &link.left {
                None => tracing::warn!(
                    "removed {}/{}: no program of this guardd has that name (another \
                     version's link)",
                    pin_dir.display(),
                    link.pin
                ),
                Some(err) => tracing::error!(
                    "{}/{}: no program of this guardd has that name, and the link could NOT \
                     be removed: {err}",
                    pin_dir.display(),
                    link.pin
                ),
            }
        }
        // Probes of an earlier run on files since changed (their links went just above): those no event
        // uses any more go (the kernel refuses to remove the others).
        let group = super::uprobe_events::group_of(pin_dir);
        for (event, err) in super::uprobe_events::remove_group(&group) {
            if err.raw_os_error() != Some(libc::EBUSY) {
                tracing::warn!("tracefs probe {event} not removed: {err}");
            }
        }
        if let Some(old) = old_pins {
            // The old programs are detached now: what they stopped is all listed.
            kernel.layout_change = Some(old.finish());
        }
        Ok((kernel, events))
    }

    /// What this start found of pins of another layout, if it found any.
    pub fn layout_change(&self) -> Option<&LayoutChange> {
        self.layout_change.as_ref()
    }

    /// Links this start found pinned under names it has no program of.
    pub fn stale_links(&self) -> &[StaleLink] {
        &self.stale_links
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

    fn attach_lsm(&mut self) -> Result<(), KernelError> {
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
            let program_err = KernelError::program(name);
            let program: &mut Lsm = self.program(name)?;
            program.load(hook, &btf).map_err(program_err)?;
            let link = program.attach().map_err(program_err)?;
            let link = program.take_link(link).map_err(program_err)?;
            self.pin_link(name.to_string(), FdLink::from(link))?;
            let program: &mut Lsm = self.program(name)?;
            let info = program.info().map_err(program_err)?;
            self.list_loaded(name, format!("lsm/{hook}"), &info, true);
        }
        Ok(())
    }

    /// Program `name` of the object, as its type `P`.
    pub(super) fn program<P>(&mut self, name: &'static str) -> Result<&mut P, KernelError>
    where
        for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
    {
        self._ebpf
            .program_mut(name)
            .ok_or_else(|| KernelError::Tracefs(format!("program {name} missing from object")))?
            .try_into()
            .map_err(KernelError::program(name))
    }

    /// Pins `link` as `links/NAME` (in place of an earlier run's) and keeps its fd.
    pub(super) fn pin_link(&mut self, name: String, link: FdLink) -> Result<(), KernelError> {
        let pinned = self.pins.replace_link(&name, link)?;
        self.links.insert(name, pinned);
        Ok(())
    }

    /// Lists a loaded program for status.
    pub(super) fn list_loaded(
        &mut self,
        name: &str,
        tracepoint: String,
        info: &ProgramInfo,
        attached: bool,
    ) {
        self.loaded.push(ProgramView {
            name: name.to_string(),
            id: info.id(),
            tracepoint,
            map_ids: info.map_ids().ok().flatten().unwrap_or_default(),
            attached,
        });
    }
}

/// Map `name` of the object, as its type `M`.
fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, KernelError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    })?;
    M::try_from(map).map_err(KernelError::map(name))
}

/// Whether loading failed before the verifier ran because LSM programs are
/// not allowed here at all (an expected absence, not a fault of ours).
fn refused_outright(err: &KernelError) -> bool {
    matches!(
        err,
        KernelError::Program {
            source: aya::programs::ProgramError::LoadError { io_error, verifier_log },
            ..
        } if io_error.raw_os_error() == Some(libc::EPERM) && verifier_log.to_string().trim().is_empty()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use guard_common::names::{map, program};

    use super::{EBPF_OBJECT, LSM_PROGRAMS, PROGRAMS};

    /// aya's macros name maps and programs after the identifiers in
    /// guard-ebpf, so the constants are checked against the built object.
    #[test]
    fn the_names_are_those_of_the_object() {
        if EBPF_OBJECT.is_empty() {
            return; // built with AYA_BUILD_SKIP
        }
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        let maps: BTreeSet<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect();
        assert_eq!(maps, BTreeSet::from(map::ALL), "map names");
        let programs: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
        assert_eq!(programs, BTreeSet::from(program::ALL), "program names");
        let loaded: BTreeSet<&str> = PROGRAMS
            .iter()
            .map(|(name, _, _)| *name)
            .chain(LSM_PROGRAMS.iter().map(|(name, _, _)| *name))
            .chain([
                program::REPORT_SYSCALL,
                program::API_TLS_WRITE,
                program::API_SQL_QUERY,
                program::API_TLS_FREE,
                program::API_DLOPEN_RETURN,
                program::API_TLS_START,
            ])
            .collect();
        assert_eq!(loaded, programs, "programs guardd loads");
    }
}
