//! The session table: sessions started by `guardctl run`, detected by the
//! kernel at an agent's exec, adopted from an interpreter's argv or found by
//! the /proc scan at start.
use std::{
    collections::{BTreeSet, HashSet},
    path::{Path, PathBuf},
};

use super::*;

#[derive(Debug, Clone)]
pub struct Session {
    pub id: u32,
    pub agent: Option<String>,
    pub origin: String,
    pub uid: u32,
    /// Whether its launcher handed this guardd a seccomp listener.
    pub listener: bool,
    /// The working tree it started in: `{workspace}` in `[[protect]]`.
    pub workspace: Option<PathBuf>,
}

impl From<SavedSession> for Session {
    fn from(saved: SavedSession) -> Self {
        Self {
            workspace: saved
                .workspace
                .or_else(|| workspace_of(saved.id, saved.uid)),
            id: saved.id,
            agent: saved.agent,
            origin: saved.origin,
            uid: saved.uid,
            // Its listener died with the guardd that saved it.
            listener: false,
        }
    }
}

impl From<&Session> for SavedSession {
    fn from(session: &Session) -> Self {
        Self {
            id: session.id,
            agent: session.agent.clone(),
            origin: session.origin.clone(),
            uid: session.uid,
            listener: session.listener,
            workspace: session.workspace.clone(),
        }
    }
}

impl From<&Session> for SessionView {
    fn from(session: &Session) -> Self {
        Self {
            id: session.id,
            agent: session.agent.clone(),
            origin: session.origin.clone(),
            uid: session.uid,
            // A directory name can hold control characters: escaped.
            workspace: (session.workspace.as_ref())
                .map(|w| escape_bytes(w.as_os_str().as_encoded_bytes())),
        }
    }
}

/// The working tree of the process `pid` of `uid` starts a session in: the
/// git work tree around its cwd, or the cwd itself. None when the cwd is `/`,
/// the home directory or above it: those are never the project.
pub(in crate::guard) fn workspace_of(pid: u32, uid: u32) -> Option<PathBuf> {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    workspace_in(&cwd, &syscall_gate::home_of(uid))
}

fn workspace_in(cwd: &Path, home: &Path) -> Option<PathBuf> {
    if !cwd.is_absolute() || home.starts_with(cwd) {
        return None;
    }
    let top = (cwd.ancestors())
        .take_while(|dir| !home.starts_with(dir))
        .find(|dir| dir.join(".git").exists());
    Some(top.unwrap_or(cwd).to_path_buf())
}

/// The session table, and which sessions the seccomp gate sees.
#[derive(Default)]
pub(crate) struct Sessions {
    table: BTreeMap<u32, Session>,
    seccomp: HashSet<u32>,
}

impl Sessions {
    pub fn get(&self, id: u32) -> Option<&Session> {
        self.table.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.table.values()
    }

    pub fn agent_of(&self, id: u32) -> Option<String> {
        self.get(id).and_then(|s| s.agent.clone())
    }

    /// The uid that runs session `id`, if guardd knows the session.
    pub fn owner_of(&self, id: u32) -> Option<u32> {
        self.get(id).map(|s| s.uid)
    }

    /// Whether `uid` runs any agent session.
    pub fn runs_agents(&self, uid: u32) -> bool {
        self.iter().any(|s| s.uid == uid)
    }

    /// The uids that run agent sessions.
    pub fn owners(&self) -> BTreeSet<u32> {
        self.iter().map(|s| s.uid).collect()
    }

    /// Adds a session; true when its uid ran none before.
    pub fn insert(&mut self, session: Session) -> bool {
        let new_owner = !self.runs_agents(session.uid);
        self.table.insert(session.id, session);
        new_owner
    }

    /// Marks session `id`'s launcher `pid` as having handed over its
    /// listener: once, and only for the process that started a launched session.
    pub fn take_listener(&mut self, id: u32, pid: u32) -> bool {
        match self.table.get_mut(&id) {
            Some(known) if known.origin == "launched" && pid == known.id && !known.listener => {
                known.listener = true;
                true
            }
            _ => false,
        }
    }

    /// Session `id`'s file calls are gated by seccomp from now on.
    pub fn gate_by_seccomp(&mut self, id: u32) {
        self.seccomp.insert(id);
    }

    pub fn gated_by_seccomp(&self, id: u32) -> bool {
        self.seccomp.contains(&id)
    }
}

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
        // Processes that ran outside any session may have connected unseen.
        self.kernel.follow_adopted(root);
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
        self.sessions.insert(Session {
            id,
            agent,
            origin: origin.to_string(),
            uid,
            listener: false,
            workspace: workspace_of(id, uid),
        });
        // The programs it runs already get the API probes; its processes are
        // followed from their first TLS connection (adopted ones at once).
        self.probe_session_programs(Some(id));
        // A new owner's home and a new workspace change the gate's roots.
        self.sync_gate_roots();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_the_work_tree_around_the_cwd_and_never_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home/dev");
        let repo = home.join("src/app");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("crates/x")).unwrap();
        std::fs::create_dir_all(home.join("scratch/y")).unwrap();
        // A repository in the home itself (dotfiles) is not the project.
        std::fs::create_dir_all(home.join(".git")).unwrap();
        let at = |cwd: &Path| workspace_in(cwd, &home);
        assert_eq!(at(&repo.join("crates/x")), Some(repo.clone()));
        assert_eq!(at(&repo), Some(repo.clone()));
        assert_eq!(at(&home.join("scratch/y")), Some(home.join("scratch/y")));
        assert_eq!(at(&home), None);
        assert_eq!(at(&dir.path().join("home")), None);
        assert_eq!(at(Path::new("/")), None);
        assert_eq!(at(Path::new("relative")), None);
    }
}
