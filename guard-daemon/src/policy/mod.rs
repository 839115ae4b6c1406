//! Policy: which processes start agent sessions, and what happens when a
//! program in a session is exec'd. Pure code: no kernel, no I/O beyond
//! reading policy files, so it is tested without root.
//!
//! A policy is built from layers: the embedded default pack (unless the main
//! file says `base = "none"`), the main file, then `policy.d/*.toml` beside it
//! in file-name order. Later layers extend agent lists, override defaults and
//! specs, and replace (or, with `disabled = true`, remove) rules by id.
mod file;
mod matcher;
pub mod notify;
mod paths;
pub mod protect;
mod rule;
mod spec;
mod sql;

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use file::{Base, PolicyFile, RuleFile};
pub use file::{LocalAuth, OnTimeout};
pub use matcher::ArgPattern;
use rule::Judged;
pub use rule::{basename, CommandContext, Rule};
use spec::Spec;

/// The policy compiled into guardd, used when no `--config` is given.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");
pub const SCHEMA_VERSION: u32 = 1;
const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(600);
/// Where examples are judged: they must not depend on the machine.
const EXAMPLE_CWD: &str = "/home/dev/project";
const EXAMPLE_HOME: &str = "/home/dev";

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

/// How agents are recognised when they start without `guardctl run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Agents {
    pub programs: Vec<String>,
    pub interpreters: Vec<String>,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// The files it was built from, in order.
    pub source: String,
    /// Pack label and a digest of every layer's text.
    pub version: String,
    pub agents: Agents,
    pub approvals: ApprovalSettings,
    pub notify: notify::NotifySettings,
    pub rules: Vec<Rule>,
    /// `[[protect]]`: paths the syscall gate guards.
    pub protections: Vec<protect::Protection>,
    /// `[defaults] hold_timeout`.
    pub hold_timeout: Duration,
    /// `[defaults] syscall_gate`.
    pub syscall_gate: GateMode,
    /// `[defaults] session_escape`.
    pub session_escape: EscapeMode,
    specs: HashMap<String, Spec>,
    /// Program name -> indices of the rules naming it.
    by_program: HashMap<String, Vec<usize>>,
    /// Rules with path-glob programs: checked for every command.
    path_rules: Vec<usize>,
}

/// `[defaults] syscall_gate`: where `[[protect]]` is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateMode {
    /// `"auto"` (default): by the BPF LSM where the kernel runs it (holds
    /// survive a guardd restart there); nowhere else.
    #[default]
    Auto,
    /// `true`: as auto, and where the BPF LSM does not run, by seccomp user
    /// notification in `guardctl run` sessions (a guardd restart leaves those
    /// sessions unable to change files until they are restarted).
    On,
    /// `false`: not enforced.
    Off,
}

impl<'de> Deserialize<'de> for GateMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(text) if text == "auto" => Ok(Self::Auto),
            Raw::Text(text) => Err(serde::de::Error::custom(format!(
                "syscall_gate must be \"auto\", true or false, not {text:?}"
            ))),
        }
    }
}

/// `[defaults] session_escape`: whether a `guardctl run` session may make
/// processes outside it do its work (ptrace, process_vm_writev, pidfd_getfd,
/// connecting to a terminal multiplexer or the user's service manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapeMode {
    /// `"deny"` (default): attaching to, writing into or taking fds from a
    /// process outside the session fails with EPERM; connecting to a tmux,
    /// screen or systemd manager socket served from outside is held.
    #[default]
    Deny,
    /// `"allow"`: no escape checks (no seccomp filter for them either), for
    /// agents that must debug other processes.
    Allow,
}

/// What the policy says about one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub action: Action,
    /// The deciding rule, or None when no rule matched (allow).
    pub rule: Option<String>,
    pub program: String,
    /// Every rule that matched.
    pub matched: Vec<String>,
    /// Why the deciding rule matched: the words, flags, paths... it saw.
    pub why: Vec<String>,
    pub message: Option<String>,
    pub timeout_secs: u64,
    pub approvals: u32,
    pub approvers: Vec<String>,
    /// Whether the session's own uid may approve.
    #[serde(default = "yes")]
    pub self_approval: bool,
    pub on_timeout: OnTimeout,
}

fn yes() -> bool {
    true
}

/// How approvals are checked (`[approvals]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalSettings {
    pub allowed_signers: Option<std::path::PathBuf>,
    pub max_token_ttl: std::time::Duration,
    pub local_auth: LocalAuth,
    pub pam_service: String,
    pub require_terminal: bool,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            allowed_signers: None,
            max_token_ttl: std::time::Duration::from_secs(3600),
            local_auth: LocalAuth::Auto,
            pam_service: crate::pam::DEFAULT_SERVICE.to_string(),
            require_terminal: false,
        }
    }
}

/// One layer of policy text and where it came from.
struct Layer {
    origin: String,
    text: String,
}

impl Policy {
    /// Adds `guardd --protect` paths: held, every operation, the default timeout.
    pub fn with_protected_paths(mut self, paths: &[PathBuf]) -> Result<Self, PolicyError> {
        if paths.is_empty() {
            return Ok(self);
        }
        let entry = protect::ProtectFile {
            id: "guardd --protect".into(),
            disabled: false,
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            except: Vec::new(),
            action: None,
            operations: None,
            approvals: None,
            timeout: None,
            message: None,
        };
        let protection =
            entry
                .compile(self.hold_timeout)
                .map_err(|message| PolicyError::Invalid {
                    origin: "guardd --protect".into(),
                    message,
                })?;
        self.protections.push(protection);
        Ok(self)
    }

    pub fn embedded_default() -> Self {
        Self::from_layers(vec![default_layer()]).expect("the embedded default policy is valid")
    }

    /// Parses one policy text on top of the default pack (unless it says `base = "none"`).
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let layer = Layer {
            origin: origin.into(),
            text: text.into(),
        };
        let mut layers = Vec::new();
        if parse_file(&layer)?.base != Some(Base::None) {
            layers.push(default_layer());
        }
        layers.push(layer);
        Self::from_layers(layers)
    }

    /// Loads `path` and the `policy.d/*.toml` files beside it.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let mut files = vec![path.to_path_buf()];
        files.extend(dropin_files(path)?);
        let mut layers = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|source| PolicyError::Read {
                path: file.display().to_string(),
                source,
            })?;
            layers.push(Layer {
                origin: file.display().to_string(),
                text,
            });
        }
        if parse_file(&layers[0])?.base != Some(Base::None) {
            layers.insert(0, default_layer());
        }
        Self::from_layers(layers)
    }

    /// The files `load(path)` reads, for change detection.
    pub fn files(path: &Path) -> Vec<PathBuf> {
        let mut files = vec![path.to_path_buf()];
        files.extend(dropin_files(path).unwrap_or_default());
        files
    }

    fn from_layers(layers: Vec<Layer>) -> Result<Self, PolicyError> {
        let mut agents = Agents::default();
        let mut hold_timeout = DEFAULT_HOLD_TIMEOUT;
        let mut syscall_gate = GateMode::Auto;
        let mut session_escape = EscapeMode::Deny;
        let mut approvals = ApprovalSettings::default();
        let mut notify = notify::NotifySettings::default();
        let mut spec_files = BTreeMap::new();
        let mut rule_files: Vec<(String, RuleFile)> = Vec::new();
        let mut protect_files: Vec<(String, protect::ProtectFile)> = Vec::new();
        let mut pack = None;
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        for layer in &layers {
            layer.text.hash(&mut digest);
            let file = parse_file(layer)?;
            pack = file.pack_version.or(pack);
            extend_unique(&mut agents.programs, file.agents.programs);
            extend_unique(&mut agents.interpreters, file.agents.interpreters);
            extend_unique(&mut agents.packages, file.agents.packages);
            hold_timeout = file.defaults.hold_timeout.unwrap_or(hold_timeout);
            syscall_gate = file.defaults.syscall_gate.unwrap_or(syscall_gate);
            session_escape = file.defaults.session_escape.unwrap_or(session_escape);
            if let Some(path) = file.approvals.allowed_signers {
                // Relative to the file that names it.
                let base = Path::new(&layer.origin).parent().unwrap_or(Path::new("."));
                approvals.allowed_signers = Some(base.join(path));
            }
            approvals.max_token_ttl = file
                .approvals
                .max_token_ttl
                .unwrap_or(approvals.max_token_ttl);
            approvals.local_auth = file.approvals.local_auth.unwrap_or(approvals.local_auth);
            if let Some(service) = &file.approvals.pam_service {
                approvals.pam_service = service.clone();
            }
            approvals.require_terminal = file
                .approvals
                .require_terminal
                .unwrap_or(approvals.require_terminal);
            notify.desktop = file.notify.desktop.unwrap_or(notify.desktop);
            if let Some(bus) = file.notify.desktop_bus {
                notify.desktop_bus = bus;
            }
            for hook in &file.notify.webhook {
                let hook = hook
                    .compile(&layer.origin)
                    .map_err(|message| PolicyError::Invalid {
                        origin: layer.origin.clone(),
                        message,
                    })?;
                notify.webhooks.retain(|h| h.url != hook.url);
                notify.webhooks.push(hook);
            }
            spec_files.extend(file.spec);
            for entry in file.protect {
                protect_files.retain(|(_, p)| p.id != entry.id);
                if !entry.disabled {
                    protect_files.push((layer.origin.clone(), entry));
                }
            }
            for rule in file.rules {
                rule_files.retain(|(_, r)| r.id != rule.id);
                if !rule.disabled {
                    rule_files.push((layer.origin.clone(), rule));
                }
            }
        }
        let invalid = |origin: &str, message: String| PolicyError::Invalid {
            origin: origin.into(),
            message,
        };
        let mut specs = HashMap::new();
        for (name, file) in &spec_files {
            let names = if file.names.is_empty() {
                vec![name.clone()]
            } else {
                file.names.clone()
            };
            let spec = Spec::compile(file);
            for program in names {
                specs.insert(program, spec.clone());
            }
        }
        let mut rules = Vec::with_capacity(rule_files.len());
        for (origin, file) in &rule_files {
            rules.push(Rule::compile(file, hold_timeout).map_err(|m| invalid(origin, m))?);
        }
        let protections = protect_files
            .iter()
            .map(|(origin, file)| file.compile(hold_timeout).map_err(|m| invalid(origin, m)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut by_program: HashMap<String, Vec<usize>> = HashMap::new();
        let mut path_rules = Vec::new();
        for (at, rule) in rules.iter().enumerate() {
            for name in rule.program_names() {
                by_program.entry(name.to_string()).or_default().push(at);
            }
            if rule.has_path_programs() {
                path_rules.push(at);
            }
        }
        let policy = Self {
            source: layers
                .iter()
                .map(|l| l.origin.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
            version: format!(
                "{}+{:016x}",
                pack.unwrap_or_else(|| "custom".into()),
                digest.finish()
            ),
            agents,
            approvals,
            notify,
            rules,
            protections,
            hold_timeout,
            syscall_gate,
            session_escape,
            specs,
            by_program,
            path_rules,
        };
        for (origin, file) in &rule_files {
            policy
                .check_examples(file)
                .map_err(|m| invalid(origin, m))?;
        }
        Ok(policy)
    }

    /// Each rule's examples must (not) match the rule itself.
    fn check_examples(&self, file: &RuleFile) -> Result<(), String> {
        let rule = self.rule(&file.id).expect("compiled above");
        let cases = file
            .examples
            .matching
            .iter()
            .map(|e| (e, true))
            .chain(file.examples.no_match.iter().map(|e| (e, false)));
        for (example, expected) in cases {
            let words = example
                .words()
                .map_err(|m| format!("rule {:?}: {m}", file.id))?;
            if words.is_empty() {
                return Err(format!("rule {:?}: empty example", file.id));
            }
            let mut command = CommandContext::from_argv(&words);
            command.cwd = Some(EXAMPLE_CWD.into());
            command.env = vec![("HOME".into(), EXAMPLE_HOME.into())];
            let spec = self.spec_for(&command.program);
            let matched = rule.matches(&Judged::new(&command, spec)).is_some();
            if matched != expected {
                let should = if expected {
                    "should match but does not"
                } else {
                    "should not match but does"
                };
                return Err(format!(
                    "rule {:?}: example `{}` {should}",
                    file.id,
                    example.display()
                ));
            }
        }
        Ok(())
    }

    fn spec_for(&self, program: &str) -> &Spec {
        static EMPTY: std::sync::OnceLock<Spec> = std::sync::OnceLock::new();
        self.specs
            .get(program)
            .unwrap_or_else(|| EMPTY.get_or_init(Spec::default))
    }

    /// Program names whose exec in a session must stop for a decision: those
    /// a rule can do more than allow.
    pub fn watched_programs(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rules
            .iter()
            .filter(|rule| rule.action != Action::Allow)
            .flat_map(Rule::program_names)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Environment variables any rule reads (guardd collects them from the process).
    pub fn env_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rules
            .iter()
            .flat_map(Rule::env_names)
            .chain(["HOME"])
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Judges a command. Precedence: a matching `allow` rule wins (a narrow
    /// carve-out); otherwise the most severe matching rule (deny > hold >
    /// audit); no match is allow.
    pub fn judge(&self, command: &CommandContext) -> Explanation {
        let judged = Judged::new(command, self.spec_for(&command.program));
        let candidates = self.candidates(&command.program, command.exe.as_deref());
        let mut matched = Vec::new();
        let mut decisive: Option<(&Rule, Vec<String>)> = None;
        for rule in candidates.into_iter().map(|at| &self.rules[at]) {
            let Some(why) = rule.matches(&judged) else {
                continue;
            };
            matched.push(rule.id.clone());
            let replace = match &decisive {
                None => true,
                Some((current, _)) if current.action == Action::Allow => false,
                Some(_) if rule.action == Action::Allow => true,
                Some((current, _)) => rule.action > current.action,
            };
            if replace {
                decisive = Some((rule, why));
            }
        }
        match decisive {
            Some((rule, why)) => Explanation {
                action: rule.action,
                rule: Some(rule.id.clone()),
                program: command.program.clone(),
                matched,
                why,
                message: rule.message.clone(),
                timeout_secs: rule.timeout.as_secs(),
                approvals: rule.approvals,
                approvers: rule.approvers.clone(),
                self_approval: rule.self_approval,
                on_timeout: rule.on_timeout,
            },
            None => Explanation {
                action: Action::Allow,
                rule: None,
                program: command.program.clone(),
                matched,
                why: Vec::new(),
                message: None,
                timeout_secs: 0,
                approvals: 0,
                approvers: Vec::new(),
                self_approval: true,
                on_timeout: OnTimeout::Deny,
            },
        }
    }

    /// The rules that may match a program (by name or executed file) and
    /// those that match on paths only.
    fn candidates(&self, program: &str, exe: Option<&str>) -> Vec<usize> {
        let exe_name = exe.map(basename);
        let mut candidates: Vec<usize> = self
            .by_program
            .get(program)
            .into_iter()
            .chain(
                exe_name
                    .filter(|n| *n != program)
                    .and_then(|n| self.by_program.get(n)),
            )
            .flatten()
            .chain(&self.path_rules)
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        candidates
    }

    /// Whether judging this program needs the process's cwd, environment
    /// or uid: when no rule that may match reads them, guardd does not
    /// read them from /proc (the common allow stays cheap).
    pub fn reads_context(&self, program: &str, exe: Option<&str>) -> bool {
        self.candidates(program, exe)
            .into_iter()
            .any(|at| self.rules[at].reads_context())
    }

    /// Judges a bare argv (program = basename of argv[0]).
    pub fn evaluate<S: AsRef<str>>(&self, argv: &[S]) -> Explanation {
        self.judge(&CommandContext::from_argv(argv))
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.id == id)
    }

    /// Whether an interpreter command line runs one of the agent packages.
    pub fn runs_agent_package<S: AsRef<str>>(&self, argv: &[S]) -> Option<String> {
        argv.iter().skip(1).find_map(|arg| {
            self.agents
                .packages
                .iter()
                .find(|package| arg.as_ref().contains(package.as_str()))
                .cloned()
        })
    }
}

fn default_layer() -> Layer {
    Layer {
        origin: "embedded default policy".into(),
        text: DEFAULT_POLICY.into(),
    }
}

fn parse_file(layer: &Layer) -> Result<PolicyFile, PolicyError> {
    let invalid = |message: String| PolicyError::Invalid {
        origin: layer.origin.clone(),
        message,
    };
    let file: PolicyFile = toml::from_str(&layer.text)
        .map_err(|err| invalid(err.to_string().trim_end().to_string()))?;
    if file.version != SCHEMA_VERSION {
        return Err(invalid(format!(
            "schema version {} is not supported (expected {SCHEMA_VERSION})",
            file.version
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for rule in &file.rules {
        if !seen.insert(&rule.id) {
            return Err(invalid(format!("rule id {:?} is used twice", rule.id)));
        }
    }
    Ok(file)
}

/// `policy.d/*.toml` in the directory of `main`, in file-name order.
fn dropin_files(main: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let dir = main.parent().unwrap_or(Path::new(".")).join("policy.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PolicyError::Read {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn extend_unique(list: &mut Vec<String>, more: Vec<String>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

#[cfg(test)]
mod tests;
