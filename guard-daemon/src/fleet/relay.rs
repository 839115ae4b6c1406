//! guardd's side of the relay: one task while `[fleet]` names one. Records
//! go out in order through a bounded queue, retried until the relay takes
//! them; decisions come in on this host's subject.
use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures_util::StreamExt as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::{broadcast, mpsc, watch};

use super::subjects::{self, Decision, HoldState};
use crate::{
    escape::escape_bytes,
    guard::{Guard, Peer},
    policy::fleet::FleetSettings,
    protocol::Response,
};

/// Messages waiting for the relay while it is unreachable; beyond it new
/// ones are dropped and that is logged (the local audit log keeps all).
const QUEUE: usize = 10_000;
const RETRY: Duration = Duration::from_secs(2);
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Messages sent before their acknowledgements are awaited.
const IN_FLIGHT: usize = 64;
const HOLDS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const AUDIT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Audit events whose record changes a hold's state on the relay.
const HOLD_EVENTS: [&str; 9] = [
    "hold", "readopt", "approve", "deny", "refuse", "timeout", "release", "exit", "error",
];

/// Follows `[fleet]`: joins the relay it names, again when it changes.
pub async fn run(
    guard: Arc<Mutex<Guard>>,
    audit: broadcast::Sender<Value>,
    mut settings: watch::Receiver<Option<FleetSettings>>,
) {
    loop {
        let current = settings.borrow_and_update().clone();
        if let Some(fleet) = current {
            tokio::select! {
                () = serve(&guard, &audit, &fleet) => {}
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        if settings.changed().await.is_err() {
            return;
        }
    }
}

/// A client of the relay at `url` (comma-separated for several servers).
/// `retry`: keep connecting in the background (guardd) instead of failing
/// at once (guardctl).
pub async fn connect(
    url: &str,
    name: &str,
    credentials: Option<&Path>,
    ca: Option<&Path>,
    retry: bool,
) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new().name(name);
    if let Some(path) = credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|err| format!("credentials {}: {err}", path.display()))?;
    }
    if let Some(path) = ca {
        options = options.add_root_certificates(path.to_path_buf());
    }
    if retry {
        options = options.retry_on_initial_connect();
    }
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .map(|s| s.parse().map_err(|err| format!("{s}: {err}")))
        .collect::<Result<_, String>>()?;
    options.connect(addrs).await.map_err(|err| err.to_string())
}

async fn serve(guard: &Arc<Mutex<Guard>>, audit: &broadcast::Sender<Value>, fleet: &FleetSettings) {
    // Subscribed before connecting: nothing said meanwhile is missed.
    let mut records = audit.subscribe();
    let name = format!("guardd {}", fleet.host);
    let client = match connect(
        &fleet.url,
        &name,
        fleet.credentials.as_deref(),
        fleet.ca.as_deref(),
        true,
    )
    .await
    {
        Ok(client) => client,
        Err(why) => {
            tracing::error!(url = %fleet.url, "fleet relay NOT joined: {why}");
            return std::future::pending().await;
        }
    };
    tracing::info!(url = %fleet.url, host = %fleet.host, "fleet relay: joining");
    let (queue, waiting) = mpsc::channel(QUEUE);
    let js = jetstream::new(client.clone());
    let mut tasks = vec![
        AbortOnDrop(tokio::spawn(publish_in_order(js.clone(), waiting))),
        AbortOnDrop(tokio::spawn(super::policy::report_status(
            js.clone(),
            guard.clone(),
        ))),
    ];
    if let Some(follow) = &fleet.policy {
        tasks.push(AbortOnDrop(tokio::spawn(super::policy::follow_bundles(
            js,
            guard.clone(),
            follow.name.clone(),
        ))));
    }
    let mut decisions = loop {
        match client.subscribe(subjects::decisions(&fleet.host)).await {
            Ok(subscriber) => break subscriber,
            Err(err) => {
                tracing::warn!("fleet relay: cannot subscribe to decisions yet: {err}");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    loop {
        tokio::select! {
            record = records.recv() => match record {
                Ok(record) => {
                    for message in outgoing(guard, &fleet.host, &record) {
                        if queue.try_send(message).is_err() {
                            tracing::error!(
                                "fleet relay: {QUEUE} messages wait already; an audit record is \
                                 not published (the local audit log has it)"
                            );
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => tracing::error!(
                    "fleet relay fell behind: {missed} audit records not published (the local \
                     audit log has them)"
                ),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            message = decisions.next() => match message {
                Some(message) => decide(guard, &message.payload),
                None => {
                    tracing::warn!("fleet relay: the decision subscription ended");
                    return std::future::pending().await;
                }
            },
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One message for the relay.
#[derive(Debug)]
struct Outgoing {
    subject: String,
    payload: Vec<u8>,
    /// `Nats-Msg-Id`: the relay drops a repeat within its duplicate window.
    id: Option<String>,
}

/// The record on this host's audit subject; and, for a record of a hold,
/// the hold's state on its own subject (pending, as `guardctl pending`
/// shows it, or how it ended).
fn outgoing(guard: &Mutex<Guard>, host: &str, record: &Value) -> Vec<Outgoing> {
    let line = record.to_string();
    let digest = Sha256::digest(format!("{host}\n{line}").as_bytes());
    let id: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let mut out = vec![Outgoing {
        subject: subjects::audit(host),
        payload: line.into_bytes(),
        id: Some(id),
    }];
    let event = record["event"].as_str().unwrap_or_default();
    let Some(request) = record["request_id"].as_str() else {
        return out;
    };
    if !HOLD_EVENTS.contains(&event) {
        return out;
    }
    let pending = match guard.lock().unwrap_or_else(|e| e.into_inner()).pending() {
        Response::Pending { holds } => holds.into_iter().find(|h| h.id == request),
        _ => None,
    };
    let state = HoldState {
        host: host.to_string(),
        id: request.to_string(),
        at: super::unix_now(),
        ended: pending.is_none().then(|| event.to_string()),
        hold: pending,
    };
    if let Ok(payload) = serde_json::to_vec(&state) {
        out.push(Outgoing {
            subject: subjects::hold(host, request),
            payload,
            id: None,
        });
    }
    out
}

/// Publishes the messages in order, each until the relay has it. Up to
/// `IN_FLIGHT` go out before their acknowledgements are awaited; when one
/// fails, all from it on are sent again in order, so a hold's last state
/// still lands last (repeats of audit records carry their `Nats-Msg-Id`).
async fn publish_in_order(js: jetstream::Context, mut waiting: mpsc::Receiver<Outgoing>) {
    let mut streams_ready = false;
    let mut failing = false;
    let mut batch: Vec<Outgoing> = Vec::with_capacity(IN_FLIGHT);
    loop {
        if batch.is_empty() {
            match waiting.recv().await {
                Some(message) => batch.push(message),
                None => return,
            }
        }
        while batch.len() < IN_FLIGHT {
            match waiting.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        if !streams_ready {
            streams_ready = ensure_streams(&js).await.is_ok();
        }
        match publish_all(&js, &batch).await {
            Ok(()) => {
                if failing {
                    tracing::info!("fleet relay: publishing again");
                    failing = false;
                }
                batch.clear();
            }
            Err((acknowledged, why)) => {
                batch.drain(..acknowledged);
                if !failing {
                    tracing::warn!("fleet relay: not published yet, retrying: {why}");
                    failing = true;
                }
                streams_ready = false;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Sends every message of `batch`, then awaits their acknowledgements in
/// order. On a failure: how many from the front the relay acknowledged.
async fn publish_all(js: &jetstream::Context, batch: &[Outgoing]) -> Result<(), (usize, String)> {
    let mut acks = Vec::with_capacity(batch.len());
    let mut send_failed = None;
    for message in batch {
        let mut build = PublishMessage::build().payload(message.payload.clone().into());
        if let Some(id) = &message.id {
            build = build.message_id(id);
        }
        match js.send_publish(message.subject.clone(), build).await {
            Ok(ack) => acks.push(ack),
            Err(err) => {
                send_failed = Some(err.to_string());
                break;
            }
        }
    }
    let sent = acks.len();
    for (at, ack) in acks.into_iter().enumerate() {
        match tokio::time::timeout(ACK_WAIT, ack).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err((at, err.to_string())),
            Err(_) => return Err((at, "no acknowledgement".into())),
        }
    }
    match send_failed {
        None => Ok(()),
        Some(why) => Err((sent, why)),
    }
}

/// The two streams, made if missing (a team may make them beforehand,
/// with replicas and limits of its own).
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), String> {
    let holds = stream::Config {
        name: subjects::HOLDS_STREAM.into(),
        subjects: vec![subjects::ALL_HOLDS.into()],
        max_messages_per_subject: 1,
        max_age: HOLDS_MAX_AGE,
        ..Default::default()
    };
    let audit = stream::Config {
        name: subjects::AUDIT_STREAM.into(),
        subjects: vec![subjects::ALL_AUDIT.into()],
        max_age: AUDIT_MAX_AGE,
        ..Default::default()
    };
    for config in [holds, audit] {
        js.get_or_create_stream(config)
            .await
            .map_err(|err| err.to_string())?;
    }
    Ok(())
}

/// A decision from the relay, checked as a token from anywhere is.
fn decide(guard: &Mutex<Guard>, payload: &[u8]) {
    let decision: Decision = match serde_json::from_slice(payload) {
        Ok(decision) => decision,
        Err(err) => {
            tracing::warn!("fleet relay: a malformed decision refused: {err}");
            return;
        }
    };
    let response = {
        let mut guard = guard.lock().unwrap_or_else(|e| e.into_inner());
        match decision.deny {
            true => guard.deny_token(Peer::RELAY, &decision.id, &decision.token, decision.reason),
            false => guard.approve_token(Peer::RELAY, &decision.id, &decision.token),
        }
    };
    if let Response::Error { message } = response {
        tracing::warn!(
            id = %escape_bytes(decision.id.as_bytes()),
            "fleet relay: a decision refused: {}",
            escape_bytes(message.as_bytes())
        );
    }
}
