//! Where the policy in force comes from: its files, `guardd --protect`, the
//! last reload's verdict, and what follows a reload (the kernel's program
//! set, gate roots, settings and the `[notify]` subscribers).
use std::path::PathBuf;

use super::*;
use crate::policy::notify::NotifySettings;

pub(super) struct PolicySource {
    /// The config file (None: the embedded policy).
    pub(super) config: Option<PathBuf>,
    /// `guardd --protect` paths, added to every policy loaded.
    pub(super) cli_protections: Vec<PathBuf>,
    /// The fleet's signed policy bundle in force, on top of the files.
    pub(super) bundle: Option<super::fleet_policy::AppliedBundle>,
    /// Why the last bundle offered was refused.
    pub(super) bundle_refused: Option<String>,
    /// Why the last reload was refused (the policy before it stays in force).
    pub(super) last_reload_error: Option<String>,
    /// The policy's `[notify]` settings, followed by `notify::run`.
    notify: tokio::sync::watch::Sender<NotifySettings>,
    /// The policy's `[fleet]`, followed by `fleet::run`.
    fleet: tokio::sync::watch::Sender<Option<crate::policy::fleet::FleetSettings>>,
}

impl PolicySource {
    pub(super) fn new(config: Option<PathBuf>, policy: &Policy) -> Self {
        Self {
            config,
            cli_protections: Vec::new(),
            bundle: None,
            bundle_refused: None,
            last_reload_error: None,
            notify: tokio::sync::watch::Sender::new(policy.notify.clone()),
            fleet: tokio::sync::watch::Sender::new(policy.fleet.clone()),
        }
    }
}

impl Guard {
    /// Gives the kernel side the policy's settings it obeys itself.
    pub(super) fn sync_settings(&mut self) {
        let mut bits = 0;
        if self.policy.session_escape == crate::policy::EscapeMode::Deny {
            bits |= guard_common::SETTING_ESCAPE_DENY;
        }
        if !self.exec_gate.program_files.links_are_root_only() {
            bits |= guard_common::SETTING_ONE_LINK;
        }
        if let Err(err) = self.kernel.set_settings(bits) {
            tracing::error!("kernel settings: {err}");
            let mut record = AuditRecord::new(AuditEvent::Error);
            record.reason = Some(format!("kernel settings map: {err}"));
            self.audit.write(&record);
        }
    }

    /// Loads the policy files again. A policy that fails to load is refused
    /// and the one in force stays; holds already raised keep their rule.
    pub fn reload(&mut self, reason: &str) {
        let Some(config) = self.source.config.clone() else {
            tracing::info!("{reason}: running on the embedded default policy, nothing to reload");
            return;
        };
        let standing = self.standing_policy_writes();
        if !standing.is_empty() {
            return self.refuse_reload(reason, &standing);
        }
        let mut record = AuditRecord::new(AuditEvent::PolicyReload);
        record.reason = Some(reason.to_string());
        match self.policy_files(&config) {
            Ok((policy, dropped)) => {
                self.reloaded(reason, policy, &mut record);
                if let (None, Some(why)) = (&self.source.last_reload_error, dropped) {
                    self.bundle_dropped(&why);
                }
            }
            Err(err) => {
                tracing::error!("{reason}: new policy refused, the old one stays in force: {err}");
                self.source.last_reload_error = Some(err.to_string());
            }
        }
        if let Some(err) = &self.source.last_reload_error {
            record.decision = Some(AuditDecision::Refused);
            record.reason = Some(format!("{reason}: {err}"));
            crate::systemd::status(&format!(
                "policy refused ({reason}, {}): {err}; policy {} stays in force",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                self.policy.version
            ));
        } else {
            crate::systemd::status(&crate::systemd::policy_in_force(
                &self.policy.version,
                self.policy.rules.len(),
            ));
        }
        self.audit.write(&record);
        // An editor may have replaced a policy file with a new inode.
        self.sync_own_files();
    }

    /// Puts a policy that loaded in force, once the kernel's program map
    /// took its programs; otherwise the old one stays, with its programs.
    pub(super) fn reloaded(&mut self, reason: &str, policy: Policy, record: &mut AuditRecord) {
        let files = ProgramFiles::of(&policy);
        if let Err(err) = self.kernel.set_programs(&ProgramSets::of(&policy, &files)) {
            let old = ProgramSets::of(&self.policy, &self.exec_gate.program_files);
            let _ = self.kernel.set_programs(&old);
            self.source.last_reload_error = Some(format!("kernel program map: {err}"));
            return;
        }
        tracing::info!(
            version = policy.version,
            rules = policy.rules.len(),
            "{reason}: policy reloaded"
        );
        record.decision = Some(AuditDecision::Loaded(policy.version.clone()));
        self.source.notify.send_replace(policy.notify.clone());
        self.source.fleet.send_if_modified(|fleet| {
            let changed = *fleet != policy.fleet;
            *fleet = policy.fleet.clone();
            changed
        });
        self.gates.policy_changed(&policy.protections);
        self.exec_gate.program_files = files;
        self.policy = policy;
        self.sync_gate_roots();
        self.set_report_calls();
        self.sync_settings();
        self.mark_policy_files();
        self.source.last_reload_error = None;
    }

    pub fn set_cli_protections(&mut self, paths: Vec<std::path::PathBuf>) {
        self.source.cli_protections = paths;
    }

    pub fn subscribe_audit(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.audit.subscribe()
    }

    /// What `fleet::run` follows: the audit records and the `[fleet]` settings.
    pub fn fleet_feed(
        &self,
    ) -> (
        tokio::sync::broadcast::Sender<serde_json::Value>,
        tokio::sync::watch::Receiver<Option<crate::policy::fleet::FleetSettings>>,
    ) {
        (self.audit.broadcaster(), self.source.fleet.subscribe())
    }

    /// What `notify::run` follows: the audit records and the `[notify]` settings.
    pub fn notifications(
        &self,
    ) -> (
        tokio::sync::broadcast::Sender<serde_json::Value>,
        tokio::sync::watch::Receiver<crate::policy::notify::NotifySettings>,
    ) {
        (self.audit.broadcaster(), self.source.notify.subscribe())
    }
}
