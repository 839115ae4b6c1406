//! `[[protect]]`: paths whose destructive file operations by session
//! processes are held, denied or audited (the syscall gate). A pattern names
//! a root; the root and everything below it are protected. `~` is the home of
//! the user the session runs as.
mod matching;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use guard_common::{
    GATE_CHMOD, GATE_CHOWN, GATE_RENAME, GATE_RMDIR, GATE_TRUNCATE, GATE_UNLINK, GATE_WRITE,
};
use serde::Deserialize;

use super::{Action, HoldTerms};
pub use matching::{
    fallback_root, literal_path, matcher, splits, unprotected_anywhere, Places, Protected,
    ProtectedSet,
};

/// The operations the gate sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Unlink,
    Rmdir,
    Rename,
    Truncate,
    /// open/openat/openat2/creat for writing, creating or truncating.
    Write,
    Chmod,
    Chown,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Self::Unlink,
        Self::Rmdir,
        Self::Rename,
        Self::Truncate,
        Self::Write,
        Self::Chmod,
        Self::Chown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Unlink => "unlink",
            Self::Rmdir => "rmdir",
            Self::Rename => "rename",
            Self::Truncate => "truncate",
            Self::Write => "write",
            Self::Chmod => "chmod",
            Self::Chown => "chown",
        }
    }

    /// The operation's `GATE_*` bit, as the kernel programs and the
    /// report-only calls carry it.
    pub const fn gate_bit(self) -> u32 {
        match self {
            Self::Unlink => GATE_UNLINK,
            Self::Rmdir => GATE_RMDIR,
            Self::Rename => GATE_RENAME,
            Self::Truncate => GATE_TRUNCATE,
            Self::Write => GATE_WRITE,
            Self::Chmod => GATE_CHMOD,
            Self::Chown => GATE_CHOWN,
        }
    }

    /// The first operation (in `ALL` order) whose bit `bits` has.
    pub fn of_gate_bits(bits: u32) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|operation| bits & operation.gate_bit() != 0)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectFile {
    pub id: String,
    /// In a later file: removes the entry of this id.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub paths: Vec<String>,
    /// Paths below `paths` left out (tool caches, `known_hosts`): they and
    /// everything below them are not gated by this entry.
    #[serde(default)]
    pub except: Vec<String>,
    /// Applies only where no other entry protects the path, one request per
    /// top directory (see `Protection::fallback`).
    #[serde(default)]
    pub fallback: bool,
    /// hold (default), deny or audit.
    #[serde(default)]
    pub action: Option<Action>,
    /// Default: every operation.
    #[serde(default)]
    pub operations: Option<Vec<Operation>>,
    #[serde(default)]
    pub approvals: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Protection {
    pub id: String,
    /// As written (with `~`); globs are allowed.
    pub paths: Vec<String>,
    /// As written; not gated by this entry. `{workspace}` is the session's
    /// working tree.
    pub except: Vec<String>,
    /// A catch-all such as "everything outside the workspace": it applies
    /// only where no other entry protects the path, and its requests are
    /// grouped by the outermost directory above the path that holds no home,
    /// workspace, except path or other entry's root (so one approval never
    /// opens all of `/`).
    pub fallback: bool,
    pub action: Action,
    pub operations: Vec<Operation>,
    /// What its holds need: approvals and timeout from the entry, the rest fixed.
    pub terms: HoldTerms,
    pub message: Option<String>,
}

impl ProtectFile {
    pub fn compile(&self, default_timeout: Duration) -> Result<Protection, String> {
        let fail = |what: String| format!("protect {:?}: {what}", self.id);
        if self.id.is_empty() {
            return Err("a [[protect]] entry has an empty id".into());
        }
        if self.paths.is_empty() {
            return Err(fail("no paths".into()));
        }
        if let Some(path) = self.paths.iter().find(|p| p.starts_with(WORKSPACE)) {
            return Err(fail(format!(
                "path {path:?}: {WORKSPACE} can only be left out (in except)"
            )));
        }
        for path in self.paths.iter().chain(&self.except) {
            let workspace = path == WORKSPACE
                || path
                    .strip_prefix(WORKSPACE)
                    .is_some_and(|rest| rest.starts_with('/'));
            if !(workspace || path.starts_with('/') || path == "~" || path.starts_with("~/")) {
                return Err(fail(format!(
                    "path {path:?} must be absolute or start with ~/ or {WORKSPACE}/"
                )));
            }
            let glob = path.strip_prefix(WORKSPACE).unwrap_or(path);
            globset::Glob::new(glob).map_err(|err| fail(format!("path {path:?}: {err}")))?;
        }
        let action = self.action.unwrap_or(Action::Hold);
        if action == Action::Allow {
            return Err(fail(
                "action allow protects nothing; remove the entry".into(),
            ));
        }
        Ok(Protection {
            id: self.id.clone(),
            paths: self.paths.clone(),
            except: self.except.clone(),
            fallback: self.fallback,
            action,
            operations: self
                .operations
                .clone()
                .unwrap_or_else(|| Operation::ALL.to_vec()),
            terms: HoldTerms::gate(
                self.approvals.unwrap_or(1),
                self.timeout.unwrap_or(default_timeout),
            ),
            message: self.message.clone(),
        })
    }
}

/// In `except`: the working tree of the session the call comes from (see
/// `crate::guard` sessions: the git work tree around the session's first cwd,
/// or that cwd; none when that is `/` or the home directory).
pub const WORKSPACE: &str = "{workspace}";

/// The id of the built-in entry that protects guardd's own files (see
/// `Policy::with_self_protection`).
pub const SELF_ID: &str = "agent-guard-self";

/// A glob that matches `path` and nothing else (`[`, `*`, ... escaped).
pub fn literal_glob(path: &Path) -> String {
    let mut glob = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => {
                glob.push('[');
                glob.push(c);
                glob.push(']');
            }
            _ => glob.push(c),
        }
    }
    glob
}

impl super::Policy {
    /// Adds the built-in `agent-guard-self` entry: session processes may not
    /// change guardd's own files (`paths`: its config, `policy.d`, pins,
    /// state, audit log, socket), wherever the flags put them. It is added
    /// after every layer, so no layer removes or overrides it; a layer that
    /// defines the id is refused.
    pub fn with_self_protection(mut self, paths: &[PathBuf]) -> Result<Self, super::PolicyError> {
        if self.protections.iter().any(|p| p.id == SELF_ID) {
            return Err(super::PolicyError::Invalid {
                origin: self.source.clone(),
                message: format!(
                    "[[protect]] id {SELF_ID:?} is reserved for guardd's own files; use another id"
                ),
            });
        }
        self.protections.push(Protection {
            id: SELF_ID.into(),
            paths: paths.iter().map(|p| literal_glob(p)).collect(),
            except: Vec::new(),
            fallback: false,
            action: Action::Deny,
            operations: Operation::ALL.to_vec(),
            terms: HoldTerms::gate(1, self.hold_timeout),
            message: Some(
                "agent-guard's own files (policy, policy.d, pins, state, audit log, socket) \
                 cannot be changed from inside an agent session"
                    .into(),
            ),
        });
        Ok(self)
    }
}

#[cfg(test)]
mod tests;
