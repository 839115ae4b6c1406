//! The syscall gate on the BPF LSM (`guard-ebpf/src/gate.rs`): guardd keeps
//! the kernel's map of protected roots (by device and inode) in step with the
//! policy and the session owners' homes, raises a hold for each process the
//! kernel stopped, and answers it by writing the decision into the kernel
//! before it continues the process.
use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
};

use guard_common::{FileKey, GateHeldEntry, GateRoot, ANY_OWNER, ESCAPE_CONNECT, MAX_GATE_ROOTS};

use super::{cover, syscall_gate::GateRequest, *};
use crate::{
    holds::{GateGroup, GateWaiter},
    policy::{
        protect::{literal_path, matcher, Operation, Places},
        GateMode,
    },
    protected::file_key,
};

/// How often the roots are looked up again (a protected directory created or
/// replaced later gets a new inode).
pub(in crate::guard) const ROOT_REFRESH: Duration = Duration::from_secs(5);

/// One protected root the kernel knows, for reading its events back.
#[derive(Debug, Clone)]
pub(in crate::guard) struct GateRootInfo {
    pub protection: usize,
    pub path: PathBuf,
    pub owner: u32,
}

/// The LSM gate's bookkeeping in `Guard`.
#[derive(Debug, Default)]
pub(in crate::guard) struct LsmGate {
    pub roots: HashMap<FileKey, Vec<GateRootInfo>>,
    pub synced: Option<Instant>,
    /// Pid -> /proc start time of processes with decisions in the kernel.
    pub decided: HashMap<u32, u64>,
    /// Whether the map's size cut a `fallback` entry's roots short.
    pub fallback_truncated: bool,
}

/// Room left in the root map for roots that appear between two looks.
const FALLBACK_MARGIN: usize = 64;

fn bit(operation: Operation) -> u32 {
    operation.gate_bit()
}

fn operation_of(bits: u32) -> Option<Operation> {
    Operation::of_gate_bits(bits)
}

impl Guard {
    /// Whether `guardctl run` installs the seccomp gate: only asked for, and
    /// only where the BPF LSM gate does not run.
    pub(in crate::guard) fn seccomp_gate(&self) -> bool {
        self.policy.syscall_gate == GateMode::On && self.kernel.lsm_missing().is_some()
    }

    pub(in crate::guard) fn lsm_gate_active(&self) -> bool {
        self.policy.syscall_gate != GateMode::Off && self.kernel.lsm_missing().is_none()
    }

    /// Puts the current device and inode of every protected root into the kernel.
    pub(in crate::guard) fn sync_gate_roots(&mut self) {
        self.gates.lsm.synced = Some(Instant::now());
        let mut roots: HashMap<FileKey, GateRoot> = HashMap::new();
        let mut infos: HashMap<FileKey, Vec<GateRootInfo>> = HashMap::new();
        if self.lsm_gate_active() {
            let owners = self.gate_owners();
            for (at, protection) in self.policy.protections.iter().enumerate() {
                if protection.fallback {
                    continue;
                }
                let mask = protection.operations.iter().fold(0, |m, o| m | bit(*o));
                for pattern in &protection.except {
                    for (path, owner) in expand(pattern, &owners) {
                        let Ok(meta) = std::fs::metadata(&path) else {
                            continue;
                        };
                        let root =
                            roots
                                .entry(file_key(meta.dev(), meta.ino()))
                                .or_insert(GateRoot {
                                    owner,
                                    ..Default::default()
                                });
                        root.exempt |= mask;
                    }
                }
                for pattern in &protection.paths {
                    for (path, owner) in expand(pattern, &owners) {
                        let Ok(meta) = std::fs::metadata(&path) else {
                            continue;
                        };
                        let key = file_key(meta.dev(), meta.ino());
                        let info = GateRootInfo {
                            protection: at,
                            path,
                            owner,
                        };
                        add_root(&mut roots, &mut infos, key, info, protection.action, mask);
                    }
                }
            }
        }
        self.gates.lsm.fallback_truncated = false;
        if self.lsm_gate_active() {
            self.add_fallback_roots(&mut roots, &mut infos);
        }
        if let Err(err) = self.kernel.set_gate_roots(&roots) {
            tracing::error!("syscall gate: protected roots not all in the kernel: {err}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.reason = Some(format!("syscall gate root map: {err}"));
            self.audit.write(&record);
        }
        self.gates.lsm.roots = infos;
    }

    /// The roots of `fallback` entries: their paths covered around every
    /// session's home and workspace (see `cover.rs`), after the other entries.
    fn add_fallback_roots(
        &mut self,
        roots: &mut HashMap<FileKey, GateRoot>,
        infos: &mut HashMap<FileKey, Vec<GateRootInfo>>,
    ) {
        // Every user's home too: a session the kernel detects at an exec is
        // gated before guardd has read its workspace (held there meanwhile).
        let sessions: BTreeSet<(PathBuf, Option<PathBuf>)> = (self.sessions.iter())
            .map(|s| (super::home_of(s.uid), s.workspace.clone()))
            .chain(self.gate_owners().into_iter().map(|(_, home)| (home, None)))
            .collect();
        let named: Vec<PathBuf> = infos.values().flatten().map(|i| i.path.clone()).collect();
        let mounts = cover::mount_points();
        let protections = &self.policy.protections;
        for (at, protection) in protections.iter().enumerate().filter(|(_, p)| p.fallback) {
            let (mut excepts, mut splits, mut paths) = (Vec::new(), Vec::new(), Vec::new());
            for (home, workspace) in &sessions {
                let places = Places {
                    home,
                    workspace: workspace.as_deref(),
                };
                let literal = |pattern: &String| literal_path(pattern, places);
                excepts.extend(protection.except.iter().filter_map(|e| matcher(e, places)));
                paths.extend(protection.paths.iter().filter_map(literal));
                splits.extend(crate::policy::protect::splits(protections, places));
            }
            paths.sort();
            paths.dedup();
            let excepted = |path: &std::path::Path| {
                path.ancestors()
                    .any(|a| excepts.iter().any(|e| e.is_match(a)))
            };
            let bounds = cover::Bounds {
                excepted: &excepted,
                splits: &splits,
                named: &named,
                mounts: &mounts,
                limit: (MAX_GATE_ROOTS as usize).saturating_sub(roots.len() + FALLBACK_MARGIN),
            };
            let found = cover::cover(&paths, &bounds);
            self.gates.lsm.fallback_truncated |= found.truncated;
            let mask = protection.operations.iter().fold(0, |m, o| m | bit(*o));
            for (path, key) in found.roots {
                let info = GateRootInfo {
                    protection: at,
                    path,
                    owner: ANY_OWNER,
                };
                add_root(roots, infos, key, info, protection.action, mask);
            }
        }
        if self.gates.lsm.fallback_truncated {
            tracing::error!(
                "syscall gate: more than {MAX_GATE_ROOTS} roots; a fallback entry is not covered everywhere"
            );
        }
    }

    /// Users whose `~` is protected: session owners, root and local users.
    fn gate_owners(&self) -> Vec<(u32, PathBuf)> {
        let mut uids = self.sessions.owners();
        uids.insert(0);
        if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
            for line in passwd.lines() {
                if let Some(uid) = line.split(':').nth(2).and_then(|u| u.parse::<u32>().ok()) {
                    if (1000..60000).contains(&uid) {
                        uids.insert(uid);
                    }
                }
            }
        }
        uids.into_iter()
            .filter_map(|uid| {
                let user = nix::unistd::User::from_uid(uid.into()).ok().flatten()?;
                Some((uid, user.dir))
            })
            .collect()
    }

    pub(in crate::guard) fn on_gate_event(&mut self, kind: EventKind, event: &Event) {
        let operation = operation_of(event.op).unwrap_or(Operation::Write);
        if kind == EventKind::GateHeld {
            // Raised already (from the map), or decided before its event was read.
            if self.holds.has_pid(event.pid) {
                return;
            }
            if let Some(entry) = self.kernel.gate_held_entry(event.pid) {
                self.raise_lsm_hold(event.pid, entry);
            }
            return;
        }
        let root = self.gate_root(event.root, operation, None);
        let root_path = root.as_ref().map_or_else(
            || format!("dev {} ino {}", event.root.dev, event.root.ino),
            |r| r.path.display().to_string(),
        );
        let mut record = AuditRecord::new(AuditEvent::Error);
        record.pid = Some(event.pid);
        record.session = Some(event.session_id);
        record.uid = Some(event.uid);
        record.operation = Some(if event.op == ESCAPE_CONNECT {
            "connect (unix socket served from outside the session)".to_string()
        } else {
            format!("{} under {root_path}", operation.name())
        });
        record.rule = root.map(|r| self.policy.protections[r.protection].id.clone());
        match kind {
            EventKind::GateDenied => {
                record.event = Some(AuditEvent::Deny);
                record.decision = Some(AuditDecision::Deny);
            }
            EventKind::GateAudited => {
                record.event = Some(AuditEvent::Audit);
                record.decision = Some(AuditDecision::Allow);
            }
            _ => {
                tracing::error!(
                    pid = event.pid,
                    "syscall gate: the stop failed, the call was refused"
                );
                record.decision = Some(AuditDecision::Deny);
                record.reason =
                    Some("the stop could not be sent: the call was refused (EPERM)".into());
            }
        }
        self.audit.write(&record);
    }

    /// The protection at `key` that acts on `operation` (for `owner`, when known).
    fn gate_root(
        &self,
        key: FileKey,
        operation: Operation,
        owner: Option<u32>,
    ) -> Option<GateRootInfo> {
        let infos = self.gates.lsm.roots.get(&key)?;
        let fits = |info: &&GateRootInfo| {
            owner.is_none_or(|o| info.owner == o || info.owner == ANY_OWNER)
                && self.policy.protections[info.protection]
                    .operations
                    .contains(&operation)
        };
        let holds =
            |info: &&GateRootInfo| self.policy.protections[info.protection].action == Action::Hold;
        infos
            .iter()
            .filter(fits)
            .find(holds)
            .or_else(|| infos.iter().find(fits))
            .cloned()
    }

    fn raise_lsm_hold(&mut self, pid: u32, entry: GateHeldEntry) {
        let Ok(process) = ProcessHandle::open(pid) else {
            let record = AuditRecord::new(AuditEvent::Error);
            let ending =
                lsm_call_ending(None, pid, entry.root, entry.start_ns, String::new(), record);
            return self.finish(ending, Outcome::Gone);
        };
        if entry.op == ESCAPE_CONNECT {
            self.raise_lsm_connect(process, entry);
            return;
        }
        let operation = operation_of(entry.op).unwrap_or(Operation::Write);
        let owner = self.sessions.owner_of(entry.session_id);
        let Some(root) = self.gate_root(entry.root, operation, owner) else {
            // The policy no longer protects that root: the call may run.
            tracing::info!(
                pid,
                "syscall gate: held call on a root no longer protected, released"
            );
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.pid = Some(pid);
            let ending = lsm_call_ending(
                Some(&process),
                pid,
                entry.root,
                entry.start_ns,
                operation.name().to_string(),
                record,
            );
            return self.finish(ending, Outcome::PolicyAllowed { audited: false });
        };
        let protection = self.policy.protections[root.protection].clone();
        let described = crate::seccomp::describe_stopped(entry.tid)
            .map(|paths| {
                paths
                    .iter()
                    .map(|p| escape_bytes(p.as_os_str().as_encoded_bytes()))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            })
            .unwrap_or_else(|| format!("under {}", root.path.display()));
        let operation_text = format!("{} {described}", operation.name());
        let request = self.request_of(process.pid, entry.session_id);
        let mut record = AuditRecord::from(&request);
        record.rule = Some(protection.id.clone());
        record.operation = Some(operation_text.clone());
        let group = GateGroup {
            pid,
            start_time: process.start_time,
            protection: protection.id.clone(),
            root: root.path.clone(),
        };
        self.raise_gate_hold(GateRequest {
            operation_name: operation.name(),
            waiter: GateWaiter::Lsm {
                root: entry.root,
                start_ns: entry.start_ns,
            },
            process,
            request,
            protection,
            group,
            operation: operation_text,
            record,
        });
    }

    /// The decision into the kernel first, then SIGCONT: the restarted call
    /// finds it. If the kernel refuses the write, nothing is continued.
    /// `record`: the call's record, for the error.
    pub(in crate::guard) fn answer_lsm_call(
        &mut self,
        process: &ProcessHandle,
        root: FileKey,
        start_ns: u64,
        allowed: bool,
        record: &AuditRecord,
    ) {
        let pid = process.pid;
        match self.kernel.decide_gate(pid, root, start_ns, allowed) {
            Ok(()) => {
                self.gates.lsm.decided.insert(pid, process.start_time);
                if let Err(err) = process.resume() {
                    tracing::error!(pid, "resume failed: {err}");
                }
            }
            Err(err) => {
                tracing::error!(pid, "syscall gate decision not written: {err}");
                let mut record = record.clone();
                record.event = Some(AuditEvent::Error);
                if allowed {
                    // Still stopped and still in the kernel's map: raised again.
                    record.reason = Some(format!(
                        "approval not written to the kernel ({err}); the call stays held"
                    ));
                } else {
                    record.reason = Some(format!(
                        "denial not written to the kernel ({err}); the process is killed"
                    ));
                    let _ = process.kill();
                }
                self.audit.write(&record);
            }
        }
    }

    /// Periodic work: roots looked up again, stops whose event was lost
    /// raised, decisions of ended processes dropped.
    pub(in crate::guard) fn tick_lsm_gate(&mut self) {
        if self
            .gates
            .lsm
            .synced
            .is_none_or(|at| at.elapsed() >= ROOT_REFRESH)
        {
            self.sync_gate_roots();
            let decided = std::mem::take(&mut self.gates.lsm.decided);
            let alive = |pid: u32| match decided.get(&pid) {
                Some(start) => procfs::stat(pid).is_ok_and(|s| s.start_time == *start),
                None => procfs::stat(pid).is_ok(),
            };
            self.kernel.prune_gate_decisions(|pid, _| alive(pid));
            let kept = decided.iter().filter(|(pid, _)| alive(**pid));
            self.gates.lsm.decided = kept.map(|(pid, start)| (*pid, *start)).collect();
        }
        let grace_ns = RECOVERY_GRACE.as_nanos() as u64;
        let now_ns = monotonic_ns();
        for (pid, entry) in self.kernel.gate_held() {
            if self.holds.has_pid(pid) || now_ns.saturating_sub(entry.ktime_ns) < grace_ns {
                continue;
            }
            tracing::warn!(pid, "raising a gated call whose event was lost");
            self.exec_gate.stats.counts.recovered_from_map += 1;
            self.raise_lsm_hold(pid, entry);
        }
    }
}

/// A `[[protect]]` path made concrete: per owner for `~`, once for the rest.
/// Glob patterns are not expanded here (the seccomp gate matches them).
/// One protected root into the kernel's map (`roots`) and into the lookup
/// back from its key (`infos`): entries on the same inode add up their
/// operations, and an inode protected for two owners is protected for all.
fn add_root(
    roots: &mut HashMap<FileKey, GateRoot>,
    infos: &mut HashMap<FileKey, Vec<GateRootInfo>>,
    key: FileKey,
    info: GateRootInfo,
    action: Action,
    mask: u32,
) {
    let root = roots.entry(key).or_insert(GateRoot {
        owner: info.owner,
        ..Default::default()
    });
    if root.owner != info.owner {
        root.owner = ANY_OWNER;
    }
    match action {
        Action::Deny => root.deny |= mask,
        Action::Audit => root.audit |= mask,
        _ => root.hold |= mask,
    }
    infos.entry(key).or_default().push(info);
}

fn expand(pattern: &str, owners: &[(u32, PathBuf)]) -> Vec<(PathBuf, u32)> {
    if pattern.contains(['*', '?', '[', '{']) {
        return Vec::new();
    }
    match pattern.strip_prefix('~') {
        Some(rest) => owners
            .iter()
            .map(|(uid, home)| (PathBuf::from(format!("{}{rest}", home.display())), *uid))
            .collect(),
        None => vec![(PathBuf::from(pattern), ANY_OWNER)],
    }
}
