//! Matching paths against the protections: which root, of which entry,
//! protects a path for an operation.
use std::path::{Component, Path, PathBuf};

use super::{Operation, Protection, SELF_ID};

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
