//! A policy bundle as the relay carries it: one policy layer, its name and
//! version, and an SSH signature (SSHSIG, namespace `agent-guard-policy`)
//! by a key of the host's `[fleet] policy_signers`. The relay can withhold
//! a bundle or replay an old one; it cannot make or change one, and a host
//! takes only versions newer than the one it runs.
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

use crate::approval::{signer_of, Signer};

/// A signature made for approvals, git or ssh cannot sign a policy.
pub const NAMESPACE: &str = "agent-guard-policy";
/// A bundle's policy text is at most this long (the relay's default value size is 1 MB).
pub const MAX_POLICY: usize = 512 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a policy bundle: {0}")]
    Malformed(String),
    #[error("bundle {got:?} is not the one this host follows ({want:?})")]
    WrongName { got: String, want: String },
    #[error("version {got} is not newer than version {running} in force")]
    NotNewer { got: u64, running: u64 },
    #[error("signed by key {0}, which is not in policy_signers for namespace {NAMESPACE}")]
    UnknownKey(String),
    #[error("bad signature: it does not sign this policy")]
    BadSignature,
    #[error(
        "a bundle may not set [fleet]: how a host reaches the relay and whom it trusts stay local"
    )]
    SetsFleet,
    #[error("a bundle names files by absolute paths only ({0} is relative): it has no directory of its own")]
    RelativePath(String),
    #[error("signing: {0}")]
    Sign(String),
}

/// What goes into the bucket, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBundle {
    pub name: String,
    pub version: u64,
    /// A policy file's text, loaded on top of the host's own files.
    pub policy: String,
    /// The armored SSHSIG over `signed_text()`.
    pub signature: String,
}

impl PolicyBundle {
    /// Signs `policy` as version `version` of bundle `name` with `key`.
    pub fn sign(
        key: &PrivateKey,
        name: &str,
        version: u64,
        policy: String,
    ) -> Result<Self, BundleError> {
        let text = signed_text(name, version, &policy);
        let signature = key
            .sign(NAMESPACE, HashAlg::Sha512, text.as_bytes())
            .and_then(|s| s.to_pem(LineEnding::LF))
            .map_err(|err| BundleError::Sign(err.to_string()))?;
        Ok(Self {
            name: name.into(),
            version,
            policy,
            signature,
        })
    }

    /// The message a signature covers (for `ssh-keygen -Y sign`).
    pub fn signed_text(&self) -> String {
        signed_text(&self.name, self.version, &self.policy)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let bundle: Self =
            serde_json::from_slice(bytes).map_err(|err| BundleError::Malformed(err.to_string()))?;
        if bundle.policy.len() > MAX_POLICY {
            return Err(BundleError::Malformed(format!(
                "policy longer than {MAX_POLICY} bytes"
            )));
        }
        Ok(bundle)
    }

    /// Checks that this is a newer version of bundle `name` signed by one of
    /// `signers`; returns the signer's principal.
    pub fn verify(
        &self,
        name: &str,
        running: Option<u64>,
        signers: &[Signer],
    ) -> Result<String, BundleError> {
        if self.name != name {
            return Err(BundleError::WrongName {
                got: self.name.clone(),
                want: name.into(),
            });
        }
        if let Some(running) = running.filter(|&r| self.version <= r) {
            return Err(BundleError::NotNewer {
                got: self.version,
                running,
            });
        }
        let signature = SshSig::from_pem(self.signature.as_bytes())
            .map_err(|err| BundleError::Malformed(format!("signature: {err}")))?;
        let signer = signer_of(&signature, NAMESPACE, signers).ok_or_else(|| {
            BundleError::UnknownKey(
                signature
                    .public_key()
                    .fingerprint(HashAlg::Sha256)
                    .to_string(),
            )
        })?;
        signer
            .key
            .verify(NAMESPACE, self.signed_text().as_bytes(), &signature)
            .map_err(|_| BundleError::BadSignature)?;
        self.check_layer()?;
        Ok(signer.principals[0].clone())
    }

    /// The layer may not touch `[fleet]`: a bundle that moved the host to
    /// another relay or signer could never be taken back by the team.
    fn check_layer(&self) -> Result<(), BundleError> {
        check_layer(&self.policy)
    }

    /// Where the layer says it came from, in errors and `guardctl status`.
    pub fn origin(&self) -> String {
        format!("fleet policy {} v{}", self.name, self.version)
    }
}

/// A bundle's policy may not set `[fleet]` (see `PolicyBundle::check_layer`).
pub fn check_layer(policy: &str) -> Result<(), BundleError> {
    let table: toml::Table = toml::from_str(policy)
        .map_err(|err| BundleError::Malformed(err.to_string().trim_end().to_string()))?;
    if table.contains_key("fleet") {
        return Err(BundleError::SetsFleet);
    }
    // The keys naming files, as the loader reads them.
    let file: crate::policy::file::PolicyFile = toml::from_str(policy)
        .map_err(|err| BundleError::Malformed(err.to_string().trim_end().to_string()))?;
    let webhooks = file.notify.webhook.iter();
    let paths = (file.approvals.allowed_signers.iter())
        .chain(&file.defaults.program_dirs)
        .chain(webhooks.filter_map(|hook| hook.secret_file.as_ref()));
    if let Some(path) = paths.into_iter().find(|p| p.is_relative()) {
        return Err(BundleError::RelativePath(path.display().to_string()));
    }
    Ok(())
}

fn signed_text(name: &str, version: u64, policy: &str) -> String {
    let digest: String = Sha256::digest(policy.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("agent-guard policy bundle 1\nname {name}\nversion {version}\nsha256 {digest}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::parse_allowed_signers;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn signers(key: &PrivateKey, namespaces: &str) -> Vec<Signer> {
        let public = key.public_key().to_openssh().unwrap();
        parse_allowed_signers(&format!("sec@example {namespaces} {public}")).unwrap()
    }

    const POLICY: &str = "version = 1\n";

    #[test]
    fn a_signed_newer_bundle_verifies_and_anything_else_is_refused() {
        let key = key(1);
        let trusted = signers(&key, "namespaces=\"agent-guard-policy\"");
        let bundle = PolicyBundle::sign(&key, "build", 3, POLICY.into()).unwrap();
        assert_eq!(
            bundle.verify("build", Some(2), &trusted).unwrap(),
            "sec@example"
        );
        assert_eq!(
            bundle.verify("build", None, &trusted).unwrap(),
            "sec@example"
        );

        let replayed = bundle.verify("build", Some(3), &trusted);
        assert_eq!(replayed, Err(BundleError::NotNewer { got: 3, running: 3 }));
        assert!(matches!(
            bundle.verify("workstations", None, &trusted),
            Err(BundleError::WrongName { .. })
        ));
        // Approval keys only: the policy namespace is not theirs.
        let approvers = signers(&key, "namespaces=\"agent-guard\"");
        assert!(matches!(
            bundle.verify("build", None, &approvers),
            Err(BundleError::UnknownKey(_))
        ));
        assert!(matches!(
            bundle.verify("build", None, &signers(&self::key(2), "")),
            Err(BundleError::UnknownKey(_))
        ));

        let mut tampered = bundle.clone();
        tampered.policy.push_str("# changed\n");
        assert_eq!(
            tampered.verify("build", None, &trusted),
            Err(BundleError::BadSignature)
        );
        let mut renumbered = bundle.clone();
        renumbered.version = 9;
        assert_eq!(
            renumbered.verify("build", None, &trusted),
            Err(BundleError::BadSignature)
        );
        let mut unsigned = bundle;
        unsigned.signature = String::new();
        assert!(matches!(
            unsigned.verify("build", None, &trusted),
            Err(BundleError::Malformed(_))
        ));
    }

    #[test]
    fn a_bundle_cannot_move_the_host_to_another_relay() {
        let key = key(1);
        let policy = "version = 1\n[fleet]\nurl = \"nats://elsewhere:4222\"\n";
        let bundle = PolicyBundle::sign(&key, "build", 1, policy.into()).unwrap();
        assert_eq!(
            bundle.verify("build", None, &signers(&key, "")),
            Err(BundleError::SetsFleet)
        );
    }

    #[test]
    fn a_bundle_names_files_by_absolute_paths() {
        for policy in [
            "version = 1\n[approvals]\nallowed_signers = \"signers\"\n",
            "version = 1\n[defaults]\nprogram_dirs = [\"/opt/bin\", \"tools\"]\n",
            "version = 1\n[[notify.webhook]]\nurl = \"https://x\"\nsecret_file = \"key\"\n",
        ] {
            assert!(matches!(
                check_layer(policy),
                Err(BundleError::RelativePath(_))
            ));
        }
        let absolute = "version = 1\n[approvals]\nallowed_signers = \"/etc/s\"\n[defaults]\nprogram_dirs = [\"/opt/bin\"]\n";
        assert_eq!(check_layer(absolute), Ok(()));
    }

    #[test]
    fn json_round_trip_and_oversized_policies_are_refused() {
        let bundle = PolicyBundle::sign(&key(1), "build", 1, POLICY.into()).unwrap();
        let bytes = serde_json::to_vec(&bundle).unwrap();
        assert_eq!(PolicyBundle::parse(&bytes).unwrap(), bundle);
        let mut big = bundle;
        big.policy = "#".repeat(MAX_POLICY + 1);
        let bytes = serde_json::to_vec(&big).unwrap();
        assert!(matches!(
            PolicyBundle::parse(&bytes),
            Err(BundleError::Malformed(_))
        ));
        assert!(PolicyBundle::parse(b"{}").is_err());
    }
}
