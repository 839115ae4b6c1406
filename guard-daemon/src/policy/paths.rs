//! Positional arguments as paths: resolved against the process's cwd and
//! HOME, normalised lexically (`..`, `.`, `~`, trailing slashes), then
//! matched against globs where `~` is HOME and `{cwd}` the working directory.
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Where a command runs, for resolving its paths (both normalised).
#[derive(Debug, Clone)]
pub struct PathContext {
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
}

impl PathContext {
    pub fn new(cwd: &Path, home: Option<&Path>) -> Self {
        Self {
            cwd: normalise(cwd),
            home: home.map(normalise),
        }
    }

    /// `{cwd}` globs stand for the project being worked on; run from `/` or
    /// from HOME itself (or where the cwd is unknown), there is none, and
    /// `{cwd}/**` must not cover the whole disk or the whole home.
    fn cwd_is_a_project(&self) -> bool {
        self.cwd != Path::new("/") && Some(&self.cwd) != self.home.as_ref()
    }
}

/// A rule's path globs, compiled into one set per anchor. `~/...` and
/// `{cwd}/...` are matched relative to HOME and the working directory, so
/// nothing is compiled per command.
#[derive(Debug, Clone, Default)]
pub struct PathSet {
    root: Option<GlobSet>,
    home: Option<GlobSet>,
    cwd: Option<GlobSet>,
    /// `~` and `{cwd}` themselves.
    home_itself: bool,
    cwd_itself: bool,
    len: usize,
}

impl PathSet {
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        let (mut root, mut home, mut cwd) = (
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        );
        let (mut has_root, mut has_home, mut has_cwd) = (false, false, false);
        let mut set = Self {
            len: patterns.len(),
            ..Self::default()
        };
        for pattern in patterns {
            if let Some(rest) = pattern.strip_prefix("{cwd}") {
                match rest.trim_start_matches('/') {
                    "" => set.cwd_itself = true,
                    relative => {
                        cwd.add(glob(pattern, relative)?);
                        has_cwd = true;
                    }
                }
            } else if let Some(rest) = pattern
                .strip_prefix('~')
                .filter(|r| r.is_empty() || r.starts_with('/'))
            {
                match rest.trim_start_matches('/') {
                    "" => set.home_itself = true,
                    relative => {
                        home.add(glob(pattern, relative)?);
                        has_home = true;
                    }
                }
            } else if pattern.starts_with('/') || pattern.starts_with("**") {
                root.add(glob(pattern, pattern)?);
                has_root = true;
            } else {
                return Err(format!(
                    "path glob {pattern:?} must start with /, **, ~ or {{cwd}}"
                ));
            }
            if pattern.get(1..).is_some_and(|rest| rest.contains("{cwd}")) {
                return Err(format!(
                    "path glob {pattern:?}: {{cwd}} may only start a glob"
                ));
            }
        }
        let build = |builder: GlobSetBuilder, used: bool| -> Result<Option<GlobSet>, String> {
            used.then(|| builder.build().map_err(|e| e.to_string()))
                .transpose()
        };
        set.root = build(root, has_root)?;
        set.home = build(home, has_home)?;
        set.cwd = build(cwd, has_cwd)?;
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn matches(&self, path: &Path, context: &PathContext) -> bool {
        if self.root.as_ref().is_some_and(|set| set.is_match(path)) {
            return true;
        }
        let under = |base: Option<&PathBuf>, itself: bool, set: &Option<GlobSet>| {
            let Some(relative) = base.and_then(|base| path.strip_prefix(base).ok()) else {
                return false;
            };
            if relative.as_os_str().is_empty() {
                itself
            } else {
                set.as_ref().is_some_and(|set| set.is_match(relative))
            }
        };
        under(context.home.as_ref(), self.home_itself, &self.home)
            || (context.cwd_is_a_project() && under(Some(&context.cwd), self.cwd_itself, &self.cwd))
    }
}

fn glob(pattern: &str, text: &str) -> Result<Glob, String> {
    GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .map_err(|err| format!("bad path glob {pattern:?}: {err}"))
}

/// The absolute, normalised path an argument names.
pub fn resolve(arg: &str, context: &PathContext) -> PathBuf {
    let path = match (arg.strip_prefix('~'), &context.home) {
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

/// `path` (absolute, normalised) with the symlinks of its directories
/// followed, and with its last component's too, as seen through `root` (the
/// process's `/proc/PID/root`). Parts that do not exist stay as written.
pub fn follow_links(path: &Path, root: &Path) -> Vec<PathBuf> {
    let real = |path: &Path| -> PathBuf {
        // The deepest existing ancestor, canonicalised, then the rest as written.
        let mut rest = Vec::new();
        let mut at = path;
        loop {
            let inside = root.join(at.strip_prefix("/").unwrap_or(at));
            if let Ok(found) = std::fs::canonicalize(&inside) {
                let base = found
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or(found);
                let mut out = Path::new("/").join(base);
                out.extend(rest.iter().rev());
                return normalise(&out);
            }
            match (at.parent(), at.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    at = parent;
                }
                _ => return path.to_path_buf(),
            }
        }
    };
    let mut forms = Vec::new();
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        forms.push(real(parent).join(name));
    }
    forms.push(real(path));
    forms
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

    fn ctx() -> PathContext {
        PathContext::new(Path::new("/home/dev/project"), Some(Path::new("/home/dev")))
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
            PathSet::parse(&[glob.to_string()])
                .unwrap()
                .matches(&resolve(arg, &c), &c)
        };
        assert!(m("~", "~/"));
        assert!(m("~", "../"));
        assert!(!m("~", "~/x"));
        assert!(m("~/.ssh/**", "~/.ssh/id_ed25519"));
        assert!(m("{cwd}/**", "src/main.rs"));
        assert!(!m("{cwd}/**", "../other"));
        assert!(!m("{cwd}/**", "."));
        assert!(m("{cwd}", "."));
        assert!(m("{cwd}/**/node_modules", "node_modules"));
        assert!(m("{cwd}/**/node_modules", "web/node_modules/"));
        assert!(m("**/node_modules", "web/node_modules/"));
        assert!(!m("**/node_modules", "node_modules_backup"));
        assert!(m("/", "../../.."));
        assert!(m("/etc/**", "/etc/passwd"));
        assert!(!m("/etc/*", "/etc/ssl/certs"));
        assert!(PathSet::parse(&["/a[".to_string()]).is_err());
        assert!(PathSet::parse(&["relative/*".to_string()]).is_err());
        assert!(PathSet::parse(&["/x/{cwd}".to_string()]).is_err());
    }

    #[test]
    fn a_set_matches_any_of_its_globs() {
        let c = ctx();
        let set =
            PathSet::parse(&["/tmp/**".into(), "~/.ssh".into(), "{cwd}/**/target".into()]).unwrap();
        for (arg, expected) in [
            ("/tmp/x", true),
            ("~/.ssh", true),
            ("crates/a/target", true),
            ("src", false),
            ("/etc", false),
        ] {
            assert_eq!(set.matches(&resolve(arg, &c), &c), expected, "{arg}");
        }
        assert!(PathSet::default().is_empty());
    }

    #[test]
    fn the_root_and_home_are_never_the_project() {
        let set = PathSet::parse(&["{cwd}/**".into(), "{cwd}".into()]).unwrap();
        let at = |cwd: &str| PathContext::new(Path::new(cwd), Some(Path::new("/home/dev")));
        for cwd in ["/", "/home/dev", "/home/dev/"] {
            let context = at(cwd);
            assert!(!set.matches(&resolve("etc", &context), &context), "{cwd}");
            assert!(!set.matches(&resolve(".", &context), &context), "{cwd}");
        }
        let project = at("/home/dev/project");
        assert!(set.matches(&resolve("src", &project), &project));
    }

    #[test]
    fn symlinks_are_followed_where_a_root_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("victim/src")).unwrap();
        std::fs::create_dir_all(base.join("project")).unwrap();
        std::os::unix::fs::symlink(base.join("victim"), base.join("project/build")).unwrap();
        let inside = base.join("project/build/src");
        let forms = follow_links(&inside, Path::new("/"));
        assert!(forms.contains(&base.join("victim/src")), "{forms:?}");
        // The link itself, and what it points to.
        let link = base.join("project/build");
        let forms = follow_links(&link, Path::new("/"));
        assert_eq!(forms, vec![link.clone(), base.join("victim")]);
        // What does not exist stays as written below the deepest real ancestor.
        let missing = base.join("project/build/new/file");
        assert!(follow_links(&missing, Path::new("/")).contains(&base.join("victim/new/file")));
    }
}
