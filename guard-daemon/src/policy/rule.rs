//! A compiled rule and how it matches one command.
use std::{
    cell::OnceCell,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    command::{basename, CommandContext},
    file::{OnTimeout, RuleFile},
    matcher::ArgPattern,
    paths::{follow_links, resolve, PathContext, PathSet},
    prefilter::Atom,
    spec::{ParsedArgs, Spec},
    sql, Action,
};

/// Values of a `not_flags` flag that leave it on: Go's and pflag's truths,
/// and kubectl's dry-run modes. Any other value (`false`, `0`, `none`)
/// counts as the flag being absent.
const AFFIRMATIVE: &[&str] = &["1", "t", "T", "true", "TRUE", "True", "client", "server"];

#[derive(Debug, Clone)]
enum ProgramMatcher {
    Name(String),
    Path(PathSet),
}

/// One element of a subcommand pattern.
#[derive(Debug, Clone)]
enum WordMatcher {
    Word(ArgPattern),
    /// `**`: any number of words.
    AnyRun,
}

/// A rule's hold terms from its table's fields, with their defaults.
pub(super) fn hold_terms(
    approvals: Option<u32>,
    approvers: &[String],
    self_approval: Option<bool>,
    timeout: Duration,
    on_timeout: Option<OnTimeout>,
) -> super::HoldTerms {
    super::HoldTerms {
        approvals: approvals.unwrap_or(1),
        approvers: approvers.to_vec(),
        self_approval: self_approval.unwrap_or(true),
        timeout_secs: timeout.as_secs(),
        on_timeout: on_timeout.unwrap_or(OnTimeout::Deny),
        also_approvers: Vec::new(),
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    programs: Vec<ProgramMatcher>,
    subcommand: Vec<WordMatcher>,
    /// Each entry: alternative option names (as written; canonicalised per program).
    flags: Vec<Vec<String>>,
    flags_any: Vec<Vec<String>>,
    not_flags: Vec<Vec<String>>,
    /// Words (program first) of a parent running the same file whose own
    /// commands the rule leaves alone (`git stash` and its `git reset --hard`).
    not_run_by: Vec<Vec<String>>,
    options: Vec<(String, ArgPattern)>,
    args_all: Vec<ArgPattern>,
    args_any: Vec<ArgPattern>,
    paths: PathSet,
    paths_except: PathSet,
    sql: Vec<String>,
    env: Vec<(String, ArgPattern)>,
    cwd: PathSet,
    uid: Vec<u32>,
    agents: Vec<String>,
    pub action: Action,
    pub terms: super::HoldTerms,
    pub message: Option<String>,
}

impl Rule {
    pub fn compile(file: &RuleFile, default_timeout: Duration) -> Result<Self, String> {
        let id = &file.id;
        let fail = |what: String| format!("rule {id:?}: {what}");
        if id.is_empty() {
            return Err("a rule has an empty id".into());
        }
        if file.programs.is_empty() {
            return Err(fail("names no programs".into()));
        }
        let action = file.action.ok_or_else(|| fail("has no action".into()))?;
        let pattern = |p: &String| ArgPattern::parse(p).map_err(&fail);
        let globs = |p: &[String]| PathSet::parse(p).map_err(&fail);
        let alternatives = |list: &[String]| -> Vec<Vec<String>> {
            list.iter()
                .map(|f| f.split('|').map(str::to_string).collect())
                .collect()
        };
        for kind in &file.sql {
            if !sql::KINDS.contains(&kind.as_str()) {
                return Err(fail(format!(
                    "unknown sql kind {kind:?} (known: {})",
                    sql::KINDS.join(", ")
                )));
            }
        }
        if let Some(bad) = file.approvers.iter().find(|a| {
            !["user:", "group:", "key:"]
                .iter()
                .any(|p| a.starts_with(p) && a.len() > p.len())
        }) {
            return Err(fail(format!(
                "approver {bad:?} is not user:NAME, group:NAME or key:PRINCIPAL"
            )));
        }
        if file.approvals == Some(0) {
            return Err(fail("approvals must be at least 1".into()));
        }
        Ok(Self {
            id: id.clone(),
            description: file.description.clone(),
            programs: file
                .programs
                .iter()
                .map(|p| {
                    Ok(if p.contains('/') {
                        ProgramMatcher::Path(globs(std::slice::from_ref(p))?)
                    } else {
                        ProgramMatcher::Name(p.clone())
                    })
                })
                .collect::<Result<_, String>>()?,
            subcommand: file
                .subcommand
                .iter()
                .map(|w| {
                    Ok(if w == "**" {
                        WordMatcher::AnyRun
                    } else {
                        WordMatcher::Word(pattern(w)?)
                    })
                })
                .collect::<Result<_, String>>()?,
            flags: alternatives(&file.flags),
            flags_any: alternatives(&file.flags_any),
            not_flags: alternatives(&file.not_flags),
            not_run_by: file
                .not_run_by
                .iter()
                .map(|line| line.split_whitespace().map(str::to_string).collect())
                .collect(),
            options: file
                .options
                .iter()
                .map(|(k, v)| Ok((k.clone(), pattern(v)?)))
                .collect::<Result<_, String>>()?,
            args_all: file
                .args_all
                .iter()
                .map(pattern)
                .collect::<Result<_, _>>()?,
            args_any: file
                .args_any
                .iter()
                .map(pattern)
                .collect::<Result<_, _>>()?,
            paths: globs(&file.paths)?,
            paths_except: globs(&file.paths_except)?,
            sql: file.sql.clone(),
            env: file
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), pattern(v)?)))
                .collect::<Result<_, String>>()?,
            cwd: globs(&file.cwd)?,
            uid: file.uid.clone(),
            agents: file.agents.clone(),
            action,
            terms: hold_terms(
                file.approvals,
                &file.approvers,
                file.self_approval,
                file.timeout.unwrap_or(default_timeout),
                file.on_timeout,
            ),
            message: file.message.clone(),
        })
    }

    /// Program names this rule can apply to (for the kernel's watch list and the index).
    pub fn program_names(&self) -> impl Iterator<Item = &str> {
        self.programs.iter().filter_map(|p| match p {
            ProgramMatcher::Name(name) => Some(name.as_str()),
            ProgramMatcher::Path(_) => None,
        })
    }

    /// The plain words the subcommand may start with (`push` of `git push`).
    pub fn first_words(&self) -> impl Iterator<Item = &str> {
        self.subcommand
            .first()
            .into_iter()
            .flat_map(|first| match first {
                WordMatcher::Word(pattern) => Some(pattern.words()),
                WordMatcher::AnyRun => None,
            })
            .flatten()
    }

    /// Arguments one of which every command this rule matches has, as the
    /// kernel's argv prefilter tests them: those of the narrowest of its
    /// conditions that argv alone shows (a subcommand word, a flag, an
    /// option, an argument, an SQL option). Err says why none does.
    pub fn argv_atoms(&self, spec: &Spec) -> Result<Vec<Atom>, String> {
        let options = |names: &mut dyn Iterator<Item = &String>| -> Vec<Atom> {
            names
                .flat_map(|name| spec.option_atoms(&spec.canonical(name)))
                .collect()
        };
        let mut choices: Vec<Vec<Atom>> = Vec::new();
        choices.extend(self.subcommand.iter().filter_map(|element| match element {
            WordMatcher::Word(pattern) => pattern.atoms(),
            WordMatcher::AnyRun => None,
        }));
        choices.extend(self.flags.iter().map(|any| options(&mut any.iter())));
        if !self.flags_any.is_empty() {
            choices.push(options(&mut self.flags_any.iter().flatten()));
        }
        choices.extend(
            self.options
                .iter()
                .map(|(name, _)| options(&mut [name].into_iter())),
        );
        choices.extend(self.args_all.iter().filter_map(ArgPattern::atoms));
        if !self.args_any.is_empty() {
            let any: Option<Vec<Vec<Atom>>> = self.args_any.iter().map(ArgPattern::atoms).collect();
            choices.extend(any.map(|all| all.concat()));
        }
        if !self.sql.is_empty() {
            choices.extend(spec.sql_atoms());
        }
        choices
            .into_iter()
            .min_by_key(|atoms| atoms.iter().map(Atom::breadth).sum::<u32>())
            .ok_or_else(|| {
                format!(
                    "rule {} matches on what argv alone does not show ({})",
                    self.id,
                    self.unseen_conditions().join(", ")
                )
            })
    }

    /// The conditions of this rule the argv prefilter cannot test.
    fn unseen_conditions(&self) -> Vec<&'static str> {
        let mut unseen = Vec::new();
        let has = |present: bool, name: &'static str, list: &mut Vec<&'static str>| {
            if present {
                list.push(name);
            }
        };
        has(
            self.subcommand
                .iter()
                .any(|w| !matches!(w, WordMatcher::AnyRun)),
            "subcommand globs",
            &mut unseen,
        );
        has(
            !self.args_all.is_empty() || !self.args_any.is_empty(),
            "argument globs",
            &mut unseen,
        );
        has(
            !self.paths.is_empty() || !self.paths_except.is_empty(),
            "paths",
            &mut unseen,
        );
        has(
            !self.sql.is_empty(),
            "SQL that may be a positional argument",
            &mut unseen,
        );
        has(!self.env.is_empty(), "environment", &mut unseen);
        has(!self.cwd.is_empty(), "cwd", &mut unseen);
        has(!self.uid.is_empty(), "uid", &mut unseen);
        has(!self.agents.is_empty(), "agent", &mut unseen);
        if unseen.is_empty() {
            unseen.push("the program alone");
        }
        unseen
    }

    /// Path-glob program entries: their basenames are unknown up front.
    pub fn has_path_programs(&self) -> bool {
        self.programs
            .iter()
            .any(|p| matches!(p, ProgramMatcher::Path(_)))
    }

    /// Why the rule matches `command`, or None.
    pub fn matches(&self, judged: &Judged<'_>) -> Option<Vec<String>> {
        let Judged {
            command,
            spec,
            parsed,
            paths,
            ..
        } = judged;
        let mut why = Vec::new();

        let program = self.programs.iter().find_map(|p| match p {
            ProgramMatcher::Name(name) => (*name == command.program
                || command
                    .exe
                    .as_deref()
                    .is_some_and(|exe| basename(exe) == name))
            .then(|| name.clone()),
            ProgramMatcher::Path(glob) => command
                .exe
                .iter()
                .chain(command.argv.first())
                .find(|p| p.starts_with('/') && glob.matches(Path::new(p), paths))
                .cloned(),
        })?;
        why.push(format!("program {program}"));

        if !self.subcommand.is_empty() {
            if !prefix_matches(&self.subcommand, &parsed.words) {
                return None;
            }
            why.push(format!(
                "subcommand {}",
                parsed
                    .words
                    .iter()
                    .take(self.subcommand.len())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let has_flag = |alternatives: &Vec<String>| -> Option<String> {
            alternatives
                .iter()
                .map(|f| spec.canonical(f))
                .find(|f| parsed.flags.contains(f))
                .map(|f| match parsed.abbreviated.contains(&f) {
                    true => format!("{f} (abbreviated)"),
                    false => f,
                })
        };
        for alternatives in &self.flags {
            why.push(format!("flag {}", has_flag(alternatives)?));
        }
        if !self.flags_any.is_empty() {
            why.push(format!(
                "flag {}",
                self.flags_any.iter().find_map(has_flag)?
            ));
        }
        // An abbreviation the program may read otherwise never lets a command
        // through, nor a value that may turn the flag off (`--dry-run=false`,
        // kubectl's `--dry-run=none`).
        let affirmed = |f: &String| {
            (parsed.options.iter())
                .filter(|(name, _)| name == f)
                .all(|(_, value)| AFFIRMATIVE.contains(&value.as_str()))
        };
        let written_in_full = |alternatives: &Vec<String>| {
            alternatives.iter().map(|f| spec.canonical(f)).any(|f| {
                parsed.flags.contains(&f) && !parsed.abbreviated.contains(&f) && affirmed(&f)
            })
        };
        if self.not_flags.iter().any(written_in_full) {
            return None;
        }
        if self.run_by_exempt_parent(judged) {
            return None;
        }
        for (name, value) in &self.options {
            let name = spec.canonical(name);
            let found = parsed
                .options
                .iter()
                .find(|(n, v)| *n == name && value.matches(v))?;
            why.push(format!("option {}={}", found.0, found.1));
        }
        let args = &command.argv[command.argv.len().min(1)..];
        for pattern in &self.args_all {
            why.push(format!(
                "argument {}",
                args.iter().find(|a| pattern.matches(a))?
            ));
        }
        if !self.args_any.is_empty() {
            let found = args
                .iter()
                .find(|a| self.args_any.iter().any(|p| p.matches(a)))?;
            why.push(format!("argument {found}"));
        }
        if !self.paths.is_empty() || !self.paths_except.is_empty() {
            let resolved = judged.resolved_words();
            let skip = self.subcommand.len().min(resolved.len());
            // Any spelling of a word (lexical, or through its symlinks) may hit.
            let hit = resolved[skip..].iter().flatten().find(|path| {
                (self.paths.is_empty() || self.paths.matches(path, paths))
                    && !self.paths_except.matches(path, paths)
            })?;
            why.push(format!("path {}", hit.display()));
        }
        if !self.sql.is_empty() {
            let found = parsed
                .sql
                .iter()
                .flat_map(|text| sql::classify(text))
                .find(|kind| self.sql.iter().any(|k| k == kind))?;
            why.push(format!("sql {found}"));
        }
        for (name, pattern) in &self.env {
            let value = command.env_var(name).filter(|v| pattern.matches(v))?;
            why.push(format!("env {name}={value}"));
        }
        if !self.cwd.is_empty() {
            if !self.cwd.matches(&paths.cwd, paths) {
                return None;
            }
            why.push(format!("cwd {}", paths.cwd.display()));
        }
        if !self.uid.is_empty() {
            let uid = command.uid.filter(|uid| self.uid.contains(uid))?;
            why.push(format!("uid {uid}"));
        }
        if !self.agents.is_empty() {
            let agent = command
                .agent
                .as_deref()
                .filter(|a| self.agents.iter().any(|x| x == a))?;
            why.push(format!("agent {agent}"));
        }
        Some(why)
    }

    /// Whether matching reads more than the command line and executable:
    /// the cwd and HOME (paths, `~` in program globs), the environment or the uid.
    pub fn reads_context(&self) -> bool {
        !self.paths.is_empty()
            || !self.paths_except.is_empty()
            || !self.cwd.is_empty()
            || !self.env.is_empty()
            || !self.uid.is_empty()
            || !self.not_run_by.is_empty()
            || self
                .programs
                .iter()
                .any(|p| matches!(p, ProgramMatcher::Path(_)))
    }

    /// Whether the command's parent runs the same file as one of the
    /// `not_run_by` commands (its words parsed as the program's own).
    fn run_by_exempt_parent(&self, judged: &Judged<'_>) -> bool {
        let Some(parent) = judged.command.run_by.as_deref() else {
            return false;
        };
        let words = judged.spec.parse(parent.get(1..).unwrap_or_default()).words;
        self.not_run_by.iter().any(|exempt| {
            exempt.first() == Some(&judged.command.program)
                && words.len() >= exempt.len() - 1
                && exempt[1..].iter().zip(&words).all(|(a, b)| a == b)
        })
    }

    /// Every option name the rule mentions, as written (for prefix expansion).
    pub fn option_names(&self) -> impl Iterator<Item = &str> {
        (self.flags.iter())
            .chain(&self.flags_any)
            .chain(&self.not_flags)
            .flatten()
            .map(String::as_str)
            .chain(self.options.iter().map(|(name, _)| name.as_str()))
    }

    /// Environment variable names the rule reads.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env.iter().map(|(name, _)| name.as_str())
    }
}

/// A command prepared for judging: parsed once, shared by every rule.
pub struct Judged<'a> {
    pub command: &'a CommandContext,
    pub spec: &'a Spec,
    pub parsed: ParsedArgs,
    pub paths: PathContext,
    resolved: OnceCell<Vec<Vec<PathBuf>>>,
}

impl<'a> Judged<'a> {
    pub fn new(command: &'a CommandContext, spec: &'a Spec) -> Self {
        Self {
            parsed: spec.parse(command.argv.get(1..).unwrap_or_default()),
            paths: PathContext::new(
                Path::new(command.cwd.as_deref().unwrap_or("/")),
                command.env_var("HOME").map(Path::new),
            ),
            command,
            spec,
            resolved: OnceCell::new(),
        }
    }

    /// The non-option words as absolute paths, resolved on first use.
    /// Each non-option word as absolute paths, resolved on first use: the
    /// lexical path and, with a root to look through, the path with its
    /// directories' symlinks followed and the one with the last one too
    /// (`rm -rf link/` deletes what the link points to).
    fn resolved_words(&self) -> &[Vec<PathBuf>] {
        self.resolved.get_or_init(|| {
            self.parsed
                .words
                .iter()
                .map(|w| {
                    let lexical = resolve(w, &self.paths);
                    let mut forms = vec![lexical.clone()];
                    if let Some(root) = &self.command.root {
                        for form in follow_links(&lexical, Path::new(root)) {
                            if !forms.contains(&form) {
                                forms.push(form);
                            }
                        }
                    }
                    forms
                })
                .collect()
        })
    }
}

fn prefix_matches(pattern: &[WordMatcher], words: &[String]) -> bool {
    match pattern.split_first() {
        None => true,
        Some((WordMatcher::AnyRun, rest)) => {
            (0..=words.len()).any(|skip| prefix_matches(rest, &words[skip..]))
        }
        Some((WordMatcher::Word(p), rest)) => {
            words.first().is_some_and(|w| p.matches(w)) && prefix_matches(rest, &words[1..])
        }
    }
}
