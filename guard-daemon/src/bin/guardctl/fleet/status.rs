//! `guardctl --fleet URL status`: which policy each host runs, which
//! bundle version it took or why it refused one, and when it last said so.
use std::{collections::BTreeMap, process::ExitCode};

use async_nats::jetstream;
use futures_util::TryStreamExt as _;
use guard_daemon::{
    escape::escape_bytes,
    fleet::{
        bundle::PolicyBundle,
        subjects::{HostStatus, HOSTS_BUCKET, POLICY_BUCKET},
        unix_now,
    },
};
use serde::Serialize;

use super::{connect, runtime, Relay};

/// A host that has not said anything for this long is shown as silent.
const SILENT_AFTER: u64 = 180;

#[derive(Serialize)]
struct FleetStatus {
    hosts: Vec<HostStatus>,
    /// The newest version of each bundle on the relay (as published; each
    /// host checks the signature itself).
    bundles: BTreeMap<String, u64>,
}

pub fn status(relay: &Relay, url: &str, json: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let js = jetstream::new(connect(relay, url).await?);
        let status = FleetStatus {
            hosts: values(&js, HOSTS_BUCKET)
                .await?
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect(),
            bundles: values(&js, POLICY_BUCKET)
                .await?
                .into_iter()
                .filter_map(|(k, v)| Some((k, PolicyBundle::parse(&v).ok()?.version)))
                .collect(),
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print(&status);
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print(status: &FleetStatus) {
    let now = unix_now();
    if status.hosts.is_empty() {
        println!("no host has reported to the relay");
    }
    for host in &status.hosts {
        let age = now.saturating_sub(host.at);
        let seen = match age > SILENT_AFTER {
            true => format!("silent for {age}s"),
            false => format!("seen {age}s ago"),
        };
        let bundle = match (&host.bundle, &host.follows) {
            (Some(b), _) => {
                let newest = status.bundles.get(&b.name).copied().unwrap_or(0);
                let behind = match newest > b.version {
                    true => format!(", v{newest} published"),
                    false => String::new(),
                };
                format!("bundle {} v{} by {}{behind}", b.name, b.version, b.signer)
            }
            (None, Some(name)) => format!("follows bundle {name}, none in force"),
            (None, None) => "local policy only".into(),
        };
        // Hosts escape what they say; the relay is not trusted to.
        println!(
            "{}  guardd {}  {}  {}\n    policy {}",
            escape_bytes(host.host.as_bytes()),
            escape_bytes(host.guardd.as_bytes()),
            escape_bytes(bundle.as_bytes()),
            seen,
            escape_bytes(host.policy.as_bytes()),
        );
        if let Some(why) = &host.refused {
            println!("    {}", escape_bytes(why.as_bytes()));
        }
    }
    for (name, version) in &status.bundles {
        println!(
            "bundle {} v{version} is on the relay",
            escape_bytes(name.as_bytes())
        );
    }
}

/// Every key's current value in bucket `name` (none if it does not exist).
async fn values(js: &jetstream::Context, name: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let Ok(store) = js.get_key_value(name).await else {
        return Ok(Vec::new());
    };
    let keys: Vec<String> = match store.keys().await {
        Ok(keys) => keys.try_collect().await?,
        Err(_) => return Ok(Vec::new()),
    };
    let mut values = Vec::new();
    for key in keys {
        if let Some(value) = store.get(&key).await? {
            values.push((key, value.to_vec()));
        }
    }
    Ok(values)
}
