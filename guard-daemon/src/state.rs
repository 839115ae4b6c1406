//! Held requests persisted under `--state-dir`, so that a restarted guardd
//! (after SIGTERM, SIGKILL or a crash) re-adopts them with the same ids,
//! approvals and deadlines. Written atomically: a temp file, fsync, rename.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::policy::HoldTerms;

const FILE: &str = "requests.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedHold {
    pub id: String,
    pub pid: u32,
    /// With the pid, names the process: a reused pid is not re-adopted.
    pub start_time: u64,
    pub session: u32,
    pub rule: String,
    /// The rule's terms, flattened: the keys of older state files still read.
    #[serde(flatten)]
    pub terms: HoldTerms,
    /// Approver identities so far (`uid:N`, `key:PRINCIPAL`).
    pub approved_by: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    pub deadline_unix: u64,
    pub ancestry: Vec<String>,
    #[serde(default)]
    pub why: Vec<String>,
    /// An API call held at its start: which stop, and the call as judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<SavedApiCall>,
    /// Its frozen cgroup leaf, and the cgroup it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<crate::freezer::Frozen>,
}

/// A held API call: re-adopted only if the kernel still records the same
/// stop (thread and stop time), and never judged again: the connection
/// state that judged it died with the old guardd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedApiCall {
    pub tid: u32,
    pub stop_ktime_ns: u64,
    /// `DELETE s3 us-east-1 DeleteBucket`.
    pub call: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    pub id: u32,
    pub agent: Option<String>,
    pub origin: String,
    pub uid: u32,
    /// Whether its launcher handed guardd a seccomp listener.
    #[serde(default)]
    pub listener: bool,
    /// Its working tree (a state file of an older guardd has none: it is
    /// found again from the session's cwd).
    #[serde(default)]
    pub workspace: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub format: u32,
    pub id_prefix: String,
    pub next_id: u64,
    pub holds: Vec<SavedHold>,
    pub sessions: Vec<SavedSession>,
}

pub struct StateStore {
    dir: PathBuf,
    /// What the file holds as far as this guardd knows: it is written only on change.
    written: Option<SavedState>,
}

impl StateStore {
    /// Creates the directory (mode 0700) if needed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            written: None,
        })
    }

    pub fn load(&mut self) -> Result<Option<SavedState>, String> {
        let path = self.dir.join(FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(format!("{}: {err}", path.display())),
        };
        let state: SavedState =
            serde_json::from_slice(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        if state.format != FORMAT {
            return Err(format!(
                "{}: unknown format {}",
                path.display(),
                state.format
            ));
        }
        self.written = Some(state.clone());
        Ok(Some(state))
    }

    /// Writes `state` unless the file holds it already.
    pub fn save_if_changed(&mut self, state: SavedState) -> std::io::Result<()> {
        if self.written.as_ref() == Some(&state) {
            return Ok(());
        }
        self.save(&state)?;
        self.written = Some(state);
        Ok(())
    }

    pub fn save(&self, state: &SavedState) -> std::io::Result<()> {
        self.write(
            FILE,
            &serde_json::to_vec_pretty(state).expect("state serializes"),
        )
    }

    /// Replaces file `name` of the state directory at once (mode 0600).
    pub fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let temp = self.dir.join(format!(".{name}.tmp"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, self.dir.join(name))?;
        fs::File::open(&self.dir)?.sync_all()
    }

    /// File `name` of the state directory; None if there is none.
    pub fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Removes the state (teardown).
    pub fn remove(&self) -> std::io::Result<()> {
        match fs::remove_file(self.dir.join(FILE)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }
}

pub fn new_state(id_prefix: String) -> SavedState {
    SavedState {
        format: FORMAT,
        id_prefix,
        next_id: 1,
        holds: Vec::new(),
        sessions: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::OnTimeout;

    /// A state file an older guardd wrote (`approvals_needed`, no
    /// `timeout_secs`) still reads: its holds are adopted again, not lost.
    #[test]
    fn an_older_saved_hold_still_reads() {
        let old = r#"{"id":"ab12-6","pid":42,"start_time":99,"session":40,"rule":"r",
            "approvals_needed":2,"approved_by":[],"approvers":["key:alice"],
            "self_approval":false,"on_timeout":"deny","created_unix":1,
            "deadline_unix":2,"ancestry":[],"why":[]}"#;
        let hold: SavedHold = serde_json::from_str(old).unwrap();
        assert_eq!(hold.terms.approvals, 2);
        assert_eq!(hold.terms.approvers, vec!["key:alice".to_string()]);
        assert!(!hold.terms.self_approval);
        assert_eq!(hold.terms.timeout_secs, 0);
    }

    #[test]
    fn state_round_trips_atomically() {
        let dir =
            std::env::temp_dir().join(format!("agent-guard-state-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut store = StateStore::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut state = new_state("ab12".into());
        state.next_id = 7;
        state.holds.push(SavedHold {
            id: "ab12-6".into(),
            pid: 42,
            start_time: 99,
            session: 40,
            rule: "r".into(),
            terms: HoldTerms {
                approvals: 2,
                approvers: vec!["key:alice".into()],
                self_approval: false,
                timeout_secs: 60,
                on_timeout: OnTimeout::Deny,
                also_approvers: vec![vec!["user:root".into()]],
            },
            approved_by: vec!["uid:0".into()],
            created_unix: 1,
            deadline_unix: 2,
            ancestry: vec!["42:terraform".into()],
            why: vec!["subcommand destroy".into()],
            frozen: Some(crate::freezer::Frozen {
                cgroup: "/sys/fs/cgroup/agent-guard/x/ab12-6".into(),
                origin: "/user.slice".into(),
            }),
            api: Some(SavedApiCall {
                tid: 43,
                stop_ktime_ns: 5,
                call: "DELETE s3 us-east-1 DeleteBucket".into(),
            }),
        });
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        assert!(!dir.join(".requests.json.tmp").exists());
        fs::write(dir.join(FILE), "{broken").unwrap();
        assert!(store.load().unwrap_err().contains("requests.json"));
        store.remove().unwrap();
        assert!(!dir.exists());
    }
}
