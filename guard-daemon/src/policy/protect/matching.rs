//! Matching paths against the protections: which root, of which entry,
//! protects a path for an operation.
use std::path::{Component, Path, PathBuf};

use super::{literal_glob, Operation, Protection, SELF_ID, WORKSPACE};

/// The protections with `~` and `{workspace}` made concrete for one session
/// (its owner's home and its working tree).
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
    /// Per protection: its `except` paths, in one set (one pass per prefix).
    excepts: Vec<globset::GlobSet>,
    /// The `fallback` entries' paths, with the entry each belongs to.
    fallbacks: Vec<(usize, globset::GlobMatcher)>,
    /// Where a fallback entry's requests are split (see `fallback_root`).
    splits: Vec<PathBuf>,
}

/// Where a session's `~` and `{workspace}` are.
#[derive(Debug, Clone, Copy)]
pub struct Places<'a> {
    pub home: &'a Path,
    pub workspace: Option<&'a Path>,
}

/// `pattern` with `~` and `{workspace}` made concrete, as a matcher of whole paths.
pub fn matcher(pattern: &str, places: Places) -> Option<globset::GlobMatcher> {
    glob(pattern, places).map(|glob| glob.compile_matcher())
}

/// `pattern` with `~` made `home` and `{workspace}` the workspace (none: no
/// glob), as a glob of whole paths.
fn glob(pattern: &str, places: Places) -> Option<globset::Glob> {
    let expanded = if let Some(rest) = pattern.strip_prefix(WORKSPACE) {
        format!("{}{rest}", literal_glob(places.workspace?))
    } else if let Some(rest) = pattern.strip_prefix('~') {
        format!("{}{rest}", places.home.display())
    } else {
        pattern.to_string()
    };
    let expanded = expanded.trim_end_matches('/');
    let expanded = if expanded.is_empty() { "/" } else { expanded };
    globset::GlobBuilder::new(expanded)
        .literal_separator(true)
        .build()
        .ok()
}

/// Whether no entry protects `path` (absolute, resolved) for any operation,
/// in any session. Only `~` moves a path pattern (`{workspace}` is only ever
/// an `except`, which protects less), and a home can reach `path` only from
/// `path` itself or one of its ancestors: so those homes and one elsewhere,
/// each without a workspace, are every case there is.
pub fn unprotected_anywhere(protections: &[Protection], path: &Path) -> bool {
    let elsewhere = Path::new("/nonexistent/agent-guard-home");
    std::iter::once(elsewhere)
        .chain(path.ancestors())
        .all(|home| {
            let places = Places {
                home,
                workspace: None,
            };
            let set = ProtectedSet::new(protections, places);
            Operation::ALL
                .iter()
                .all(|operation| set.find(protections, path, *operation).is_none())
        })
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
    pub fn new(protections: &[Protection], places: Places) -> Self {
        let mut builder = globset::GlobSetBuilder::new();
        let (mut owners, mut root_named) = (Vec::new(), false);
        let mut fallbacks = Vec::new();
        for (at, protection) in protections.iter().enumerate() {
            if protection.fallback {
                fallbacks.extend(
                    (protection.paths.iter())
                        .filter_map(|path| matcher(path, places))
                        .map(|m| (at, m)),
                );
                continue;
            }
            for path in &protection.paths {
                if let Some(glob) = glob(path, places) {
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
            .map(|p| {
                let mut set = globset::GlobSetBuilder::new();
                for except in p.except.iter().filter_map(|e| glob(e, places)) {
                    set.add(except);
                }
                set.build().unwrap_or_else(|err| {
                    // Unreachable for a loaded policy (its globs were checked);
                    // no except then protects more, never less.
                    tracing::error!("[[protect]] {} except: {err}", p.id);
                    globset::GlobSet::empty()
                })
            })
            .collect();
        Self {
            globs,
            owners,
            root_named,
            has_own: protections.iter().any(|p| p.id == SELF_ID),
            excepts,
            fallbacks,
            splits: splits(protections, places),
        }
    }

    /// Whether `path` is at or below one of the `except` paths of protection `at`.
    fn excepted(&self, at: usize, path: &Path) -> bool {
        let excepts = &self.excepts[at];
        !excepts.is_empty()
            && path
                .ancestors()
                .take(MAX_DEPTH)
                .any(|prefix| excepts.is_match(prefix))
    }

    /// The outermost protected root at or above `path` (absolute, resolved)
    /// whose protection covers `operation`. `agent-guard-self` comes first:
    /// guardd's files under `/etc` are denied by it, not held by an entry
    /// protecting all of `/etc`. A `fallback` entry only where no other does.
    pub fn find(
        &self,
        protections: &[Protection],
        path: &Path,
        operation: Operation,
    ) -> Option<Protected> {
        self.find_named(protections, path, operation)
            .or_else(|| self.find_fallback(protections, path, operation))
    }

    fn find_fallback(
        &self,
        protections: &[Protection],
        path: &Path,
        operation: Operation,
    ) -> Option<Protected> {
        let (at, _) = self.fallbacks.iter().find(|(at, paths)| {
            protections[*at].operations.contains(&operation)
                && path.ancestors().take(MAX_DEPTH).any(|a| paths.is_match(a))
                && !self.excepted(*at, path)
        })?;
        Some(Protected {
            protection: *at,
            root: fallback_root(path, &self.splits),
        })
    }

    fn find_named(
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

/// The places a fallback entry's requests are split at: the literal roots of
/// the other entries, the home, the workspace and the fallback entries' own
/// literal `except` paths. No request of a fallback entry covers one of them
/// whole, so approving one delete under `/` or `~` never approves them all.
pub fn splits(protections: &[Protection], places: Places) -> Vec<PathBuf> {
    let mut splits: Vec<PathBuf> = protections
        .iter()
        .flat_map(|p| {
            let own = if p.fallback { &p.except } else { &p.paths };
            own.iter()
                .filter_map(|pattern| literal_path(pattern, places))
        })
        .collect();
    splits.push(places.home.to_path_buf());
    splits.extend(places.workspace.map(Path::to_path_buf));
    splits.sort();
    splits.dedup();
    splits
}

/// `pattern` as the one path it names for `places`; None for a glob, or for
/// `{workspace}` in a session that has none.
pub fn literal_path(pattern: &str, places: Places) -> Option<PathBuf> {
    let glob = glob(pattern, places)?;
    let text = glob.glob();
    if text.contains(['*', '?', '[', '{']) {
        // A workspace with glob characters is written escaped: `[*]`.
        let unescaped = text.replace("[*]", "*").replace("[?]", "?");
        let unescaped = ["[", "]", "{", "}", "\\"]
            .iter()
            .fold(unescaped, |t, c| t.replace(&format!("[{c}]"), c));
        return (literal_glob(Path::new(&unescaped)) == text).then(|| PathBuf::from(unescaped));
    }
    Some(PathBuf::from(text))
}

/// The outermost directory at or above `path` that is neither a split point
/// nor above one: what one request of a fallback entry covers. `path` itself
/// when every directory above it holds a split point.
pub fn fallback_root(path: &Path, splits: &[PathBuf]) -> PathBuf {
    let mut prefix = PathBuf::new();
    for component in path.components().take(MAX_DEPTH) {
        prefix.push(component);
        if !splits.iter().any(|split| split.starts_with(&prefix)) {
            return prefix;
        }
    }
    path.to_path_buf()
}
