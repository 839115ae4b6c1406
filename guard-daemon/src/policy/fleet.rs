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
    /// An allowed_signers file of the keys whose policy bundles this host
    /// takes from the relay; without it the host takes none.
    pub policy_signers: Option<PathBuf>,
    /// The bundle this host follows (default `default`).
    pub policy_name: Option<String>,
}

/// The `[fleet]` in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub url: String,
    /// As it goes into subjects: letters, digits, `-` and `_` only.
    pub host: String,
    pub credentials: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// Bundles of `name` signed by a key of `signers` are taken.
    pub policy: Option<PolicyFollow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFollow {
    /// As it goes into the bucket's key: letters, digits, `-` and `_` only.
    pub name: String,
    pub signers: PathBuf,
}

impl FleetFile {
    /// `self`'s keys over `earlier`'s.
    pub fn over(self, earlier: FleetFile) -> FleetFile {
        FleetFile {
            url: self.url.or(earlier.url),
            host: self.host.or(earlier.host),
            credentials: self.credentials.or(earlier.credentials),
            ca: self.ca.or(earlier.ca),
            policy_signers: self.policy_signers.or(earlier.policy_signers),
            policy_name: self.policy_name.or(earlier.policy_name),
        }
    }

    /// Relative paths as relative to `dir`, the directory of the file that names them.
    pub fn resolved_in(mut self, dir: &std::path::Path) -> FleetFile {
        for path in [
            &mut self.credentials,
            &mut self.ca,
            &mut self.policy_signers,
        ]
        .into_iter()
        .flatten()
        {
            *path = dir.join(&*path);
        }
        self
    }

    pub fn settings(self) -> Option<FleetSettings> {
        let url = self.url?;
        let host = self.host.unwrap_or_else(crate::notify::hostname);
        let policy_name = self.policy_name.unwrap_or_else(|| "default".into());
        Some(FleetSettings {
            url,
            host: subject_token(&host),
            credentials: self.credentials,
            ca: self.ca,
            policy: self.policy_signers.map(|signers| PolicyFollow {
                name: subject_token(&policy_name),
                signers,
            }),
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
