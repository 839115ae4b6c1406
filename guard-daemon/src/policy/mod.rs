//! Policy: which processes start agent sessions, and what happens when a
//! program in a session is exec'd. Pure code: no kernel, no I/O beyond
//! reading policy files, so it is tested without root.
//!
//! A policy is built from layers: the embedded default pack (unless the main
//! file says `base = "none"`), the main file, then `policy.d/*.toml` beside it
//! in file-name order. Later layers extend agent lists, override defaults and
//! specs, and replace (or, with `disabled = true`, remove) rules by id.
pub mod api;
mod aws_alias;
mod command;
mod elsewhere;
pub(crate) mod file;
mod files;
pub mod fleet;
mod git_config;
mod load;
mod matcher;
mod moves;
pub mod notify;
mod paths;
pub mod prefilter;
pub mod protect;
mod renames;
mod rule;
mod settings;
mod shell_line;
mod spec;
mod sql;
mod terraform_plan;
pub(crate) mod wrappers;

use std::{collections::HashMap, time::Duration};

pub use command::{basename, CommandContext};
/// The policy's types that the control socket carries, in guard-protocol.
pub use guard_protocol::{Action, Explanation, HoldTerms, LocalAuth, OnTimeout};
pub use matcher::ArgPattern;
use rule::Judged;
pub use rule::Rule;
pub use settings::{Agents, ApprovalSettings, EscapeMode, GateMode};
use spec::Spec;

/// No rule matched `program` (a command, or an API call as described).
pub fn allowed(program: String) -> Explanation {
    Explanation {
        action: Action::Allow,
        rule: None,
        program,
        matched: Vec::new(),
        why: Vec::new(),
        message: None,
        terms: HoldTerms::none(),
        terms_from: Vec::new(),
        kernel: None,
    }
}

/// The policy compiled into guardd, used when no `--config` is given.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");
pub const SCHEMA_VERSION: u32 = 1;

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

#[derive(Debug, Clone)]
pub struct Policy {
    /// The files it was built from, in order.
    pub source: String,
    /// Pack label and a digest of every layer's text.
    pub version: String,
    pub agents: Agents,
    pub approvals: ApprovalSettings,
    pub notify: notify::NotifySettings,
    /// `[fleet]`: the relay guardd joins, if any.
    pub fleet: Option<fleet::FleetSettings>,
    pub rules: Vec<Rule>,
    /// `[[protect]]`: paths the syscall gate guards.
    pub protections: Vec<protect::Protection>,
    /// `[[api]]`: rules of the API-client gate.
    pub api_rules: Vec<api::ApiRule>,
    /// `[defaults] hold_timeout`.
    pub hold_timeout: Duration,
    /// `[defaults] syscall_gate`.
    pub syscall_gate: GateMode,
    /// `[defaults] session_escape`.
    pub session_escape: EscapeMode,
    /// `[defaults] program_dirs`: more places watched programs are installed.
    pub program_dirs: Vec<std::path::PathBuf>,
    specs: HashMap<String, Spec>,
    /// Program name -> indices of the rules naming it.
    by_program: HashMap<String, Vec<usize>>,
    /// Rules with path-glob programs: checked for every command.
    path_rules: Vec<usize>,
}

impl Policy {
    fn spec_for(&self, program: &str) -> &Spec {
        static EMPTY: std::sync::OnceLock<Spec> = std::sync::OnceLock::new();
        self.specs
            .get(program)
            .unwrap_or_else(|| EMPTY.get_or_init(Spec::default))
    }

    /// Program names whose exec in a session must stop for a decision: those
    /// a rule can do more than allow, the dashed forms of git's subcommands
    /// they name (`git-push`, run from git's libexec), and the wrappers.
    pub fn watched_programs(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.action != Action::Allow) {
            for program in rule.program_names() {
                names.push(program.to_string());
                if program == wrappers::DASHED {
                    names.extend(rule.first_words().map(|w| format!("{program}-{w}")));
                }
            }
        }
        // A wrapper runs its program without an exec the kernel could stop;
        // ssh, docker and kubectl run theirs where no exec is seen.
        if !names.is_empty() {
            names.extend(wrappers::names().map(str::to_string));
            names.extend(elsewhere::programs().map(str::to_string));
            names.extend(renames::PROGRAMS.iter().map(|name| name.to_string()));
        }
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
            .chain(git_config::ENV.iter().copied())
            .chain(aws_alias::ENV.iter().copied())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Judges a command. Precedence: a matching `allow` rule wins (a narrow
    /// carve-out); otherwise the most severe matching rule (deny > hold >
    /// audit); no match is allow.
    ///
    /// A wrapper's command (`busybox rm -rf x`, `git-push -f`) is judged as
    /// the command it runs, and as itself where a rule names the wrapper:
    /// the more severe decision stands.
    ///
    /// A command that runs others elsewhere (`ssh host CMD`, `docker exec`,
    /// `kubectl exec -- CMD`) is judged with each of them too.
    pub fn judge(&self, command: &CommandContext) -> Explanation {
        self.judge_nested(command, 0)
    }

    fn judge_nested(&self, command: &CommandContext, depth: usize) -> Explanation {
        let mut decision = self.judge_one(command);
        let inner = wrappers::unwrap(command);
        if let Some(inner) = &inner {
            let judged = self.judge_one(inner);
            if judged.action >= decision.action {
                decision = judged;
            }
        }
        let command = inner.as_ref().unwrap_or(command);
        if depth < 3 {
            // What it runs elsewhere, or by its configuration or an alias.
            let others = elsewhere::commands(command)
                .into_iter()
                .chain(git_config::configured_push(command, self.spec_for("git")))
                .chain(aws_alias::expand(command, self.spec_for("aws")))
                .chain(moves::deletes(command, |rm| {
                    self.judge_one(rm).action == Action::Allow
                }));
            for elsewhere in others {
                let judged = self.judge_nested(&elsewhere.command, depth + 1);
                if judged.action > decision.action {
                    decision = via(judged, &elsewhere);
                }
            }
            // A saved plan's deletes: shown, and with the destroy's terms,
            // even where the apply is held already.
            if let Some(plan) = terraform_plan::destroys(command, self.spec_for(&command.program)) {
                let judged = self.judge_nested(&plan.command, depth + 1);
                if judged.action >= decision.action {
                    decision = via(judged, &plan);
                }
            }
        }
        decision
    }

    fn judge_one(&self, command: &CommandContext) -> Explanation {
        let judged = Judged::new(command, self.spec_for(&command.program));
        let candidates = self.candidates(&command.program, command.exe.as_deref());
        let mut matched: Vec<&Rule> = Vec::new();
        let mut decisive: Option<(&Rule, Vec<String>)> = None;
        for rule in candidates.into_iter().map(|at| &self.rules[at]) {
            let Some(why) = rule.matches(&judged) else {
                continue;
            };
            matched.push(rule);
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
        let Some((rule, why)) = decisive else {
            return allowed(command.program.clone());
        };
        // A hold needs what every matching hold rule asks, not only the
        // first one's: adding a stricter rule never weakens a hold.
        let mut terms = rule.terms.clone();
        let mut terms_from = Vec::new();
        if rule.action == Action::Hold {
            let holds = matched.iter().filter(|r| r.action == Action::Hold);
            for other in holds.clone().filter(|r| r.id != rule.id) {
                terms.tighten(&other.terms);
            }
            if holds.clone().count() > 1 {
                terms_from = holds.map(|r| r.id.clone()).collect();
            }
        }
        Explanation {
            action: rule.action,
            rule: Some(rule.id.clone()),
            program: command.program.clone(),
            matched: matched.iter().map(|r| r.id.clone()).collect(),
            why,
            message: rule.message.clone(),
            terms,
            terms_from,
            kernel: None,
        }
    }

    /// Judges an API call by the `[[api]]` rules, with the precedence of
    /// `judge`: a matching allow wins, else the most severe; the terms of
    /// a hold are the strictest of every matching hold rule.
    pub fn judge_api(&self, call: &api::ApiCall) -> Explanation {
        let matched: Vec<(&api::ApiRule, Vec<String>)> = self
            .api_rules
            .iter()
            .filter_map(|rule| Some((rule, rule.matches(call)?)))
            .collect();
        let decisive = matched
            .iter()
            .find(|(rule, _)| rule.action == Action::Allow)
            .or_else(|| matched.iter().max_by_key(|(rule, _)| rule.action));
        let program = call.describe();
        let Some((rule, why)) = decisive else {
            return allowed(program);
        };
        let mut terms = rule.terms.clone();
        let holds: Vec<&api::ApiRule> = matched
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| r.action == Action::Hold)
            .collect();
        if rule.action == Action::Hold {
            for other in holds.iter().filter(|r| r.id != rule.id) {
                terms.tighten(&other.terms);
            }
        }
        Explanation {
            action: rule.action,
            rule: Some(rule.id.clone()),
            program,
            matched: matched.iter().map(|(r, _)| r.id.clone()).collect(),
            why: why.clone(),
            message: rule.message.clone(),
            terms,
            terms_from: if holds.len() > 1 && rule.action == Action::Hold {
                holds.iter().map(|r| r.id.clone()).collect()
            } else {
                Vec::new()
            },
            kernel: None,
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
        wrappers::is_wrapper(program, exe)
            || git_config::reads(program)
            || aws_alias::reads(program)
            || terraform_plan::reads(program)
            || moves::reads(program)
            || self
                .candidates(program, exe)
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

/// `judged`, the explanation of what `elsewhere` runs, saying so first.
fn via(mut judged: Explanation, elsewhere: &elsewhere::Elsewhere) -> Explanation {
    let argv = shlex::try_join(elsewhere.command.argv.iter().map(String::as_str))
        .unwrap_or_else(|_| elsewhere.command.argv.join(" "));
    judged
        .why
        .insert(0, format!("runs via {}: {argv}", elsewhere.via));
    judged
}

#[cfg(test)]
mod tests;
