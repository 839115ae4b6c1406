//! `guardctl --fleet URL policy publish FILE --sign KEY`: signs a policy
//! layer here and puts it into the relay's policy bucket as the next
//! version of a bundle. Each host that follows the bundle checks the
//! signature against its own `policy_signers` and loads it on top of its
//! own files, or refuses it and keeps its policy.
use std::{path::Path, process::ExitCode};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use guard_daemon::{
    fleet::{
        bucket,
        bundle::{self, PolicyBundle},
        subjects::POLICY_BUCKET,
    },
    policy::{fleet::subject_token, Policy},
};

use super::{connect, runtime, Relay};

pub fn publish(
    relay: &Relay,
    file: &Path,
    key: &Path,
    name: &str,
    version: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let url = relay
        .fleet
        .as_deref()
        .context("`policy publish` needs --fleet URL")?;
    if subject_token(name) != name {
        bail!("bundle name {name:?}: letters, digits, - and _ only");
    }
    let policy =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    // Checked here as far as it can be: hosts load it on top of their own
    // files and check it again.
    bundle::check_layer(&policy)?;
    Policy::parse(&policy, &file.display().to_string())?;
    runtime()?.block_on(async {
        let client = connect(relay, url).await?;
        let store = bucket(&jetstream::new(client), POLICY_BUCKET)
            .await
            .map_err(anyhow::Error::msg)?;
        let current = store.entry(name).await?.filter(|e| !e.value.is_empty());
        // What the relay holds is not checked here (this machine need not have
        // the hosts' policy_signers): hosts take only versions newer than theirs,
        // and `status` shows which each runs.
        let running = match &current {
            Some(entry) => Some(
                PolicyBundle::parse(&entry.value)
                    .map(|b| b.version)
                    .with_context(|| {
                        format!(
                            "the relay's value of bundle {name} is not a bundle; give --version"
                        )
                    })?,
            ),
            None => None,
        };
        let version = match (version, running) {
            (Some(v), Some(r)) if v <= r => {
                bail!("version {v} is not newer than version {r} on the relay")
            }
            (Some(v), _) => v,
            (None, r) => r
                .unwrap_or(0)
                .checked_add(1)
                .context("the relay's version is the largest there is; give --version")?,
        };
        let bundle = sign(key, name, version, policy)?;
        let value = serde_json::to_vec(&bundle)?.into();
        // Against the revision read: two publishers cannot both make version N.
        let put: anyhow::Result<u64> = match &current {
            Some(entry) => Ok(store.update(name, value, entry.revision).await?),
            None => Ok(store.create(name, value).await?),
        };
        put.with_context(|| format!("bundle {name} changed on the relay meanwhile; try again"))?;
        println!(
            "published policy bundle {name} v{version}; hosts take it if it is newer than \
             theirs: `guardctl --fleet URL status` shows which did"
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn sign(key: &Path, name: &str, version: u64, policy: String) -> anyhow::Result<PolicyBundle> {
    if let Some(private) = super::super::sign::plain_key(key) {
        return Ok(PolicyBundle::sign(&private, name, version, policy)?);
    }
    let mut bundle = PolicyBundle {
        name: name.into(),
        version,
        policy,
        signature: String::new(),
    };
    bundle.signature = super::super::sign::ssh_keygen_sign(
        key,
        bundle::NAMESPACE,
        bundle.signed_text().as_bytes(),
    )?;
    Ok(bundle)
}
