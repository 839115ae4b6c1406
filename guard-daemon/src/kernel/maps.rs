//! Typed access to the programs' maps.
use guard_common::{
    comm_key, Comm, FileKey, GateDecision, GateDecisionKey, GateHeldEntry, GateRoot, HeldEntry,
    ReportCall, SessionEntry, OVERFLOW_EVENTS_LOST, OVERFLOW_STOPS_KILLED, PROGRAM_AGENT,
    PROGRAM_INTERPRETER, PROGRAM_WATCHED, SESSION_SECCOMP,
};

use super::{Continuation, Kernel, KernelError, ProgramSets};

impl Kernel {
    /// Whether some session's calls are not seen by seccomp (so only a
    /// report can tell of them where the BPF LSM does not run).
    pub fn any_session_without_seccomp(&self) -> bool {
        self.sessions
            .iter()
            .filter_map(Result::ok)
            .any(|(_, entry)| entry.flags & SESSION_SECCOMP == 0)
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
