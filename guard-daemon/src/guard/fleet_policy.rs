//! The fleet's signed policy bundle (docs/fleet.md): checked against the
//! local `[fleet] policy_signers`, loaded on top of the local files like a
//! reload (examples must pass, or the old policy stays), and saved in the
//! state directory so that a restart needs no relay.
use std::path::Path;

use super::*;
use crate::{
    approval::load_allowed_signers,
    fleet::{
        bundle::PolicyBundle,
        subjects::{BundleInForce, HostStatus},
    },
    policy::PolicyError,
};

/// The bundle in force, in the state directory.
const SAVED: &str = "fleet-policy.json";

pub(super) struct AppliedBundle {
    pub(super) bundle: PolicyBundle,
    pub(super) signer: String,
}

impl Guard {
    /// The policy files, with the bundle in force on top while the files
    /// still trust it; the second value says why it no longer applies.
    pub(super) fn policy_files(
        &self,
        config: &Path,
    ) -> Result<(Policy, Option<String>), PolicyError> {
        let local = self.with_own_protections(Policy::load(config)?)?;
        let Some(applied) = &self.source.bundle else {
            return Ok((local, None));
        };
        match trusted(&local, &applied.bundle, None) {
            Ok(_) => Ok((self.with_bundle(config, &applied.bundle)?, None)),
            // Not a verdict on the bundle: the reload is refused, the bundle stays.
            Err(Distrust::Unreadable(message)) => Err(PolicyError::Invalid {
                origin: "[fleet] policy_signers".into(),
                message,
            }),
            Err(Distrust::Refused(why)) => Ok((local, Some(why))),
        }
    }

    fn with_bundle(&self, config: &Path, bundle: &PolicyBundle) -> Result<Policy, PolicyError> {
        let origin = bundle.origin();
        self.with_own_protections(Policy::load_with(config, Some((&origin, &bundle.policy)))?)
    }

    pub(super) fn with_own_protections(&self, policy: Policy) -> Result<Policy, PolicyError> {
        policy
            .with_protected_paths(&self.source.cli_protections)?
            .with_self_protection(&self.own.files.gate_paths())
    }

    /// After a reload that put the files alone in force: the bundle is gone.
    pub(super) fn bundle_dropped(&mut self, why: &str) {
        let Some(applied) = self.source.bundle.take() else {
            return;
        };
        let why = format!("{} no longer applied: {why}", applied.bundle.origin());
        tracing::warn!("{why}");
        let mut record = AuditRecord::new(AuditEvent::PolicyReload);
        record.reason = Some(why);
        self.audit.write(&record);
    }

    /// A bundle from the relay (the bucket's value, unchecked). Taken if it
    /// is a newer version of the bundle this host follows, signed by a key
    /// of its `policy_signers`, and loads on top of its files; else refused,
    /// and the policy in force stays.
    pub fn offer_fleet_policy(&mut self, bytes: &[u8]) {
        let bundle = match PolicyBundle::parse(bytes) {
            Ok(bundle) => bundle,
            Err(err) => {
                return self.bundle_refused("a value in the policy bucket", &err.to_string())
            }
        };
        if self
            .source
            .bundle
            .as_ref()
            .is_some_and(|a| a.bundle == bundle)
        {
            // The relay shows the last value again at each join: what it
            // offers now is what runs.
            self.source.bundle_refused = None;
            return;
        }
        // The newest version this host took: the one in force, or the one
        // saved (kept when a bundle is dropped), so that neither a drop nor
        // a restart lets the relay replay an older one. The saved bundle
        // itself may come back.
        let saved = self
            .state
            .read(SAVED)
            .ok()
            .flatten()
            .and_then(|bytes| PolicyBundle::parse(&bytes).ok());
        let applied = self.source.bundle.as_ref().map(|a| a.bundle.version);
        let floor = match saved {
            Some(saved) if saved == bundle => applied,
            saved => saved.map(|b| b.version).max(applied),
        };
        self.apply_bundle(bundle, floor, "fleet relay");
    }

    /// At start: the bundle saved by the last guardd, checked again.
    pub fn restore_fleet_policy(&mut self) {
        let bytes = match self.state.read(SAVED) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(err) => return self.bundle_refused("the saved fleet policy", &err.to_string()),
        };
        match PolicyBundle::parse(&bytes) {
            Ok(bundle) => self.apply_bundle(bundle, None, "saved at the last run"),
            Err(err) => self.bundle_refused("the saved fleet policy", &err.to_string()),
        }
    }

    fn apply_bundle(&mut self, bundle: PolicyBundle, floor: Option<u64>, from: &str) {
        let origin = bundle.origin();
        let Some(config) = self.source.config.clone() else {
            return self.bundle_refused(&origin, "guardd runs on its embedded policy");
        };
        // It reloads the files under it too: not while a session's change to them stands.
        let standing = self.standing_policy_writes();
        if !standing.is_empty() {
            let why = "a policy file was changed from inside an agent session and no reload has \
                       checked it (`guardctl status`); the bundle is taken when offered again \
                       after that (a newer version, or guardd joining the relay again)";
            return self.bundle_refused(&origin, why);
        }
        // Judged by the files it is loaded on, not the policy loaded before them.
        let local = match Policy::load(&config) {
            Ok(local) => local,
            Err(err) => return self.bundle_refused(&origin, &err.to_string()),
        };
        let signer = match trusted(&local, &bundle, floor) {
            Ok(signer) => signer,
            Err(Distrust::Unreadable(why) | Distrust::Refused(why)) => {
                return self.bundle_refused(&origin, &why)
            }
        };
        let policy = match self.with_bundle(&config, &bundle) {
            Ok(policy) => policy,
            Err(err) => return self.bundle_refused(&origin, &err.to_string()),
        };
        let reason = format!("{origin} signed by {signer} ({from})");
        let mut record = AuditRecord::new(AuditEvent::PolicyReload);
        record.reason = Some(reason.clone());
        let before = self.source.last_reload_error.take();
        self.reloaded(&reason, policy, &mut record);
        if let Some(err) = self.source.last_reload_error.take() {
            self.source.last_reload_error = before;
            return self.bundle_refused(&origin, &err);
        }
        self.audit.write(&record);
        crate::systemd::status(&crate::systemd::policy_in_force(
            &self.policy.version,
            self.policy.rules.len(),
        ));
        let bytes = serde_json::to_vec_pretty(&bundle).expect("a bundle serializes");
        if let Err(err) = self.state.write(SAVED, &bytes) {
            tracing::error!(
                "{origin} is in force but not saved (a restart runs without it): {err}"
            );
        }
        self.source.bundle = Some(AppliedBundle { bundle, signer });
        self.source.bundle_refused = None;
    }

    fn bundle_refused(&mut self, what: &str, why: &str) {
        let why = format!("{what} refused: {why}");
        if self.source.bundle_refused.as_deref() == Some(why.as_str()) {
            // The relay repeating itself fills no log.
            return;
        }
        tracing::error!(
            "{}; the policy in force stays",
            escape_bytes(why.as_bytes())
        );
        let mut record = AuditRecord::new(AuditEvent::PolicyReload);
        record.decision = Some(AuditDecision::Refused);
        record.reason = Some(why.clone());
        self.audit.write(&record);
        self.source.bundle_refused = Some(why);
    }

    /// What this host says on the relay about itself (with `[fleet]`).
    pub fn host_status(&self, at: u64) -> Option<HostStatus> {
        let fleet = self.policy.fleet.as_ref()?;
        Some(HostStatus {
            host: fleet.host.clone(),
            guardd: env!("CARGO_PKG_VERSION").into(),
            policy: self.policy.version.clone(),
            follows: fleet.policy.as_ref().map(|p| p.name.clone()),
            bundle: self.source.bundle.as_ref().map(|a| BundleInForce {
                name: a.bundle.name.clone(),
                version: a.bundle.version,
                signer: a.signer.clone(),
            }),
            refused: self.source.bundle_refused.clone(),
            at,
        })
    }

    /// The bundle name this host follows, if it takes bundles.
    pub fn fleet_policy_name(&self) -> Option<String> {
        let fleet = self.policy.fleet.as_ref()?;
        fleet.policy.as_ref().map(|p| p.name.clone())
    }
}

/// Why a bundle is not taken.
enum Distrust {
    /// The signers file could not be read: no verdict on the bundle.
    Unreadable(String),
    Refused(String),
}

/// Whether `policy`'s `[fleet]` takes `bundle`: the signer's principal.
fn trusted(policy: &Policy, bundle: &PolicyBundle, floor: Option<u64>) -> Result<String, Distrust> {
    let follow = policy
        .fleet
        .as_ref()
        .and_then(|f| f.policy.as_ref())
        .ok_or_else(|| {
            Distrust::Refused(
                "this host takes no fleet policy ([fleet] policy_signers is not set)".into(),
            )
        })?;
    let signers = load_allowed_signers(&follow.signers)
        .map_err(|err| Distrust::Unreadable(err.to_string()))?;
    bundle
        .verify(&follow.name, floor, &signers)
        .map_err(|err| Distrust::Refused(err.to_string()))
}
