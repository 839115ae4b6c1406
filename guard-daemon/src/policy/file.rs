//! The policy file format as serde types (see docs/policy.md). Every section
//! is optional except `version`; unknown keys are errors.
use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

// Moved to guard-protocol (the control socket carries them); still found here.
use super::{spec::SpecFile, Action};
pub use super::{LocalAuth, OnTimeout};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub version: u32,
    /// `"default"` (the embedded pack, then this file) or `"none"`. Main config only.
    #[serde(default)]
    pub base: Option<Base>,
    /// A label for the rule pack, shown by `guardctl status`.
    #[serde(default)]
    pub pack_version: Option<String>,
    #[serde(default)]
    pub agents: AgentsFile,
    #[serde(default)]
    pub defaults: DefaultsFile,
    #[serde(default)]
    pub approvals: ApprovalsFile,
    #[serde(default)]
    pub notify: super::notify::NotifyFile,
    #[serde(default)]
    pub fleet: super::fleet::FleetFile,
    #[serde(default)]
    pub spec: BTreeMap<String, SpecFile>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
    #[serde(default)]
    pub protect: Vec<super::protect::ProtectFile>,
    /// `[[api]]`: rules of the API-client gate.
    #[serde(default)]
    pub api: Vec<super::api::ApiRuleFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    Default,
    None,
}

/// Lists here extend the lists of earlier files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsFile {
    pub programs: Vec<String>,
    pub interpreters: Vec<String>,
    pub packages: Vec<String>,
}

/// Keys set here override earlier files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsFile {
    #[serde(with = "humantime_serde")]
    pub hold_timeout: Option<Duration>,
    /// Where the syscall gate runs (`"auto"`, `true`, `false`; see `GateMode`).
    pub syscall_gate: Option<super::GateMode>,
    /// Whether `guardctl run` sessions may reach processes outside them
    /// (`"deny"`, `"allow"`; see `EscapeMode`).
    pub session_escape: Option<super::EscapeMode>,
    /// Directories where watched programs are installed, besides the
    /// system's bin directories (extends earlier files).
    pub program_dirs: Vec<std::path::PathBuf>,
}

/// How approvals are checked. Keys set here override earlier files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsFile {
    /// An ssh-keygen/git `allowed_signers` file: whose signed tokens count.
    pub allowed_signers: Option<std::path::PathBuf>,
    /// The longest validity a signed token may claim (default 1h).
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Option<Duration>,
    /// Re-authenticate local approvers whose uid runs agent sessions
    /// (`"auto"`, `"pam"`, `"polkit"` or `"none"`; see `LocalAuth`).
    pub local_auth: Option<LocalAuth>,
    /// The PAM service of `local_auth = "pam"` (default `agent-guard`).
    pub pam_service: Option<String>,
    /// Local approvers need a controlling terminal that no session process uses.
    pub require_terminal: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// In a later file: removes the rule of this id.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub programs: Vec<String>,
    #[serde(default)]
    pub subcommand: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub flags_any: Vec<String>,
    #[serde(default)]
    pub not_flags: Vec<String>,
    /// Commands (`git stash`) of a parent running the same executable file:
    /// what such a parent starts itself is not this rule's.
    #[serde(default)]
    pub not_run_by: Vec<String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub args_all: Vec<String>,
    #[serde(default)]
    pub args_any: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub paths_except: Vec<String>,
    #[serde(default)]
    pub sql: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Vec<String>,
    #[serde(default)]
    pub uid: Vec<u32>,
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub approvals: Option<u32>,
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Whether the uid the session runs as may be one of the approvers (default true).
    #[serde(default)]
    pub self_approval: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub on_timeout: Option<OnTimeout>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub examples: Examples,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Examples {
    /// Command lines the rule must match.
    #[serde(rename = "match")]
    pub matching: Vec<Example>,
    /// Command lines it must not match.
    pub no_match: Vec<Example>,
}

/// A command line: a string split like a shell would, or a list of words.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Example {
    Line(String),
    Words(Vec<String>),
}

impl Example {
    pub fn words(&self) -> Result<Vec<String>, String> {
        match self {
            Self::Words(words) => Ok(words.clone()),
            Self::Line(line) => {
                shlex::split(line).ok_or_else(|| format!("example {line:?} has unbalanced quotes"))
            }
        }
    }

    pub fn display(&self) -> String {
        match self {
            Self::Line(line) => line.clone(),
            Self::Words(words) => words.join(" "),
        }
    }
}
