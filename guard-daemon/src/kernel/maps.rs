//! Typed access to the programs' maps.
use std::hash::Hash;

use aya::{
    maps::{HashMap, MapData},
    Pod,
};
use guard_common::{
    comm_key, names::map, Comm, FileKey, GateDecision, GateDecisionKey, GateHeldEntry, GateRoot,
    HeldEntry, ReportCall, SessionEntry, COUNT_QUIET_OPENS, OVERFLOW_EVENTS_LOST,
    OVERFLOW_STOPS_KILLED, PROGRAM_AGENT, PROGRAM_INTERPRETER, PROGRAM_MULTI_CALL,
    PROGRAM_SCRIPT_RUNNER, PROGRAM_WATCHED, SESSION_SECCOMP,
};

use super::{Continuation, Kernel, KernelError, ProgramSets};

/// Makes `map` hold exactly `wanted`: removes the keys not wanted, then
/// writes the entries it lacks or holds with another value.
fn make_exactly<K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    wanted: &std::collections::HashMap<K, V>,
) -> Result<(), KernelError>
where
    K: Pod + Eq + Hash,
    V: Pod + PartialEq,
{
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !wanted.contains_key(key))
        .collect();
    for key in stale {
        let _ = map.remove(&key);
    }
    for (key, value) in wanted {
        if map.get(key, 0).ok().as_ref() == Some(value) {
            continue;
        }
        map.insert(key, value, 0).map_err(KernelError::map(name))?;
    }
    Ok(())
}

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
        make_exactly(&mut self.report_calls, map::REPORT_CALLS, calls)
    }

    /// Makes the paths whose writing opens are not reported exactly `paths`
    /// (each absolute and shorter than `QUIET_PATH - 1` bytes; others are left out).
    pub fn set_report_quiet_opens(&mut self, paths: &[&str]) -> Result<(), KernelError> {
        let wanted = paths
            .iter()
            .filter_map(|path| quiet_key(path))
            .map(|key| (key, 1u8))
            .collect();
        make_exactly(
            &mut self.report_quiet_opens,
            map::REPORT_QUIET_OPENS,
            &wanted,
        )?;
        self.quiet_opens = paths.iter().map(|p| p.to_string()).collect();
        Ok(())
    }

    /// The paths whose writing opens the report-only program does not send.
    pub fn report_quiet_opens(&self) -> &[String] {
        &self.quiet_opens
    }

    /// Writing opens of quiet paths the report-only program did not send,
    /// summed over the CPUs.
    pub fn quiet_opens(&self) -> u64 {
        self.count(COUNT_QUIET_OPENS)
    }

    /// A `KERNEL_COUNTS` slot summed over the CPUs.
    pub(super) fn count(&self, slot: u32) -> u64 {
        self.kernel_counts
            .get(&slot, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum())
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
            .map_err(KernelError::map(map::GUARDD))
    }

    /// The policy's `SETTING_*` bits for the kernel side (with those the
    /// kernel's own abilities set).
    pub fn set_settings(&mut self, bits: u32) -> Result<(), KernelError> {
        let own = match self.followed_probes().exec_unfollows {
            true => guard_common::SETTING_EXEC_UNFOLLOWS,
            false => 0,
        };
        self.settings
            .set(0, bits | own, 0)
            .map_err(KernelError::map(map::SETTINGS))
    }

    /// Adds `bits` to the settings in force.
    pub(super) fn add_settings(&mut self, bits: u32) -> Result<(), KernelError> {
        let now = self.settings.get(&0, 0).unwrap_or(0);
        self.settings
            .set(0, now | bits, 0)
            .map_err(KernelError::map(map::SETTINGS))
    }

    /// Makes the protected-file map exactly `keys`.
    pub fn set_protected(&mut self, keys: &[(FileKey, u32)]) -> Result<(), KernelError> {
        let keys = keys.iter().copied().collect();
        make_exactly(&mut self.protected, map::PROTECTED, &keys)
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
        for name in &sets.script_runners {
            *flags.entry(comm_key(name.as_bytes())).or_default() |= PROGRAM_SCRIPT_RUNNER;
        }
        for name in &sets.multi_call {
            if let Some(flags) = flags.get_mut(&comm_key(name.as_bytes())) {
                *flags |= PROGRAM_MULTI_CALL;
            }
        }
        make_exactly(&mut self.programs, map::PROGRAMS, &flags)?;
        self.set_argv_filters(&sets.prefilters);
        let dirs = sets.exec_dirs.iter().map(|key| (*key, 1)).collect();
        make_exactly(&mut self.exec_dirs, map::EXEC_DIRS, &dirs)
    }

    /// The session a thread belongs to, from the kernel's own map.
    pub fn session_of(&self, tid: u32) -> Option<SessionEntry> {
        self.sessions.get(&tid, 0).ok()
    }

    /// The tasks of session `only` (of all sessions when None).
    pub fn session_tasks(&self, only: Option<u32>) -> Vec<u32> {
        (self.sessions.iter())
            .filter_map(Result::ok)
            .filter(|(_, entry)| only.is_none_or(|id| entry.session_id == id))
            .map(|(tid, _)| tid)
            .collect()
    }

    pub fn add_to_session(&mut self, tid: u32, entry: SessionEntry) -> Result<(), KernelError> {
        self.sessions
            .insert(tid, entry, 0)
            .map_err(KernelError::map(map::SESSIONS))
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

    /// Records a stop in HELD that maps of another layout recorded (see
    /// `layout`), so that the kernel guards it again and guardd raises it
    /// as a stop whose event was lost.
    pub fn rehold(&mut self, pid: u32, session_id: u32, uid: u32) -> Result<(), KernelError> {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let entry = HeldEntry {
            ktime_ns: now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64,
            session_id,
            uid,
        };
        self.held
            .insert(pid, entry, 0)
            .map_err(KernelError::map(map::HELD))
    }

    pub fn forget_held(&mut self, pid: u32) {
        let _ = self.held.remove(&pid);
    }

    /// Forgets `pid`'s stop unless the kernel recorded it at or after
    /// `resumed_at`: a process let go can exec and stop again before guardd
    /// gets here, and that new stop must stay listed.
    pub fn forget_held_before(&mut self, pid: u32, resumed_at: u64) {
        if self
            .held_entry(pid)
            .is_some_and(|entry| entry.ktime_ns >= resumed_at)
        {
            return;
        }
        self.forget_held(pid);
    }

    /// Makes the syscall gate's root map exactly `roots`.
    pub fn set_gate_roots(
        &mut self,
        roots: &std::collections::HashMap<FileKey, GateRoot>,
    ) -> Result<(), KernelError> {
        make_exactly(&mut self.gate_roots, map::GATE_ROOTS, roots)
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
            .map_err(KernelError::map(map::GATE_DECIDED))?;
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

/// `path` as the report-only program reads it: its bytes, zero-padded.
fn quiet_key(path: &str) -> Option<[u8; guard_common::QUIET_PATH]> {
    let bytes = path.as_bytes();
    if !path.starts_with('/') || bytes.len() >= guard_common::QUIET_PATH - 1 {
        return None;
    }
    let mut key = [0u8; guard_common::QUIET_PATH];
    key[..bytes.len()].copy_from_slice(bytes);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_path_is_keyed_as_the_program_reads_it_or_not_at_all() {
        let key = quiet_key("/dev/null").unwrap();
        assert_eq!(&key[..10], b"/dev/null\0");
        assert!(key[10..].iter().all(|b| *b == 0));
        // 14 bytes fit with their NUL and a spare byte; a read of 15 may be cut.
        assert!(quiet_key("/dev/abcdefghi").is_some());
        assert!(quiet_key("/dev/abcdefghij").is_none());
        assert!(quiet_key("dev/null").is_none(), "relative");
    }
}
