//! Policy: which processes start agent sessions, and what happens when a
//! program in a session is exec'd. Pure code: no I/O beyond reading the file,
//! no kernel, so it is tested without root.
//!
//! First version: a rule matches the program name and words of argv. The
//! full engine (subcommand specs, paths, SQL, environment) is issue #3.
mod matcher;

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

pub use matcher::ArgPattern;

/// The policy compiled into guardd, used when no `--config` is given.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");
pub const SCHEMA_VERSION: u32 = 1;
const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid policy {origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Audit,
    Hold,
    Deny,
}

/// The file format (see docs/policy.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u32,
    #[serde(default)]
    agents: Agents,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
}

/// How agents are recognised when they start without `guardctl run`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Agents {
    /// Program names whose exec starts a session.
    pub programs: Vec<String>,
    /// Interpreters that may run an agent package (node, python3, ...).
    pub interpreters: Vec<String>,
    /// Substrings of an interpreter's argv that mark an agent package.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Defaults {
    #[serde(with = "humantime_serde")]
    hold_timeout: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            hold_timeout: DEFAULT_HOLD_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    #[serde(default)]
    description: String,
    programs: Vec<String>,
    #[serde(default)]
    args_all: Vec<String>,
    #[serde(default)]
    args_any: Vec<String>,
    action: Action,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub programs: Vec<String>,
    args_all: Vec<ArgPattern>,
    args_any: Vec<ArgPattern>,
    pub action: Action,
    pub timeout: Duration,
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub source: String,
    pub agents: Agents,
    pub rules: Vec<Rule>,
}

/// What the policy says about one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub action: Action,
    /// The deciding rule, or None when no rule matched (allow).
    pub rule: Option<String>,
    pub program: String,
    pub matched: Vec<String>,
    pub message: Option<String>,
    pub timeout_secs: u64,
}

impl Policy {
    pub fn embedded_default() -> Self {
        Self::parse(DEFAULT_POLICY, "embedded default policy").expect("the default policy is valid")
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|err| invalid(err.to_string()))?;
        if file.version != SCHEMA_VERSION {
            return Err(invalid(format!(
                "schema version {} is not supported (expected {SCHEMA_VERSION})",
                file.version
            )));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for rule in file.rules {
            if rules.iter().any(|r: &Rule| r.id == rule.id) {
                return Err(invalid(format!("rule id {:?} is used twice", rule.id)));
            }
            if rule.programs.is_empty() {
                return Err(invalid(format!("rule {:?} names no programs", rule.id)));
            }
            let compile = |patterns: &[String]| -> Result<Vec<ArgPattern>, PolicyError> {
                patterns
                    .iter()
                    .map(|p| {
                        ArgPattern::parse(p)
                            .map_err(|e| invalid(format!("rule {:?}: {e}", rule.id)))
                    })
                    .collect()
            };
            rules.push(Rule {
                args_all: compile(&rule.args_all)?,
                args_any: compile(&rule.args_any)?,
                id: rule.id,
                description: rule.description,
                programs: rule.programs,
                action: rule.action,
                timeout: rule.timeout.unwrap_or(file.defaults.hold_timeout),
                message: rule.message,
            });
        }
        Ok(Self {
            source: origin.to_string(),
            agents: file.agents,
            rules,
        })
    }

    /// Program names whose exec in a session must stop for a decision: those
    /// a rule can do more than allow.
    pub fn watched_programs(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rules
            .iter()
            .filter(|rule| rule.action != Action::Allow)
            .flat_map(|rule| rule.programs.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Judges `argv` run as `program` (a basename). Precedence: a matching
    /// `allow` rule wins (a narrow carve-out); otherwise the most severe of
    /// the matching rules (deny > hold > audit); no match is allow.
    pub fn evaluate<S: AsRef<str>>(&self, program: &str, argv: &[S]) -> Explanation {
        let args: Vec<&str> = argv.iter().skip(1).map(AsRef::as_ref).collect();
        let matching = self
            .rules
            .iter()
            .filter(|rule| rule.matches(program, &args));
        let mut matched = Vec::new();
        let mut decisive: Option<&Rule> = None;
        for rule in matching {
            matched.push(rule.id.clone());
            decisive = match decisive {
                Some(d) if d.action == Action::Allow => Some(d),
                _ if rule.action == Action::Allow => Some(rule),
                Some(d) if d.action >= rule.action => Some(d),
                _ => Some(rule),
            };
        }
        match decisive {
            Some(rule) => Explanation {
                action: rule.action,
                rule: Some(rule.id.clone()),
                program: program.to_string(),
                matched,
                message: rule.message.clone(),
                timeout_secs: rule.timeout.as_secs(),
            },
            None => Explanation {
                action: Action::Allow,
                rule: None,
                program: program.to_string(),
                matched,
                message: None,
                timeout_secs: 0,
            },
        }
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.id == id)
    }

    /// Whether an interpreter command line runs one of the agent packages.
    pub fn runs_agent_package<S: AsRef<str>>(&self, argv: &[S]) -> Option<String> {
        let packages = &self.agents.packages;
        argv.iter().skip(1).find_map(|arg| {
            packages
                .iter()
                .find(|package| arg.as_ref().contains(package.as_str()))
                .cloned()
        })
    }
}

impl Rule {
    fn matches(&self, program: &str, args: &[&str]) -> bool {
        self.programs.iter().any(|p| p == program)
            && self
                .args_all
                .iter()
                .all(|pattern| args.iter().any(|a| pattern.matches(a)))
            && (self.args_any.is_empty()
                || self
                    .args_any
                    .iter()
                    .any(|pattern| args.iter().any(|a| pattern.matches(a))))
    }
}

#[cfg(test)]
mod tests;
