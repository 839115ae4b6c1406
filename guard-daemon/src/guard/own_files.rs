//! agent-guard's own files (policy, policy.d, pins, state, audit log,
//! socket) and what keeps them from sessions: the BPF LSM where it runs,
//! else fanotify for the policy files and an audit of what was written.
use super::*;

pub(super) struct OwnFileGuard {
    pub(super) files: OwnFiles,
    /// The config file and policy.d, resolved (None: the embedded policy).
    pub(super) policy_paths: Option<crate::protected::PolicyPaths>,
    /// Policy files session processes changed where the gate only reports.
    pub(super) writes: Vec<policy_writes::PolicyWrite>,
    /// The fanotify guard of the policy files, where the LSM does not run.
    pub(super) lock: policy_lock::PolicyFiles,
}

impl OwnFileGuard {
    pub(super) fn new(files: OwnFiles) -> Self {
        Self {
            policy_paths: files.policy_paths(),
            files,
            writes: Vec::new(),
            lock: Default::default(),
        }
    }
}

impl Guard {
    /// Gives the kernel the current inodes of agent-guard's own files.
    pub(super) fn sync_own_files(&mut self) {
        if self.kernel.lsm_missing().is_some() {
            return;
        }
        if let Err(err) = self.kernel.set_protected(&self.own.files.keys()) {
            tracing::error!("agent-guard's files are not protected from sessions: {err}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.reason = Some(format!("protected-file map: {err}"));
            self.audit.write(&record);
        }
    }
}
