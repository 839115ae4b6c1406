//! Real workloads, outside any session without the guard against inside a
//! `guardctl run` session of a guardd on the embedded default policy (git and
//! friends watched, the syscall gate as it runs on this machine):
//! `make -j2` of a small C project (many compiler execs and file writes) and
//! git operations on a repository of many files.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};

/// C files in the project (each a compiler exec).
const SOURCES: usize = 60;
/// Files in the git repository, and how many change per run.
const GIT_FILES: usize = 2_000;
const GIT_CHANGED: usize = 200;
/// `git status` runs per timed loop: an agent's most frequent command.
const GIT_STATUS_RUNS: usize = 200;
const GIT_SCRIPT: &str = "git status --porcelain >/dev/null && git add -A && git commit -q -m run \
     && git log --oneline -n 20 >/dev/null && git diff --stat HEAD~1 >/dev/null \
     && git checkout -q -b side && git checkout -q - && git branch -q -d side";

pub struct Workload {
    project: PathBuf,
    repo: PathBuf,
    round: usize,
}

/// Where a run happens: outside, or in a session of the guardd at `socket`.
pub struct Session<'a> {
    pub guardctl: PathBuf,
    pub socket: &'a Path,
}

impl Workload {
    pub fn prepare(dir: &Path) -> anyhow::Result<Self> {
        let project = dir.join("cproject");
        let _ = fs::remove_dir_all(&project);
        fs::create_dir_all(&project)?;
        let mut main = String::from("#include <stdio.h>\n");
        for i in 0..SOURCES {
            fs::write(
                project.join(format!("f{i}.c")),
                format!(
                    "#include <string.h>\nint f{i}(const char *s) {{ int n = 0; for (size_t k = 0; k < strlen(s); k++) n += s[k] * {i}; return n; }}\n"
                ),
            )?;
            main += &format!("int f{i}(const char *);\n");
        }
        main += "int main(int c, char **v) { int n = 0;\n";
        for i in 0..SOURCES {
            main += &format!("n += f{i}(v[0]);\n");
        }
        main += "printf(\"%d\\n\", n + c); return 0; }\n";
        fs::write(project.join("main.c"), main)?;
        fs::write(
            project.join("Makefile"),
            "SRCS := $(wildcard *.c)\nOBJS := $(SRCS:.c=.o)\nprog: $(OBJS)\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O1 -c -o $@ $<\n",
        )?;

        let repo = dir.join("gitrepo");
        let _ = fs::remove_dir_all(&repo);
        fs::create_dir_all(&repo)?;
        for i in 0..GIT_FILES {
            let sub = repo.join(format!("d{}", i % 40));
            fs::create_dir_all(&sub)?;
            fs::write(sub.join(format!("file{i}.txt")), format!("line {i}\n"))?;
        }
        let status = git(&repo).args(["init", "-q"]).status()?;
        let added = git(&repo).args(["add", "-A"]).status()?;
        let committed = git(&repo).args(["commit", "-q", "-m", "base"]).status()?;
        if !(status.success() && added.success() && committed.success()) {
            bail!("creating the benchmark git repository failed");
        }
        Ok(Self {
            project,
            repo,
            round: 0,
        })
    }

    /// Seconds for `make -j2` from clean.
    pub fn make(&self, session: Option<&Session>) -> anyhow::Result<f64> {
        for entry in fs::read_dir(&self.project)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "o") || path.ends_with("prog") {
                fs::remove_file(path)?;
            }
        }
        let mut command = in_session(session, &["make", "-s", "-j2"]);
        command.current_dir(&self.project);
        timed(command)
    }

    /// Seconds for the git script after changing GIT_CHANGED files.
    pub fn git(&mut self, session: Option<&Session>) -> anyhow::Result<f64> {
        self.round += 1;
        for i in 0..GIT_CHANGED {
            let file = self
                .repo
                .join(format!("d{}", i % 40))
                .join(format!("file{i}.txt"));
            fs::write(file, format!("line {i} round {}\n", self.round))?;
        }
        let mut command = in_session(session, &["sh", "-c", GIT_SCRIPT]);
        command.current_dir(&self.repo);
        set_identity(&mut command);
        timed(command)
    }
}

impl Workload {
    /// Seconds for GIT_STATUS_RUNS `git status` in the repository, one
    /// after another from one shell.
    pub fn git_status(&self, session: Option<&Session>) -> anyhow::Result<f64> {
        let mut command = in_session(session, &["sh", "-c", &git_status_loop()]);
        command.current_dir(&self.repo);
        timed(command)
    }

    /// The same loop run by `shell` (a shell under an agent's name, which
    /// guardd detects as a session).
    pub fn git_status_by(&self, shell: &Path) -> anyhow::Result<f64> {
        let mut command = Command::new(shell);
        command
            .args(["-c", &git_status_loop()])
            .current_dir(&self.repo);
        timed(command)
    }

    /// The same loop under `wrapper` (xtask/bench/allow_filter.c), no guard.
    pub fn git_status_under(&self, wrapper: &Path) -> anyhow::Result<f64> {
        let mut command = Command::new(wrapper);
        command
            .args(["sh", "-c", &git_status_loop()])
            .current_dir(&self.repo);
        timed(command)
    }
}

fn git_status_loop() -> String {
    format!(
        "i=0; while [ $i -lt {GIT_STATUS_RUNS} ]; do git status >/dev/null || exit 1; i=$((i+1)); done"
    )
}

fn in_session(session: Option<&Session>, argv: &[&str]) -> Command {
    match session {
        Some(session) => {
            let mut command = Command::new(&session.guardctl);
            command
                .arg("--socket")
                .arg(session.socket)
                .args(["run", "--"])
                .args(argv);
            command
        }
        None => {
            let mut command = Command::new(argv[0]);
            command.args(&argv[1..]);
            command
        }
    }
}

fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command.current_dir(repo);
    set_identity(&mut command);
    command
}

fn set_identity(command: &mut Command) {
    for (key, value) in [
        ("GIT_AUTHOR_NAME", "bench"),
        ("GIT_AUTHOR_EMAIL", "bench@localhost"),
        ("GIT_COMMITTER_NAME", "bench"),
        ("GIT_COMMITTER_EMAIL", "bench@localhost"),
    ] {
        command.env(key, value);
    }
}

fn timed(mut command: Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = command.output().context("running a workload")?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "workload failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(seconds)
}
