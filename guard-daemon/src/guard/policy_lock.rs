//! The policy files by fanotify where the BPF LSM does not run (see
//! `crate::policy_lock`): started with guardd, marked again on every reload,
//! and each refused open written to the audit log.
use super::*;
use crate::policy_lock::{PolicyLock, Refusal};

/// What guards the policy files here, for `guardctl status`.
#[derive(Default)]
pub(super) struct PolicyFiles {
    lock: Option<PolicyLock>,
    refusals: Option<std::sync::mpsc::Receiver<Refusal>>,
    /// The status line.
    how: String,
}

impl PolicyFiles {
    /// Whether fanotify refuses session processes' opens of the policy files.
    pub(super) fn locks_opens(&self) -> bool {
        self.lock.is_some()
    }
}

impl Guard {
    /// Starts the fanotify guard of the policy files where nothing in the
    /// kernel keeps session processes off them.
    pub(super) fn start_policy_lock(&mut self) {
        if let Some(why) = self.kernel.lsm_missing().map(str::to_string) {
            let Some(paths) = self.own.policy_paths.clone() else {
                self.own.lock.how = "none: guardd runs the embedded policy (no file)".into();
                return;
            };
            let (send, receive) = std::sync::mpsc::channel();
            let sessions = self.kernel.pin_dir().join("maps/SESSIONS");
            match PolicyLock::start(&sessions, send) {
                Ok(lock) => {
                    self.own.lock.lock = Some(lock);
                    self.own.lock.refusals = Some(receive);
                    self.mark_policy_files();
                }
                Err(err) => {
                    tracing::error!("policy files not guarded by fanotify: {err}");
                    let mut record = AuditRecord::new(AuditEvent::Error);
                    record.reason = Some(format!("policy files not guarded by fanotify: {err}"));
                    self.audit.write(&record);
                    self.own.lock.how = format!(
                        "NOT WORKING: fanotify failed ({err}); the BPF LSM does not run ({why}); \
                         only the syscall gate's reports refuse a reload ({})",
                        paths.config.display()
                    );
                }
            }
        } else {
            self.own.lock.how =
                "BPF LSM: session processes may not write, truncate, unlink or rename them".into();
        }
    }

    /// (Re)marks the config file and `policy.d`: a reload may follow a
    /// replacement of either, and a new inode carries no mark.
    pub(super) fn mark_policy_files(&mut self) {
        let (Some(lock), Some(paths)) = (&self.own.lock.lock, &self.own.policy_paths) else {
            return;
        };
        let marked = lock.mark(&paths.config, &paths.dropins);
        let marked: Vec<String> = marked.iter().map(|p| p.display().to_string()).collect();
        self.own.lock.how = format!(
            "fanotify permission events (no BPF LSM here): a session process's open of {} is \
             refused (EPERM); renames and unlinks are left to the syscall gate",
            if marked.is_empty() {
                "nothing (no policy file exists yet)".to_string()
            } else {
                marked.join(" and the files in ")
            }
        );
    }

    /// Audits the opens the fanotify thread refused since the last tick.
    pub(super) fn audit_policy_lock(&mut self) {
        let Some(refusals) = &self.own.lock.refusals else {
            return;
        };
        let refused: Vec<Refusal> = refusals.try_iter().collect();
        for refusal in refused {
            tracing::warn!(
                pid = refusal.pid,
                path = refusal.path,
                "refused a session's open of a policy file"
            );
            let mut record = AuditRecord::new(AuditEvent::Deny);
            record.pid = Some(refusal.pid);
            record.session = Some(refusal.session);
            record.rule = Some(crate::policy::protect::SELF_ID.into());
            record.operation = Some(format!("open {}", escape_bytes(refusal.path.as_bytes())));
            record.argv = procfs::cmdline(refusal.pid)
                .unwrap_or_default()
                .iter()
                .map(|a| escape_bytes(a))
                .collect();
            record.decision = Some(AuditDecision::Deny);
            record.reason =
                Some("fanotify: a session process may not open agent-guard's policy files".into());
            self.audit.write(&record);
        }
    }

    pub(super) fn policy_files_status(&self) -> String {
        self.own.lock.how.clone()
    }
}
