//! Positional arguments as paths: resolved against the process's cwd and
//! HOME, normalised lexically (`..`, `.`, `~`, trailing slashes), then
//! matched against globs where `~` is HOME and `{cwd}` the working directory.
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

/// Where a command runs, for resolving its paths.
#[derive(Debug, Clone, Copy)]
pub struct PathContext<'a> {
    pub cwd: &'a Path,
    pub home: Option<&'a Path>,
}

/// A path glob from a rule. `~/...` and `{cwd}/...` are matched relative
/// to HOME and the working directory, so the glob is compiled once.
#[derive(Debug, Clone)]
pub struct PathGlob {
    anchor: Anchor,
    /// None: the anchor directory itself (`~`, `{cwd}`).
    rest: Option<GlobMatcher>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Anchor {
    Root,
    Home,
    Cwd,
}

impl PathGlob {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (anchor, rest) = if let Some(rest) = pattern.strip_prefix("{cwd}") {
            (Anchor::Cwd, rest)
        } else if let Some(rest) = pattern
            .strip_prefix('~')
            .filter(|r| r.is_empty() || r.starts_with('/'))
        {
            (Anchor::Home, rest)
        } else if pattern.starts_with('/') || pattern.starts_with("**") {
            (Anchor::Root, pattern)
        } else {
            return Err(format!(
                "path glob {pattern:?} must start with /, **, ~ or {{cwd}}"
            ));
        };
        if rest.contains("{cwd}") {
            return Err(format!(
                "path glob {pattern:?}: {{cwd}} may only start a glob"
            ));
        }
        let rest = match anchor {
            Anchor::Root => Some(compile(rest)?),
            _ => match rest.trim_start_matches('/') {
                "" => None,
                relative => Some(compile(relative)?),
            },
        };
        Ok(Self { anchor, rest })
    }

    pub fn matches(&self, path: &Path, context: &PathContext<'_>) -> bool {
        let base = match self.anchor {
            Anchor::Root => return self.rest.as_ref().is_some_and(|glob| glob.is_match(path)),
            Anchor::Home => match context.home {
                Some(home) => normalise(home),
                None => return false,
            },
            Anchor::Cwd => normalise(context.cwd),
        };
        match (path.strip_prefix(&base), &self.rest) {
            (Ok(relative), None) => relative.as_os_str().is_empty(),
            (Ok(relative), Some(glob)) => {
                !relative.as_os_str().is_empty() && glob.is_match(relative)
            }
            (Err(_), _) => false,
        }
    }
}

fn compile(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|err| format!("bad path glob {pattern:?}: {err}"))
}

/// The absolute, normalised path an argument names.
pub fn resolve(arg: &str, context: &PathContext<'_>) -> PathBuf {
    let path = match (arg.strip_prefix('~'), context.home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(arg),
    };
    let absolute = if path.is_absolute() {
        path
    } else {
        context.cwd.join(path)
    };
    normalise(&absolute)
}

/// Removes `.`, `..` and repeated or trailing slashes without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PathContext<'static> {
        PathContext {
            cwd: Path::new("/home/dev/project"),
            home: Some(Path::new("/home/dev")),
        }
    }

    #[test]
    fn arguments_resolve_against_cwd_and_home() {
        let c = ctx();
        assert_eq!(resolve("target", &c), Path::new("/home/dev/project/target"));
        assert_eq!(
            resolve("target/", &c),
            Path::new("/home/dev/project/target")
        );
        assert_eq!(resolve("./a/../b", &c), Path::new("/home/dev/project/b"));
        assert_eq!(resolve("../..", &c), Path::new("/home"));
        assert_eq!(resolve("~", &c), Path::new("/home/dev"));
        assert_eq!(resolve("~/.ssh", &c), Path::new("/home/dev/.ssh"));
        assert_eq!(resolve("/../../etc//", &c), Path::new("/etc"));
        assert_eq!(resolve("~other", &c), Path::new("/home/dev/project/~other"));
    }

    #[test]
    fn globs_expand_home_and_cwd() {
        let c = ctx();
        let m = |glob: &str, arg: &str| {
            PathGlob::parse(glob)
                .unwrap()
                .matches(&resolve(arg, &c), &c)
        };
        assert!(m("~", "~/"));
        assert!(m("~", "../"));
        assert!(m("~/.ssh/**", "~/.ssh/id_ed25519"));
        assert!(m("{cwd}/**", "src/main.rs"));
        assert!(!m("{cwd}/**", "../other"));
        assert!(m("**/node_modules", "web/node_modules/"));
        assert!(!m("**/node_modules", "node_modules_backup"));
        assert!(m("/", "../../.."));
        assert!(m("/etc/**", "/etc/passwd"));
        assert!(!m("/etc/*", "/etc/ssl/certs"));
        assert!(PathGlob::parse("/a[").is_err());
        assert!(PathGlob::parse("relative/*").is_err());
        assert!(PathGlob::parse("/x/{cwd}").is_err());
    }
}
