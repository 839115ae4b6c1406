//! `[fleet]`: the NATS relay guardd joins (docs/fleet.md). Layers override
//! key by key; without a `url` guardd joins nothing.
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetFile {
    /// `nats://host:4222` (or `tls://`), or several, comma-separated.
    pub url: Option<String>,
    /// This host's name on the relay (default: the system's host name).
    pub host: Option<String>,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed).
    pub credentials: Option<PathBuf>,
    /// A PEM file of the CA that signed the relay's TLS certificate.
    pub ca: Option<PathBuf>,
}

/// The `[fleet]` in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub url: String,
    /// As it goes into subjects: letters, digits, `-` and `_` only.
    pub host: String,
    pub credentials: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl FleetFile {
    /// `self`'s keys over `earlier`'s.
    pub fn over(self, earlier: FleetFile) -> FleetFile {
        FleetFile {
            url: self.url.or(earlier.url),
            host: self.host.or(earlier.host),
            credentials: self.credentials.or(earlier.credentials),
            ca: self.ca.or(earlier.ca),
        }
    }

    pub fn settings(self) -> Option<FleetSettings> {
        let url = self.url?;
        let host = self.host.unwrap_or_else(crate::notify::hostname);
        Some(FleetSettings {
            url,
            host: subject_token(&host),
            credentials: self.credentials,
            ca: self.ca,
        })
    }
}

/// `name` as one token of a NATS subject: `.`, `*`, `>` and whitespace
/// would split or widen it.
pub fn subject_token(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_keys_win_and_host_names_become_one_subject_token() {
        let base = FleetFile {
            url: Some("nats://a:4222".into()),
            host: Some("build-7.example.org".into()),
            ..FleetFile::default()
        };
        let top = FleetFile {
            url: Some("nats://b:4222".into()),
            ..FleetFile::default()
        };
        let settings = top.over(base).settings().unwrap();
        assert_eq!(settings.url, "nats://b:4222");
        assert_eq!(settings.host, "build-7_example_org");
        assert_eq!(subject_token("a b*>.c"), "a_b___c");
        assert!(FleetFile::default().settings().is_none());
    }
}
