//! Policy changes made by session processes where the gate only reports
//! (no BPF LSM, a session seccomp does not see): the call has run, so the
//! next reload is refused instead, while what the call did is still there.
use std::path::{Path, PathBuf};

use super::*;
use crate::policy::protect::Operation;

/// A change a session process made to a policy file.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PolicyWrite {
    pub pid: u32,
    pub session: u32,
    /// `write /etc/agent-guard/policy.d/zz.toml`, ...
    pub operation: String,
    pub path: PathBuf,
    /// Whether the call left `path` in place (a write, a rename's target) or
    /// not (an unlink, a rename's source).
    pub exists: bool,
    /// The file's inode and change time when a reload first found the change
    /// standing (the report may come before the call is done): an admin who
    /// restores or edits it from outside changes them.
    pub stamp: Option<(u64, i64, i64)>,
}

fn stamp(path: &Path) -> Option<(u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = path.symlink_metadata().ok()?;
    Some((meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

impl PolicyWrite {
    /// Still in force: the path is as the session process left it. A file it
    /// wrote that someone removed, or one it removed that someone put back,
    /// no longer stands in the way (a session process doing either is
    /// reported again).
    pub fn stands(&self) -> bool {
        if self.exists {
            let now = stamp(&self.path);
            now.is_some() && (self.stamp.is_none() || now == self.stamp)
        } else {
            self.path.symlink_metadata().is_err()
        }
    }
}

/// The policy-file changes of one reported call (`paths` absolute, resolved).
/// A call by a uid that may not write there failed and changed nothing.
pub(super) fn policy_writes(
    policy_paths: &crate::protected::PolicyPaths,
    pid: u32,
    session: u32,
    uid: u32,
    operation: Operation,
    paths: &[PathBuf],
) -> Vec<PolicyWrite> {
    paths
        .iter()
        .enumerate()
        .filter(|(_, path)| policy_paths.contains(path))
        .filter(|(_, path)| may_change(uid, path, operation))
        .map(|(at, path)| PolicyWrite {
            pid,
            session,
            operation: format!(
                "{} {}",
                operation.name(),
                escape_bytes(path.as_os_str().as_encoded_bytes())
            ),
            path: path.clone(),
            exists: match operation {
                Operation::Unlink | Operation::Rmdir => false,
                Operation::Rename => at == 1,
                _ => true,
            },
            stamp: None,
        })
        .collect()
}

/// Whether `uid` may make this change, by the mode bits (a group bit counts
/// as yes: the uid's groups are not looked up). Root may.
fn may_change(uid: u32, path: &Path, operation: Operation) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if uid == 0 {
        return true;
    }
    let on_file = matches!(
        operation,
        Operation::Write | Operation::Truncate | Operation::Chmod | Operation::Chown
    ) && path.exists();
    let target = if on_file {
        path
    } else {
        path.parent().unwrap_or(Path::new("/"))
    };
    let Ok(meta) = target.metadata() else {
        return true;
    };
    let mode = meta.mode();
    if matches!(operation, Operation::Chmod | Operation::Chown) {
        return meta.uid() == uid;
    }
    (meta.uid() == uid && mode & 0o200 != 0) || mode & 0o022 != 0
}

impl Guard {
    /// Remembers the policy-file changes of a reported call.
    pub(super) fn note_policy_writes(
        &mut self,
        pid: u32,
        session: u32,
        uid: u32,
        operation: Operation,
        paths: &[PathBuf],
    ) {
        let Some(policy_paths) = &self.own.policy_paths else {
            return;
        };
        let locked = self.own.lock.locks_opens();
        for write in policy_writes(policy_paths, pid, session, uid, operation, paths) {
            if locked && operation == Operation::Write && write.path == policy_paths.config {
                // fanotify refused that open: the config file is as it was.
                continue;
            }
            tracing::warn!(
                pid,
                session,
                operation = write.operation,
                "a session process changed a policy file: the next reload is refused"
            );
            self.own.writes.retain(|w| w.path != write.path);
            self.own.writes.push(write);
        }
    }

    /// The changes by session processes that still stand; the others are forgotten.
    pub(super) fn standing_policy_writes(&mut self) -> Vec<PolicyWrite> {
        for write in self
            .own
            .writes
            .iter_mut()
            .filter(|w| w.exists && w.stamp.is_none())
        {
            write.stamp = stamp(&write.path);
        }
        self.own.writes.retain(PolicyWrite::stands);
        self.own.writes.clone()
    }

    /// Refuses a reload because of `writes`: the policy in force stays.
    pub(super) fn refuse_reload(&mut self, reason: &str, writes: &[PolicyWrite]) {
        let who = writes
            .iter()
            .map(|w| format!("`{}` by pid {} (session {})", w.operation, w.pid, w.session))
            .collect::<Vec<_>>()
            .join(", ");
        let why = format!(
            "refused: a policy file was changed from inside an agent session ({who}); the old \
             policy stays in force. Check the file, then remove or restore it from outside \
             every session (or restart guardd to load it as it is)"
        );
        tracing::warn!("{reason}: policy reload {why}");
        crate::systemd::status(&format!("policy {why}"));
        for write in writes {
            let mut record = AuditRecord::new(AuditEvent::Refuse);
            record.pid = Some(write.pid);
            record.session = Some(write.session);
            record.agent = self.sessions.agent_of(write.session);
            record.rule = Some(crate::policy::protect::SELF_ID.into());
            record.operation = Some(write.operation.clone());
            record.decision = Some(AuditDecision::Refuse);
            record.reason = Some(format!(
                "policy reload ({reason}) refused: this change was made from inside an agent \
                 session"
            ));
            self.audit.write(&record);
        }
        let mut record = AuditRecord::new(AuditEvent::PolicyReload);
        record.decision = Some(AuditDecision::Refused);
        record.reason = Some(format!("{reason}: {why}"));
        self.audit.write(&record);
        self.source.last_reload_error = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protected::PolicyPaths;

    fn paths() -> PolicyPaths {
        PolicyPaths {
            config: "/etc/ag/policy.toml".into(),
            dropins: "/etc/ag/policy.d".into(),
        }
    }

    #[test]
    fn only_policy_files_count_and_a_rename_leaves_its_target() {
        let p = |s: &str| PathBuf::from(s);
        let writes = policy_writes(
            &paths(),
            7,
            3,
            0,
            Operation::Rename,
            &[p("/tmp/new.toml"), p("/etc/ag/policy.d/zz.toml")],
        );
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].operation, "rename /etc/ag/policy.d/zz.toml");
        assert!(writes[0].exists);
        let moved_away = policy_writes(
            &paths(),
            7,
            3,
            0,
            Operation::Rename,
            &[p("/etc/ag/policy.toml"), p("/tmp/x")],
        );
        assert!(!moved_away[0].exists);
        for (path, counts) in [
            ("/etc/ag/policy.toml", true),
            ("/etc/ag/policy.d", true),
            ("/etc/ag/policy.d/a.toml", true),
            ("/etc/ag/policy.d/sub/a.toml", false),
            ("/etc/ag/policy.toml.bak", false),
            ("/etc/ag/allowed_signers", false),
        ] {
            let writes = policy_writes(&paths(), 1, 1, 0, Operation::Write, &[p(path)]);
            assert_eq!(writes.len() == 1, counts, "{path}");
        }
    }

    #[test]
    fn a_change_stands_while_the_path_is_as_the_session_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("zz.toml");
        let write = PolicyWrite {
            pid: 1,
            session: 1,
            operation: String::new(),
            path: file.clone(),
            exists: true,
            stamp: None,
        };
        assert!(!write.stands(), "a create that failed changed nothing");
        std::fs::write(&file, "x").unwrap();
        assert!(write.stands());
        let unlink = PolicyWrite {
            exists: false,
            ..write.clone()
        };
        assert!(!unlink.stands(), "put back");
        // Once stamped, an edit from outside (a new change time) ends it.
        let stamped = PolicyWrite {
            stamp: stamp(&file),
            ..write.clone()
        };
        assert!(stamped.stands());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, "restored").unwrap();
        assert!(!stamped.stands(), "the admin restored it");
    }

    #[test]
    fn calls_the_uid_may_not_make_do_not_count() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("policy.toml");
        std::fs::write(&config, "").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Owned by the test's uid (root in CI): another uid may not write.
        let owner = std::fs::metadata(&config).unwrap();
        let other = {
            use std::os::unix::fs::MetadataExt as _;
            owner.uid() + 12345
        };
        assert!(!may_change(other, &config, Operation::Write));
        assert!(!may_change(
            other,
            &dir.path().join("new"),
            Operation::Write
        ));
        assert!(!may_change(other, &config, Operation::Unlink));
        assert!(may_change(0, &config, Operation::Write));
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(may_change(other, &config, Operation::Write));
    }
}
