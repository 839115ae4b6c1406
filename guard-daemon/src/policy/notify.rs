//! `[notify]`: who is told of holds and decisions, beyond `guardctl watch`.
//! Webhook secrets are read with the policy, so a missing secret file keeps
//! the previous policy in force.
use std::{path::Path, time::Duration};

use serde::Deserialize;

use crate::audit::AuditEvent;

/// Holds and every decision on them, and refused approval attempts.
const DEFAULT_EVENTS: [AuditEvent; 6] = [
    AuditEvent::Hold,
    AuditEvent::Approve,
    AuditEvent::Deny,
    AuditEvent::Refuse,
    AuditEvent::Timeout,
    AuditEvent::Exit,
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyFile {
    /// Later files add webhooks (a URL given twice keeps the later settings).
    pub webhook: Vec<WebhookFile>,
    /// Desktop notifications (D-Bus) to the session owner; needs the `desktop` build feature.
    pub desktop: Option<bool>,
    /// The session bus of the held process's user; `{uid}` is replaced.
    pub desktop_bus: Option<String>,
}

pub const DEFAULT_DESKTOP_BUS: &str = "unix:path=/run/user/{uid}/bus";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub url: String,
    /// File holding the HMAC-SHA256 key (relative to the policy file naming it).
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    #[serde(default)]
    /// Audit events (the `event` field of audit records) to send.
    pub events: Option<Vec<AuditEvent>>,
    /// Per attempt (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Attempts after the first (default 5).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Wait before the first retry, doubled for each next one (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub backoff: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    pub webhooks: Vec<Webhook>,
    pub desktop: bool,
    pub desktop_bus: String,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            desktop: false,
            desktop_bus: DEFAULT_DESKTOP_BUS.into(),
        }
    }
}

impl NotifySettings {
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && !self.desktop
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub url: String,
    pub secret: Option<Secret>,
    pub events: Vec<AuditEvent>,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

impl Webhook {
    pub fn wants(&self, event: &str) -> bool {
        self.events
            .iter()
            .any(|e| serde_json::to_value(e).is_ok_and(|name| name == event))
    }
}

/// An HMAC key; never printed.
#[derive(Clone, PartialEq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl WebhookFile {
    /// `origin` is the policy file, for relative secret paths.
    pub fn compile(&self, origin: &str) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|err| format!("webhook url {:?}: {err}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "webhook url {:?}: only http and https are supported",
                self.url
            ));
        }
        let secret = match &self.secret_file {
            None => None,
            Some(path) => {
                let path = Path::new(origin)
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(path);
                let text = std::fs::read(&path)
                    .map_err(|err| format!("webhook secret_file {}: {err}", path.display()))?;
                let key = text.trim_ascii().to_vec();
                if key.is_empty() {
                    return Err(format!("webhook secret_file {} is empty", path.display()));
                }
                Some(Secret(key))
            }
        };
        let events = self
            .events
            .clone()
            .unwrap_or_else(|| DEFAULT_EVENTS.to_vec());
        Ok(Webhook {
            url: self.url.clone(),
            secret,
            events,
            timeout: self.timeout.unwrap_or(Duration::from_secs(10)),
            retries: self.retries.unwrap_or(5),
            backoff: self.backoff.unwrap_or(Duration::from_secs(1)),
        })
    }
}
