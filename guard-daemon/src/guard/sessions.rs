//! The session table: sessions started by `guardctl run`, detected by the
//! kernel at an agent's exec, adopted from an interpreter's argv or found by
//! the /proc scan at start.
use super::*;

impl Guard {
    pub(super) fn on_interpreter(&mut self, pid: u32) {
        let Ok(argv) = procfs::cmdline(pid) else {
            return;
        };
        let words: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(package) = self.policy.runs_agent_package(&words) {
            self.adopt_tree(pid, package, "interpreter");
        }
    }

    /// Makes `root` and everything already below it one session.
    pub(super) fn adopt_tree(&mut self, root: u32, agent: String, origin: &'static str) {
        let uid = procfs::uid(root).unwrap_or(u32::MAX);
        let entry = SessionEntry {
            session_id: root,
            flags: SESSION_DETECTED,
            owner_uid: uid,
            _pad: 0,
        };
        // The root first, so that children forked from now on inherit it.
        for pid in procfs::process_tree(root) {
            for tid in procfs::threads(pid) {
                if let Err(err) = self.kernel.add_to_session(tid, entry) {
                    tracing::error!(tid, "cannot add to session {root}: {err}");
                }
            }
        }
        let argv = procfs::cmdline(root).unwrap_or_default();
        self.register_session(root, Some(agent), origin, uid, argv);
    }

    pub(super) fn register_session(
        &mut self,
        id: u32,
        agent: Option<String>,
        origin: &'static str,
        uid: u32,
        argv: Vec<Vec<u8>>,
    ) {
        tracing::info!(session = id, agent, origin, "session started");
        let mut record = AuditRecord::new(AuditEvent::SessionStart);
        record.session = Some(id);
        record.pid = Some(id);
        record.agent = agent.clone();
        record.uid = Some(uid);
        record.argv = argv.iter().map(|a| escape_bytes(a)).collect();
        record.ancestry = crate::request::ancestry(id);
        record.reason = Some(origin.into());
        self.audit.write(&record);
        let new_owner = !self.sessions.values().any(|s| s.uid == uid);
        self.sessions.insert(
            id,
            Session {
                id,
                agent,
                origin: origin.to_string(),
                uid,
                listener: false,
            },
        );
        if new_owner {
            self.sync_gate_roots();
        }
        self.sync_reporting();
    }

    /// Finds agents that were already running when guardd started.
    pub fn scan_running_agents(&mut self) {
        let me = std::process::id();
        for pid in procfs::all_pids() {
            if pid == me || self.kernel.session_of(pid).is_some() {
                continue;
            }
            let Ok(stat) = procfs::stat(pid) else {
                continue;
            };
            let agent = if self.policy.agents.programs.contains(&stat.comm) {
                Some(stat.comm.clone())
            } else if self.policy.agents.interpreters.contains(&stat.comm) {
                let argv = procfs::cmdline(pid).unwrap_or_default();
                let words: Vec<String> = argv
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                self.policy.runs_agent_package(&words)
            } else {
                None
            };
            if let Some(agent) = agent {
                self.adopt_tree(pid, agent, "scan");
            }
        }
    }

    pub fn start_session(&mut self, peer: Peer, argv: Vec<String>) -> Response {
        let Some(pid) = peer.pid.filter(|pid| *pid != 0) else {
            return error("cannot identify the calling process");
        };
        if let Some(existing) = self.kernel.session_of(pid) {
            // A launcher inside a session stays in that session.
            return Response::SessionStarted {
                syscall_gate: self.seccomp_gate(),
                session_id: existing.session_id,
                warnings: self.session_warnings(peer.uid),
            };
        }
        // Seen by seccomp from the start where the launcher installs the
        // filter (it runs nothing if that fails): no report-only tracepoints.
        let seccomp = if self.seccomp_gate() {
            guard_common::SESSION_SECCOMP
        } else {
            0
        };
        let entry = SessionEntry {
            session_id: pid,
            flags: SESSION_LAUNCHED | seccomp,
            owner_uid: peer.uid,
            _pad: 0,
        };
        for tid in procfs::threads(pid) {
            if let Err(err) = self.kernel.add_to_session(tid, entry) {
                return error(&format!("cannot register the session: {err}"));
            }
        }
        let argv = argv.into_iter().map(String::into_bytes).collect();
        self.register_session(pid, None, "launched", peer.uid, argv);
        Response::SessionStarted {
            session_id: pid,
            syscall_gate: self.seccomp_gate(),
            warnings: self.session_warnings(peer.uid),
        }
    }

    /// What this host cannot promise about a session of `uid`, said when it starts.
    fn session_warnings(&self, uid: u32) -> Vec<String> {
        let mut warnings = Vec::new();
        if let (0, Some(why)) = (uid, self.kernel.lsm_missing()) {
            warnings.push(format!(
                "this session runs as root on a host without the BPF LSM ({why}): it cannot be \
                 fully contained (root can kill guardd, detach its programs or rewrite its files; \
                 agent-guard holds or audits what it sees of that, no more)"
            ));
        }
        if let SameUidAuth::Unauthenticated(why) = self.same_uid_auth() {
            warnings.push(format!(
                "approvals by uid {uid} are unauthenticated here ({why}): a process of this uid \
                 outside the session can approve its holds"
            ));
        }
        if let Some(why) = self.kernel.report_failed() {
            warnings.push(format!(
                "the report-only syscall gate is NOT working ({why}); retried"
            ));
        }
        warnings
    }

    /// The first process from `pid` upwards that the kernel counts in a session.
    pub(super) fn session_ancestor(&self, pid: u32) -> Option<(u32, u32)> {
        procfs::ancestry(pid).into_iter().find_map(|(ancestor, _)| {
            self.kernel
                .session_of(ancestor)
                .map(|entry| (ancestor, entry.session_id))
        })
    }
}
