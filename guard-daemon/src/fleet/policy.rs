//! guardd's side of the two key-value buckets: it follows the policy
//! bundle it takes (each value is checked by `Guard::offer_fleet_policy`),
//! and says which policy it runs in the hosts bucket.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;

use super::subjects::{HostStatus, HOSTS_BUCKET, POLICY_BUCKET};
use crate::guard::Guard;

const RETRY: Duration = Duration::from_secs(2);
/// How often guardd looks whether its status changed...
const STATUS_CHECK: Duration = Duration::from_secs(1);
/// ...and says it again anyway, so approvers see it is alive.
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// Versions of each bundle the bucket keeps, for `guardctl --fleet policy` history.
const POLICY_HISTORY: i64 = 10;

/// The bucket `name`, made if missing (a team may make it beforehand,
/// with replicas of its own). Made as its stream, with the settings of a
/// key-value bucket: async-nats's `create_key_value` first reads the account
/// info, which Debian's nats-server 2.9 sends in a form it does not parse.
pub async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let history = if name == POLICY_BUCKET {
        POLICY_HISTORY
    } else {
        1
    };
    let stream = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(stream)
        .await
        .map_err(|err| format!("bucket {name}: {err}"))?;
    js.get_key_value(name)
        .await
        .map_err(|err| format!("bucket {name}: {err}"))
}

/// Offers each value of key `name` of the policy bucket to the guard: the
/// last one at each join, then every new one.
pub(super) async fn follow_bundles(js: jetstream::Context, guard: Arc<Mutex<Guard>>, name: String) {
    let mut failing = false;
    loop {
        let watch = match bucket(&js, POLICY_BUCKET).await {
            Ok(store) => store
                .watch_with_history(&name)
                .await
                .map_err(|err| err.to_string()),
            Err(why) => Err(why),
        };
        match watch {
            Ok(mut watch) => {
                failing = false;
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(entry) if entry.operation == kv::Operation::Put => guard
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .offer_fleet_policy(&entry.value),
                        // A deleted bundle changes nothing: hosts keep the
                        // last one they took, as they would offline.
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!("fleet relay: the policy watch failed: {err}");
                            break;
                        }
                    }
                }
            }
            Err(why) if !failing => {
                tracing::warn!("fleet relay: cannot follow policy bundle {name} yet: {why}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Puts this host's status into the hosts bucket when it changes, and
/// every `STATUS_EVERY`.
pub(super) async fn report_status(js: jetstream::Context, guard: Arc<Mutex<Guard>>) {
    let mut said: Option<(HostStatus, tokio::time::Instant)> = None;
    let mut store = None;
    loop {
        tokio::time::sleep(STATUS_CHECK).await;
        let now = super::unix_now();
        let Some(status) = guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .host_status(now)
        else {
            continue;
        };
        let fresh = said.as_ref().is_some_and(|(last, at)| {
            HostStatus {
                at: now,
                ..last.clone()
            } == status
                && at.elapsed() < STATUS_EVERY
        });
        if fresh {
            continue;
        }
        if store.is_none() {
            store = bucket(&js, HOSTS_BUCKET).await.ok();
        }
        let Some(kv) = &store else { continue };
        let payload = serde_json::to_vec(&status).expect("a status serializes");
        match kv.put(&status.host, payload.into()).await {
            Ok(_) => said = Some((status, tokio::time::Instant::now())),
            Err(err) => {
                tracing::debug!("fleet relay: status not put: {err}");
                store = None;
            }
        }
    }
}
