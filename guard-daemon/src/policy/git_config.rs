//! A plain `git push` pushes what the configuration says: `remote.NAME.push`
//! refspecs (`+main:main` forces, `:old` deletes) and `remote.NAME.mirror`.
//! An agent can write those into `.git/config` with any editor, so a push
//! without refspecs of its own is also judged as the push the configuration
//! makes (`git push origin +main:main`, `git push --mirror origin`). The
//! files are read as git finds them for the process: its cwd and `-C`, its
//! `GIT_DIR`, HOME and XDG config, `/etc/gitconfig`, and `include`s. Where
//! git would choose (which remote, a later `mirror = false`), every choice
//! is judged: the stricter reading stands.
use std::path::{Path, PathBuf};

use super::{command::CommandContext, elsewhere::Elsewhere, spec::Spec};

/// Environment variables that change which files git reads.
pub const ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
    "XDG_CONFIG_HOME",
    // Configuration given in the environment (`-c` passes it on this way).
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_KEY_0",
    "GIT_CONFIG_VALUE_0",
    "GIT_CONFIG_KEY_1",
    "GIT_CONFIG_VALUE_1",
    "GIT_CONFIG_KEY_2",
    "GIT_CONFIG_VALUE_2",
    "GIT_CONFIG_KEY_3",
    "GIT_CONFIG_VALUE_3",
    "GIT_CONFIG_KEY_4",
    "GIT_CONFIG_VALUE_4",
    "GIT_CONFIG_KEY_5",
    "GIT_CONFIG_VALUE_5",
    "GIT_CONFIG_KEY_6",
    "GIT_CONFIG_VALUE_6",
    "GIT_CONFIG_KEY_7",
    "GIT_CONFIG_VALUE_7",
];

/// `GIT_CONFIG_KEY_<n>` entries read; a larger `GIT_CONFIG_COUNT` counts
/// as mirroring (the stricter reading of what was not read).
const ENV_ENTRIES: usize = 8;

/// Nested includes followed before giving up (git allows 10).
const MAX_INCLUDE_DEPTH: usize = 10;

/// Whether judging `program` reads its configuration (so guardd collects
/// the cwd, environment and root for it).
pub fn reads(program: &str) -> bool {
    program == "git"
}

/// `git [opts] push [REMOTE]` as the configuration makes it, when the
/// configuration adds refspecs or mirroring; None otherwise.
pub fn configured_push(command: &CommandContext, spec: &Spec) -> Option<Elsewhere> {
    if command.program != "git" {
        return None;
    }
    let parsed = spec.parse(command.argv.get(1..).unwrap_or_default());
    let (subcommand, rest) = parsed.words.split_first()?;
    // Refspecs on the command line (or --all, --tags) replace the configured ones.
    let replaced = ["--all", "--branches", "--tags", "--mirror"]
        .iter()
        .any(|flag| parsed.flags.contains(&spec.canonical(flag)));
    if subcommand != "push" || rest.len() > 1 || replaced {
        return None;
    }
    let cwd = command.cwd.as_deref()?;
    let option = |name: &str| {
        let name = spec.canonical(name);
        parsed
            .options
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    // `-C a -C b` is `a/b`.
    let start = option("-C").fold(PathBuf::from(cwd), |at, dir| at.join(dir));
    let files = Files::new(command);
    let git_dir = option("--git-dir")
        .next_back()
        .map(|dir| start.join(dir))
        .or_else(|| command.env_var("GIT_DIR").map(|dir| start.join(dir)))
        .or_else(|| files.discover_git_dir(&start));
    let mut config = files.load_all(git_dir.as_deref());
    config.extend(environment_entries(command));
    let remote = rest.first().map(String::as_str);
    let mut refspecs: Vec<String> = Vec::new();
    let mut mirror = false;
    let mut sources = Vec::new();
    for entry in &config {
        let Some((name, key)) = remote_key(&entry.key) else {
            continue;
        };
        if name != "*" && remote.is_some_and(|wanted| wanted != name) {
            continue;
        }
        let adds = match key.as_str() {
            "push" => {
                refspecs.push(entry.value.clone());
                true
            }
            "mirror" if is_true(&entry.value) => {
                mirror = true;
                true
            }
            _ => false,
        };
        if adds {
            sources.push(format!("{}: {}={}", entry.file, entry.key, entry.value));
        }
    }
    if refspecs.is_empty() && !mirror {
        return None;
    }
    let mut argv = vec!["git".to_string(), "push".to_string()];
    if mirror {
        argv.push("--mirror".into());
    }
    argv.extend(remote.map(str::to_string));
    argv.extend(refspecs);
    Some(Elsewhere {
        via: format!("the git config ({})", sources.join("; ")),
        command: CommandContext {
            program: "git".into(),
            argv,
            ..command.clone()
        },
    })
}

/// Configuration the environment gives: `GIT_CONFIG_PARAMETERS`
/// (`'key'='value' ...`) and `GIT_CONFIG_COUNT` with its KEY_n/VALUE_n.
fn environment_entries(command: &CommandContext) -> Vec<Entry> {
    let entry = |key: &str, value: &str, from: &str| Entry {
        key: normalised_key(key),
        value: value.to_string(),
        file: from.to_string(),
    };
    let mut entries = Vec::new();
    if let Some(parameters) = command.env_var("GIT_CONFIG_PARAMETERS") {
        let words = shlex::split(parameters).unwrap_or_default();
        for word in words {
            let (key, value) = word.split_once('=').unwrap_or((word.as_str(), ""));
            entries.push(entry(key, value, "GIT_CONFIG_PARAMETERS"));
        }
    }
    let count = command
        .env_var("GIT_CONFIG_COUNT")
        .map(|n| n.trim().parse::<usize>());
    match count {
        Some(Ok(count)) if count <= ENV_ENTRIES => {
            for n in 0..count {
                let key = command
                    .env_var(&format!("GIT_CONFIG_KEY_{n}"))
                    .unwrap_or("");
                let value = command
                    .env_var(&format!("GIT_CONFIG_VALUE_{n}"))
                    .unwrap_or("");
                entries.push(entry(key, value, "GIT_CONFIG_COUNT"));
            }
        }
        // `*`: stands for whichever remote is pushed to.
        Some(_) => entries.push(entry(
            "remote.*.mirror",
            "true",
            "GIT_CONFIG_COUNT (entries not read)",
        )),
        None => {}
    }
    entries
}

/// `Remote.Origin.PUSH` -> `remote.Origin.push`: section and key lower-cased.
fn normalised_key(key: &str) -> String {
    match (key.split_once('.'), key.rsplit_once('.')) {
        (Some((section, _)), Some((middle, name))) if middle.len() > section.len() => format!(
            "{}.{}.{}",
            section.to_ascii_lowercase(),
            &middle[section.len() + 1..],
            name.to_ascii_lowercase()
        ),
        _ => key.to_ascii_lowercase(),
    }
}

/// `remote.NAME.KEY` -> (NAME, KEY).
fn remote_key(key: &str) -> Option<(&str, String)> {
    let rest = key.strip_prefix("remote.")?;
    let (name, key) = rest.rsplit_once('.')?;
    Some((name, key.to_string()))
}

fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "" | "true" | "yes" | "on" | "1"
    )
}

/// One `section.subsection.key = value` line of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Section and key lower-cased, the subsection as written.
    key: String,
    value: String,
    file: String,
}

/// The process's view of the file system: through `/proc/PID/root` when set.
struct Files<'a> {
    command: &'a CommandContext,
}

impl<'a> Files<'a> {
    fn new(command: &'a CommandContext) -> Self {
        Self { command }
    }

    fn inside(&self, path: &Path) -> PathBuf {
        self.command.inside_root(path)
    }

    fn read(&self, path: &Path) -> Option<String> {
        super::files::read_config(&self.inside(path))
    }

    /// `.git` in `start` or the nearest directory above it (a directory, or
    /// a file saying `gitdir: PATH` as in worktrees and submodules).
    fn discover_git_dir(&self, start: &Path) -> Option<PathBuf> {
        for dir in start.ancestors() {
            let dot_git = dir.join(".git");
            let inside = self.inside(&dot_git);
            if inside.is_dir() {
                return Some(dot_git);
            }
            if let Some(text) = self.read(&dot_git) {
                let target = text.trim().strip_prefix("gitdir:")?.trim().to_string();
                return Some(dir.join(target));
            }
        }
        None
    }

    /// Every entry of every file git reads for a repository at `git_dir`.
    fn load_all(&self, git_dir: Option<&Path>) -> Vec<Entry> {
        let env = |name: &str| self.command.env_var(name).filter(|v| !v.is_empty());
        let home = env("HOME").map(PathBuf::from);
        let mut files: Vec<PathBuf> = Vec::new();
        if env("GIT_CONFIG_NOSYSTEM").is_none_or(|v| !is_true(v)) {
            files.push(env("GIT_CONFIG_SYSTEM").map_or("/etc/gitconfig".into(), PathBuf::from));
        }
        match env("GIT_CONFIG_GLOBAL") {
            Some(global) => files.push(global.into()),
            None => {
                let xdg = env("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|h| h.join(".config")));
                files.extend(xdg.map(|x| x.join("git/config")));
                files.extend(home.as_ref().map(|h| h.join(".gitconfig")));
            }
        }
        if let Some(git_dir) = git_dir {
            // A linked worktree keeps the shared config in its common dir.
            let common = self
                .read(&git_dir.join("commondir"))
                .map(|dir| git_dir.join(dir.trim()))
                .unwrap_or_else(|| git_dir.to_path_buf());
            files.push(common.join("config"));
            files.push(git_dir.join("config.worktree"));
        }
        let mut entries = Vec::new();
        for file in files {
            self.load(&file, home.as_deref(), 0, &mut entries);
        }
        entries
    }

    fn load(&self, file: &Path, home: Option<&Path>, depth: usize, out: &mut Vec<Entry>) {
        if depth > MAX_INCLUDE_DEPTH {
            return;
        }
        let Some(text) = self.read(file) else {
            return;
        };
        for entry in parse(&text, &file.display().to_string()) {
            // includeIf conditions are not weighed: its file is read as if it
            // applied (the stricter reading).
            let include = entry.key == "include.path"
                || (entry.key.starts_with("includeif.") && entry.key.ends_with(".path"));
            if include {
                let path = match (entry.value.strip_prefix("~/"), home) {
                    (Some(rest), Some(home)) => home.join(rest),
                    _ => file.parent().unwrap_or(Path::new("/")).join(&entry.value),
                };
                self.load(&path, home, depth + 1, out);
            }
            out.push(entry);
        }
    }
}

/// The entries of a git config file, in order.
fn parse(text: &str, file: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut line = line.trim_start().to_string();
        if line.starts_with('[') {
            let Some(end) = line.find(']') else {
                continue;
            };
            section = section_name(&line[1..end]);
            line = line[end + 1..].trim_start().to_string();
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // A backslash at the end continues the value on the next line.
        while line.ends_with('\\') && !line.ends_with("\\\\") {
            line.pop();
            match lines.next() {
                Some(next) => line.push_str(next),
                None => break,
            }
        }
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name.trim(), unquote(value)),
            None => (line.trim(), String::new()),
        };
        if section.is_empty() || name.is_empty() {
            continue;
        }
        entries.push(Entry {
            key: format!("{section}.{}", name.to_ascii_lowercase()),
            value,
            file: file.to_string(),
        });
    }
    entries
}

/// `remote "origin"` -> `remote.origin`; `remote.origin` (old form) too.
fn section_name(header: &str) -> String {
    match header.split_once(char::is_whitespace) {
        Some((section, sub)) => {
            let sub = sub.trim().trim_matches('"').replace("\\\"", "\"");
            format!("{}.{sub}", section.to_ascii_lowercase())
        }
        None => match header.split_once('.') {
            Some((section, sub)) => format!(
                "{}.{}",
                section.to_ascii_lowercase(),
                sub.to_ascii_lowercase()
            ),
            None => header.trim().to_ascii_lowercase(),
        },
    }
}

/// A value with its quotes and escapes taken out and a trailing comment cut.
fn unquote(raw: &str) -> String {
    let mut value = String::new();
    let mut quoted = false;
    let mut chars = raw.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => match chars.next() {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some(other) => value.push(other),
                None => {}
            },
            '#' | ';' if !quoted => break,
            c => value.push(c),
        }
    }
    value.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_read_as_git_reads_them() {
        let text = "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = git@x:y.git\n\
                    \tpush = +refs/heads/*:refs/heads/*   # force all\n\
                    [Remote \"Backup\"] mirror\n[remote.old]\n push = \":gone\"\n";
        let entries = parse(text, "cfg");
        let keys: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("core.bare", "false"),
                ("remote.origin.url", "git@x:y.git"),
                ("remote.origin.push", "+refs/heads/*:refs/heads/*"),
                ("remote.Backup.mirror", ""),
                ("remote.old.push", ":gone"),
            ]
        );
    }
}
