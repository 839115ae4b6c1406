//! Webhook deliveries: a JSON POST per record, signed with HMAC-SHA256 when
//! a secret is set, retried with doubling waits on network errors, 429 and 5xx.
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;

use crate::policy::notify::Webhook;

pub const SIGNATURE_HEADER: &str = "X-Agent-Guard-Signature";
pub const EVENT_HEADER: &str = "X-Agent-Guard-Event";
pub const DELIVERY_HEADER: &str = "X-Agent-Guard-Delivery";
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // A redirect would send the request's details somewhere not configured.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("agent-guard/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One body, sent unchanged on every attempt (receivers dedupe by `delivery`).
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub body: Vec<u8>,
}

/// The JSON a webhook receives. `R` is the audit record: the line as
/// broadcast when guardd sends, `audit::AuditRecord` for a reader (the tests).
/// Fields in name order, as the untyped body had them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WebhookBody<R> {
    /// The same on every attempt of one delivery.
    pub delivery: String,
    /// The record's event (`hold`, `approve`...).
    pub event: String,
    pub host: String,
    pub record: R,
    pub sent_at: String,
    pub source: String,
    /// The record as a line for chat (Slack mrkdwn).
    pub text: String,
}

impl Delivery {
    pub fn new(host: &str, id: String, record: &Value) -> Self {
        let event = record["event"].as_str().unwrap_or_default().to_string();
        let body = WebhookBody {
            source: "agent-guard".to_string(),
            host: host.to_string(),
            delivery: id.clone(),
            sent_at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            event: event.clone(),
            text: super::text::slack(host, record),
            record,
        };
        Self {
            id,
            event,
            body: serde_json::to_vec(&body).expect("webhook bodies serialize"),
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of the body under the webhook's secret.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Sends until the receiver takes it (2xx), refuses it for good (other 4xx)
/// or the retries run out; each failure is logged.
pub async fn deliver(client: &reqwest::Client, hook: &Webhook, delivery: &Delivery) {
    let mut wait = hook.backoff;
    for attempt in 0..=hook.retries {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        let mut request = client
            .post(&hook.url)
            .timeout(hook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &delivery.event)
            .header(DELIVERY_HEADER, &delivery.id)
            .body(delivery.body.clone());
        if let Some(secret) = &hook.secret {
            request = request.header(SIGNATURE_HEADER, signature(&secret.0, &delivery.body));
        }
        let failure = match request.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                let status = response.status();
                let retry = status.is_server_error() || status.as_u16() == 429;
                if !retry {
                    tracing::error!(
                        url = hook.url,
                        delivery = delivery.id,
                        "webhook refused the {} record: HTTP {status}; not retried",
                        delivery.event
                    );
                    return;
                }
                format!("HTTP {status}")
            }
            Err(err) => error_chain(&err),
        };
        tracing::warn!(
            url = hook.url,
            delivery = delivery.id,
            "webhook attempt {} of {} failed: {failure}",
            attempt + 1,
            hook.retries + 1
        );
    }
    tracing::error!(
        url = hook.url,
        delivery = delivery.id,
        "webhook gave up on the {} record after {} attempts",
        delivery.event,
        hook.retries + 1
    );
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // HMAC-SHA-256 with key "Jefe" over "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn body_carries_the_record_and_a_slack_text() {
        let record = json!({"event": "hold", "request_id": "x-1", "argv": ["rm", "-rf", "/"]});
        let delivery = Delivery::new("h", "h-1-1".into(), &record);
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(body["record"], record);
        assert_eq!(body["event"], "hold");
        assert_eq!(body["delivery"], "h-1-1");
        assert!(body["text"].as_str().unwrap().contains("`rm -rf /`"));
    }

    /// The typed body writes the bytes the `json!` map did (serde_json
    /// without preserve_order: keys in name order), so receivers see no change.
    #[test]
    fn body_is_written_as_the_json_map_was() {
        let record = json!({"event": "hold", "request_id": "x-1", "argv": ["rm"]});
        let delivery = Delivery::new("h", "h-1-1".into(), &record);
        let as_map: Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(
            serde_json::to_vec(&as_map).unwrap(),
            delivery.body,
            "{as_map}"
        );
    }
}
