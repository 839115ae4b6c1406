//! What is known about one command when it is judged.

/// Everything known about one command when it is judged.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// The program's name (basename; for a `#!` script, the script's).
    pub program: String,
    /// The resolved executable path, when known (from /proc/PID/exe).
    pub exe: Option<String>,
    /// The full argv, argv[0] first.
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub uid: Option<u32>,
    /// The agent that owns the session, when known.
    pub agent: Option<String>,
    /// Where guardd reaches the process's root (`/proc/PID/root`): when set,
    /// paths are also resolved through the symlinks on the real file system.
    pub root: Option<String>,
    /// The parent's argv, when the parent runs the same executable file.
    pub run_by: Option<Vec<String>>,
}

impl CommandContext {
    /// A context for `argv` alone, its program the basename of argv[0].
    pub fn from_argv<S: AsRef<str>>(argv: &[S]) -> Self {
        let argv: Vec<String> = argv.iter().map(|a| a.as_ref().to_string()).collect();
        let program = argv
            .first()
            .map(|a| basename(a).to_string())
            .unwrap_or_default();
        Self {
            program,
            argv,
            ..Self::default()
        }
    }

    /// This command as run by the same process context as `other` (its
    /// cwd, environment, uid, agent and root).
    pub fn with_context_of(self, other: &CommandContext) -> Self {
        Self {
            program: self.program,
            argv: self.argv,
            exe: None,
            run_by: None,
            ..other.clone()
        }
    }

    /// Where guardd reaches `path` (absolute, in the process's view): under
    /// the process's root when that is known.
    pub fn inside_root(&self, path: &std::path::Path) -> std::path::PathBuf {
        match self.root.as_deref() {
            Some(root) => std::path::Path::new(root).join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }

    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The last non-empty component of a path (`/usr/bin/rm/` -> `rm`).
pub fn basename(path: &str) -> &str {
    path.rsplit('/')
        .find(|part| !part.is_empty())
        .unwrap_or(path)
}
