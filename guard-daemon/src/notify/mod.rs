//! Telling people: every audit record the `[notify]` settings ask for goes
//! to the webhooks (and desktop notifications) in tasks of their own, so a
//! slow or failing receiver never delays a decision.
#[cfg(feature = "desktop")]
pub mod desktop;
mod text;
mod webhook;

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;
use tokio::sync::{broadcast, watch, Semaphore};

use crate::policy::notify::NotifySettings;
/// A webhook's JSON, for receivers written in Rust (and the tests).
pub use webhook::WebhookBody;

/// Deliveries (with their retries) one webhook may have under way; beyond it
/// new ones are dropped and logged rather than queued without bound.
const IN_FLIGHT_PER_WEBHOOK: usize = 64;

/// Follows the audit log while any notification is configured.
pub async fn run(audit: broadcast::Sender<Value>, mut settings: watch::Receiver<NotifySettings>) {
    let client = match webhook::client() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!("webhooks disabled: cannot build the HTTP client: {err}");
            return std::future::pending().await;
        }
    };
    let host = hostname();
    let mut sequence = 0u64;
    let mut limits: HashMap<String, Arc<Semaphore>> = HashMap::new();
    loop {
        if settings.borrow().desktop && !cfg!(feature = "desktop") {
            tracing::error!(
                "[notify] desktop = true, but this guardd was built without the `desktop` feature"
            );
        }
        if settings.borrow_and_update().is_empty() {
            if settings.changed().await.is_err() {
                return;
            }
            continue;
        }
        // Subscribed only while something is configured: the audit log
        // skips the broadcast when nobody listens.
        let mut records = audit.subscribe();
        loop {
            let record = tokio::select! {
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if settings.borrow().is_empty() {
                        break;
                    }
                    continue;
                }
                record = records.recv() => record,
            };
            let record = match record {
                Ok(record) => record,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(
                        "notifications fell behind: {missed} audit records were not sent"
                    );
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let current = settings.borrow().clone();
            let event = record["event"].as_str().unwrap_or_default().to_string();
            for hook in current.webhooks.iter().filter(|h| h.wants(&event)) {
                let limit = limits
                    .entry(hook.url.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(IN_FLIGHT_PER_WEBHOOK)))
                    .clone();
                let Ok(permit) = limit.try_acquire_owned() else {
                    tracing::error!(
                        url = hook.url,
                        "webhook has {IN_FLIGHT_PER_WEBHOOK} deliveries under way: dropped the {event} record"
                    );
                    continue;
                };
                sequence += 1;
                let delivery = webhook::Delivery::new(
                    &host,
                    format!("{host}-{}-{sequence}", std::process::id()),
                    &record,
                );
                let (client, hook) = (client.clone(), hook.clone());
                tokio::spawn(async move {
                    webhook::deliver(&client, &hook, &delivery).await;
                    drop(permit);
                });
            }
            #[cfg(feature = "desktop")]
            if current.desktop && event == "hold" {
                desktop::spawn(&current, &host, &record);
            }
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
