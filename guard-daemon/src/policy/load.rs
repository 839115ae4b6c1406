//! Building a policy from its layers: the embedded default pack, the main
//! file and `policy.d/*.toml`, merged in order and checked against each
//! rule's examples.
use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    api,
    file::{Base, PolicyFile, RuleFile},
    notify, protect,
    rule::Judged,
    spec::Spec,
    Agents, ApprovalSettings, CommandContext, EscapeMode, GateMode, Policy, PolicyError, Rule,
    DEFAULT_POLICY, SCHEMA_VERSION,
};

const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(600);
/// Where examples are judged: they must not depend on the machine.
const EXAMPLE_CWD: &str = "/home/dev/project";
const EXAMPLE_HOME: &str = "/home/dev";

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
            fallback: false,
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
        Self::load_with(path, None)
    }

    /// `load(path)` with one more layer on top, `(origin, text)`: the fleet's
    /// signed bundle.
    pub fn load_with(path: &Path, top: Option<(&str, &str)>) -> Result<Self, PolicyError> {
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
        layers.extend(top.map(|(origin, text)| Layer {
            origin: origin.into(),
            text: text.into(),
        }));
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
        let mut program_dirs = Vec::new();
        let mut approvals = ApprovalSettings::default();
        let mut notify = notify::NotifySettings::default();
        let mut fleet = super::fleet::FleetFile::default();
        let mut spec_files = BTreeMap::new();
        let mut rule_files: Vec<(String, RuleFile)> = Vec::new();
        let mut protect_files: Vec<(String, protect::ProtectFile)> = Vec::new();
        let mut api_files: Vec<(String, api::ApiRuleFile)> = Vec::new();
        let mut pack = None;
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        for layer in &layers {
            layer.text.hash(&mut digest);
            let file = parse_file(layer)?;
            pack = file.pack_version.or(pack);
            let dir = Path::new(&layer.origin).parent().unwrap_or(Path::new("."));
            fleet = file.fleet.resolved_in(dir).over(fleet);
            extend_unique(&mut agents.programs, file.agents.programs);
            extend_unique(&mut agents.interpreters, file.agents.interpreters);
            extend_unique(&mut agents.packages, file.agents.packages);
            hold_timeout = file.defaults.hold_timeout.unwrap_or(hold_timeout);
            syscall_gate = file.defaults.syscall_gate.unwrap_or(syscall_gate);
            session_escape = file.defaults.session_escape.unwrap_or(session_escape);
            extend_unique(&mut program_dirs, file.defaults.program_dirs);
            if let Some(path) = file.approvals.allowed_signers {
                // Relative to the file that names it.
                approvals.allowed_signers = Some(dir.join(path));
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
            for rule in file.api {
                api_files.retain(|(_, r)| r.id != rule.id);
                if !rule.disabled {
                    api_files.push((layer.origin.clone(), rule));
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
        // A rule's options are the program's: an abbreviation may stand for them.
        for rule in &rules {
            for program in rule.program_names() {
                if let Some(spec) = specs.get_mut(program) {
                    spec.learn(rule.option_names());
                }
            }
        }
        let protections = protect_files
            .iter()
            .map(|(origin, file)| file.compile(hold_timeout).map_err(|m| invalid(origin, m)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut api_rules = Vec::with_capacity(api_files.len());
        for (origin, file) in &api_files {
            let rule = api::ApiRule::compile(file, hold_timeout).map_err(|m| invalid(origin, m))?;
            rule.check_examples(file).map_err(|m| invalid(origin, m))?;
            api_rules.push(rule);
        }
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
            fleet: fleet.settings(),
            rules,
            protections,
            api_rules,
            hold_timeout,
            syscall_gate,
            session_escape,
            program_dirs,
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
            let inner = super::wrappers::unwrap(&command);
            let matched = [Some(&command), inner.as_ref()]
                .into_iter()
                .flatten()
                .any(|c| {
                    rule.matches(&Judged::new(c, self.spec_for(&c.program)))
                        .is_some()
                });
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

fn extend_unique<T: PartialEq>(list: &mut Vec<T>, more: Vec<T>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}
