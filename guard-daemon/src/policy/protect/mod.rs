//! `[[protect]]`: paths whose destructive file operations by session
//! processes are held, denied or audited (the syscall gate). A pattern names
//! a root; the root and everything below it are protected. `~` is the home of
//! the user the session runs as.
use std::{
    path::{Component, Path, PathBuf},
    time::Duration,
};

use guard_common::{
    GATE_CHMOD, GATE_CHOWN, GATE_RENAME, GATE_RMDIR, GATE_TRUNCATE, GATE_UNLINK, GATE_WRITE,
};
use serde::Deserialize;

use super::Action;

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
    /// As written; not gated by this entry.
    pub except: Vec<String>,
    pub action: Action,
    pub operations: Vec<Operation>,
    pub approvals: u32,
    pub timeout: Duration,
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
        for path in self.paths.iter().chain(&self.except) {
            if !(path.starts_with('/') || path == "~" || path.starts_with("~/")) {
                return Err(fail(format!(
                    "path {path:?} must be absolute or start with ~/"
                )));
            }
            globset::Glob::new(path).map_err(|err| fail(format!("path {path:?}: {err}")))?;
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
            action,
            operations: self
                .operations
                .clone()
                .unwrap_or_else(|| Operation::ALL.to_vec()),
            approvals: self.approvals.unwrap_or(1).max(1),
            timeout: self.timeout.unwrap_or(default_timeout),
            message: self.message.clone(),
        })
    }
}

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
            action: Action::Deny,
            operations: Operation::ALL.to_vec(),
            approvals: 1,
            timeout: self.hold_timeout,
            message: Some(
                "agent-guard's own files (policy, policy.d, pins, state, audit log, socket) \
                 cannot be changed from inside an agent session"
                    .into(),
            ),
        });
        Ok(self)
    }
}

/// The protections with `~` made concrete for one home directory.
pub struct ProtectedSet {
    /// Every entry's paths in one set (one pass per path prefix, whatever
    /// the number of entries)...
    globs: globset::GlobSet,
    /// ...and per glob of `globs`, the protection it belongs to.
    owners: Vec<usize>,
    /// Whether some entry names `/` itself.
    root_named: bool,
    /// Whether `agent-guard-self` is among the protections.
    has_own: bool,
    /// Per protection: its `except` paths.
    excepts: Vec<Vec<globset::GlobMatcher>>,
}

/// `pattern` with `~` made `home`, as a matcher of whole paths.
fn matcher(pattern: &str, home: &Path) -> Option<globset::GlobMatcher> {
    glob(pattern, home).map(|glob| glob.compile_matcher())
}

/// `pattern` with `~` made `home`, as a glob of whole paths.
fn glob(pattern: &str, home: &Path) -> Option<globset::Glob> {
    let expanded = match pattern.strip_prefix('~') {
        Some(rest) => format!("{}{rest}", home.display()),
        None => pattern.to_string(),
    };
    let expanded = expanded.trim_end_matches('/');
    let expanded = if expanded.is_empty() { "/" } else { expanded };
    globset::GlobBuilder::new(expanded)
        .literal_separator(true)
        .build()
        .ok()
}

/// A protected path: which protection, and the root it protects.
#[derive(Debug, Clone, PartialEq)]
pub struct Protected {
    pub protection: usize,
    pub root: PathBuf,
}

/// Deepest directory nesting the gate walks (the kernel's own limit on
/// path length keeps real paths far below it).
const MAX_DEPTH: usize = 256;

impl ProtectedSet {
    pub fn new(protections: &[Protection], home: &Path) -> Self {
        let mut builder = globset::GlobSetBuilder::new();
        let (mut owners, mut root_named) = (Vec::new(), false);
        for (at, protection) in protections.iter().enumerate() {
            for path in &protection.paths {
                if let Some(glob) = glob(path, home) {
                    root_named |= glob.glob() == "/";
                    builder.add(glob);
                    owners.push(at);
                }
            }
        }
        let globs = builder.build().unwrap_or_else(|err| {
            tracing::error!("[[protect]] paths: {err}");
            owners.clear();
            globset::GlobSet::empty()
        });
        let excepts = protections
            .iter()
            .map(|p| p.except.iter().filter_map(|e| matcher(e, home)).collect())
            .collect();
        Self {
            globs,
            owners,
            root_named,
            has_own: protections.iter().any(|p| p.id == SELF_ID),
            excepts,
        }
    }

    /// Whether `path` is at or below one of the `except` paths of protection `at`.
    fn excepted(&self, at: usize, path: &Path) -> bool {
        let excepts = &self.excepts[at];
        !excepts.is_empty()
            && path
                .ancestors()
                .take(MAX_DEPTH)
                .any(|prefix| excepts.iter().any(|e| e.is_match(prefix)))
    }

    /// The outermost protected root at or above `path` (absolute, resolved)
    /// whose protection covers `operation`. `agent-guard-self` comes first:
    /// guardd's files under `/etc` are denied by it, not held by an entry
    /// protecting all of `/etc`.
    pub fn find(
        &self,
        protections: &[Protection],
        path: &Path,
        operation: Operation,
    ) -> Option<Protected> {
        let mut prefix = PathBuf::new();
        let mut hits = Vec::new();
        let mut outermost = None;
        for component in path.components().take(MAX_DEPTH) {
            prefix.push(component);
            if matches!(component, Component::RootDir) && path != Path::new("/") {
                // "/" itself is only protected when named as such.
                if !self.root_named {
                    continue;
                }
            }
            self.globs.matches_into(&prefix, &mut hits);
            let (mut first, mut own) = (None::<usize>, false);
            for at in hits.iter().map(|hit| self.owners[*hit]) {
                if protections[at].operations.contains(&operation) && !self.excepted(at, path) {
                    if protections[at].id == SELF_ID {
                        own = true;
                        first = Some(at);
                        break;
                    }
                    // The first protection in policy order, as for rules.
                    first = Some(first.map_or(at, |f| f.min(at)));
                }
            }
            if let Some(at) = first.filter(|_| own || outermost.is_none()) {
                let found = Protected {
                    protection: at,
                    root: prefix.clone(),
                };
                if own || !self.has_own {
                    return Some(found);
                }
                outermost = Some(found);
            }
        }
        outermost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_own_gate_bit() {
        let mut seen = 0;
        for operation in Operation::ALL {
            let bit = operation.gate_bit();
            assert_eq!(bit.count_ones(), 1, "{operation:?}");
            assert_eq!(seen & bit, 0, "{operation:?} shares a bit");
            seen |= bit;
            assert_eq!(Operation::of_gate_bits(bit), Some(operation));
        }
        assert_eq!(Operation::of_gate_bits(guard_common::ESCAPE_CONNECT), None);
        assert_eq!(Operation::of_gate_bits(0), None);
    }

    fn protections(text: &str) -> Vec<Protection> {
        #[derive(Deserialize)]
        struct File {
            protect: Vec<ProtectFile>,
        }
        let file: File = toml::from_str(text).unwrap();
        file.protect
            .iter()
            .map(|p| p.compile(Duration::from_secs(60)).unwrap())
            .collect()
    }

    #[test]
    fn roots_protect_everything_below_them() {
        let list = protections(
            r#"
[[protect]]
id = "ssh"
paths = ["~/.ssh"]
[[protect]]
id = "etc"
paths = ["/etc"]
operations = ["unlink", "rename"]
[[protect]]
id = "prod"
paths = ["/srv/*/prod"]
action = "deny"
"#,
        );
        let set = ProtectedSet::new(&list, Path::new("/home/dev"));
        let find = |path: &str, op| set.find(&list, Path::new(path), op);
        let ssh = find("/home/dev/.ssh/id_ed25519", Operation::Unlink).unwrap();
        assert_eq!(
            (ssh.protection, ssh.root.as_path()),
            (0, Path::new("/home/dev/.ssh"))
        );
        assert_eq!(
            find("/home/dev/.ssh", Operation::Rmdir).unwrap().protection,
            0
        );
        assert_eq!(find("/home/dev/.sshx/a", Operation::Unlink), None);
        assert_eq!(find("/home/other/.ssh/a", Operation::Unlink), None);
        assert_eq!(
            find("/etc/passwd", Operation::Rename).unwrap().protection,
            1
        );
        assert_eq!(
            find("/etc/passwd", Operation::Write),
            None,
            "not an operation it lists"
        );
        let prod = find("/srv/app/prod/data/x", Operation::Write).unwrap();
        assert_eq!(prod.root, Path::new("/srv/app/prod"));
        assert_eq!(find("/srv/app/staging/x", Operation::Write), None);
        assert_eq!(find("/tmp/x", Operation::Unlink), None);
    }

    #[test]
    fn except_paths_are_left_out_with_everything_below_them() {
        let list = protections(
            r#"
[[protect]]
id = "kube"
paths = ["~/.kube"]
except = ["~/.kube/cache", "~/.kube/*.lock"]
"#,
        );
        let set = ProtectedSet::new(&list, Path::new("/home/dev"));
        let find = |path: &str| set.find(&list, Path::new(path), Operation::Write);
        assert!(find("/home/dev/.kube/config").is_some());
        assert!(find("/home/dev/.kube").is_some());
        assert_eq!(find("/home/dev/.kube/cache"), None);
        assert_eq!(find("/home/dev/.kube/cache/discovery/x.json"), None);
        assert_eq!(find("/home/dev/.kube/config.lock"), None);
        assert!(find("/home/dev/.kube/cachex").is_some());
    }

    #[test]
    fn the_default_pack_protects_what_runs_later_outside_the_session() {
        let policy = crate::policy::Policy::embedded_default();
        let list = &policy.protections;
        let set = ProtectedSet::new(list, Path::new("/home/dev"));
        let id = |path: &str, op| {
            set.find(list, Path::new(path), op)
                .map(|found| list[found.protection].id.as_str())
        };
        for path in [
            "/home/dev/.bashrc",
            "/home/dev/.bash_profile",
            "/home/dev/.profile",
            "/home/dev/.bash_logout",
            "/home/dev/.zshrc",
            "/home/dev/.zshenv",
            "/home/dev/.config/fish/config.fish",
            "/home/dev/.config/fish/conf.d/x.fish",
            "/home/dev/.config/systemd/user/evil.service",
            "/home/dev/.config/systemd/user/default.target.wants/evil.service",
            "/home/dev/.local/share/systemd/user/evil.timer",
            "/home/dev/.config/autostart/evil.desktop",
            "/home/dev/.config/environment.d/10-path.conf",
            "/home/dev/.pam_environment",
            "/home/dev/.xsessionrc",
            "/var/spool/cron/crontabs/dev",
            "/home/dev/.gitconfig",
            "/home/dev/.config/git/config",
            "/home/dev/project/.git/hooks/pre-commit",
            "/home/dev/other/repo/.git/hooks/post-checkout",
            "/srv/repo/.git/hooks/pre-push",
        ] {
            assert_eq!(id(path, Operation::Write), Some("runs-later"), "{path}");
            assert_eq!(id(path, Operation::Rename), Some("runs-later"), "{path}");
        }
        assert_eq!(
            id("/home/dev/.ssh/authorized_keys", Operation::Write),
            Some("credentials")
        );
        assert_eq!(id("/etc/profile.d/x.sh", Operation::Write), Some("system"));
        for path in [
            "/home/dev/.bash_history",
            "/home/dev/.config/fish/fish_variables",
            "/home/dev/.config/git/gitk",
            "/home/dev/project/.git/hooks/pre-commit.sample",
            "/home/dev/project/.git/config",
            "/home/dev/project/src/main.rs",
            "/home/dev/.bashrc.orig",
        ] {
            assert_eq!(id(path, Operation::Write), None, "{path}");
        }
    }

    #[test]
    fn guardd_own_files_are_denied_first_and_cannot_be_replaced_by_a_layer() {
        let policy = crate::policy::Policy::embedded_default()
            .with_self_protection(&[
                PathBuf::from("/etc/agent-guard/policy.toml"),
                PathBuf::from("/etc/agent-guard/policy.d"),
                PathBuf::from("/tmp/odd[dir]*/pins"),
            ])
            .unwrap();
        let list = &policy.protections;
        let set = ProtectedSet::new(list, Path::new("/home/dev"));
        let found = |path: &str| {
            set.find(list, Path::new(path), Operation::Write)
                .map(|f| (list[f.protection].id.clone(), f.root))
        };
        // Inside /etc (held by "system"), yet denied by agent-guard-self.
        let (id, root) = found("/etc/agent-guard/policy.d/zz.toml").unwrap();
        assert_eq!(
            (id.as_str(), root.as_path()),
            (SELF_ID, Path::new("/etc/agent-guard/policy.d"))
        );
        let own = list.iter().find(|p| p.id == SELF_ID).unwrap();
        assert_eq!(own.action, Action::Deny);
        assert_eq!(found("/etc/agent-guard/other").unwrap().0, "system");
        // Glob characters in a path are taken literally.
        assert_eq!(found("/tmp/odd[dir]*/pins/maps/x").unwrap().0, SELF_ID);
        assert_eq!(found("/tmp/oddd-x/pins/maps/x"), None);
        // A layer cannot define (and so replace) the entry.
        let layered = crate::policy::Policy::parse(
            "version = 1\n[[protect]]\nid = \"agent-guard-self\"\npaths = [\"/nowhere\"]\naction = \"audit\"\n",
            "layer.toml",
        )
        .unwrap()
        .with_self_protection(&[PathBuf::from("/etc/agent-guard/policy.toml")]);
        assert!(layered.unwrap_err().to_string().contains("reserved"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for (entry, why) in [
            ("id = 'a'\npaths = ['relative/x']", "absolute"),
            ("id = 'a'\npaths = []", "no paths"),
            (
                "id = 'a'\npaths = ['/x']\naction = 'allow'",
                "protects nothing",
            ),
            ("id = 'a'\npaths = ['/x[']", "/x["),
            ("id = 'a'\npaths = ['/x']\nexcept = ['x/cache']", "absolute"),
        ] {
            let file: ProtectFile = toml::from_str(entry).unwrap();
            let err = file.compile(Duration::from_secs(1)).unwrap_err();
            assert!(err.contains(why), "{entry}: {err}");
        }
    }
}
