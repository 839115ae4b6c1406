//! Test harness: a guardd of the test's own (own socket, audit log and
//! policy), stub programs in a temp dir, and processes the test started.
//! Everything is torn down in Drop, and teardown checks that the daemon's
//! programs are gone and no process of the test is left stopped.
#![allow(dead_code)]

use std::{
    fs,
    io::Read as _,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

/// The daemon's own types for what guardctl prints with `--json` and for
/// audit events: a renamed field fails to compile here, not at run time.
#[allow(unused_imports)] // each test binary uses some of them
pub use guard_daemon::{
    audit::{AuditDecision, AuditEvent, AuditRecord, Channel},
    policy::{Action, Explanation, LocalAuth},
    protocol::{HoldState, HoldView, Response, StatusView},
};

pub const WAIT: Duration = Duration::from_secs(15);

/// A policy of one rule: hold `terraform destroy` (the stub's subcommand).
pub const HOLD_TERRAFORM_DESTROY: &str = r#"
version = 1
base = "none"
[[rule]]
id = "tf-destroy"
programs = ["terraform"]
subcommand = ["destroy"]
action = "hold"
"#;

/// Hold `terraform` with `destroy` anywhere in its argv, deny `destroy --nuke`
/// (the policy of the hold_lifecycle, detection, release_integrity and control tests).
pub const HOLD_DESTROY_DENY_NUKE: &str = r#"
version = 1
base = "none"
[[rule]]
id = "tf-destroy"
programs = ["terraform"]
args_any = ["destroy"]
action = "hold"

[[rule]]
id = "tf-nuke"
programs = ["terraform"]
args_all = ["destroy", "--nuke"]
action = "deny"
message = "nuking is never allowed"
"#;

fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask test` (or set {var})",
        path.display()
    );
    path
}

pub fn guardd_bin() -> PathBuf {
    binary("GUARDD_BIN", "guardd")
}

pub fn guardctl_bin() -> PathBuf {
    binary("GUARDCTL_BIN", "guardctl")
}

/// Marker-writing stubs: the first thing each does is append its argv to
/// `marker`, so the test can tell whether it ran at all.
pub struct Stubs {
    pub dir: tempfile::TempDir,
}

impl Stubs {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agent-guard-test-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        let stubs = Self { dir };
        stubs.script(
            "terraform",
            &format!("echo \"$*\" >> {}\nexit 0", stubs.marker().display()),
        );
        stubs
    }

    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    pub fn marker(&self) -> PathBuf {
        self.dir.path().join("marker")
    }

    pub fn marker_text(&self) -> String {
        fs::read_to_string(self.marker()).unwrap_or_default()
    }

    /// Waits until a stub has written its whole line to the marker: the
    /// file appears when the shell opens it, before `echo` writes, so a
    /// kill right after it appeared could leave it empty.
    pub fn wait_for_marker(&self) {
        let deadline = Instant::now() + WAIT;
        while !self.marker_text().ends_with('\n') {
            assert!(
                Instant::now() < deadline,
                "no line in {}",
                self.marker().display()
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// Writes an executable `#!/bin/sh` script into the stub bin dir.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        write_script(&self.bin(), name, body)
    }

    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.bin().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A guardd of the test's own (named apart from the daemon's `guard::Guard`).
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub audit_log: PathBuf,
    pub pin_dir: PathBuf,
    program_ids: Vec<u32>,
    map_ids: Vec<u32>,
    flags: Vec<String>,
}

impl Daemon {
    /// Starts guardd with `policy` and waits until it answers on its socket.
    /// Its pins go to a bpffs directory of its own, its state to its temp dir.
    pub fn start(policy: &str) -> Self {
        Self::start_with(policy, &[])
    }

    /// As `start`, with extra guardd flags (kept for restarts).
    pub fn start_with(policy: &str, flags: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agent-guard-daemon-")
            .tempdir()
            .unwrap();
        fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let name = dir.path().file_name().unwrap().to_owned();
        let mut guard = Self {
            child: None,
            socket: dir.path().join("guardd.sock"),
            audit_log: dir.path().join("audit.jsonl"),
            pin_dir: Path::new("/sys/fs/bpf").join(name),
            dir,
            program_ids: Vec::new(),
            map_ids: Vec::new(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        guard.spawn();
        guard
    }

    /// The flags every guardd of this test gets (also `--teardown`).
    pub fn daemon_command(&self) -> Command {
        let mut command = Command::new(guardd_bin());
        command
            .arg("--config")
            .arg(self.dir.path().join("policy.toml"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--audit-log")
            .arg(&self.audit_log)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(&self.flags);
        command
    }

    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("guardd.log"))
            .unwrap();
        let child = self
            .daemon_command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start guardd");
        self.child = Some(child);
        // Loading and verifying the 18 LSM programs under QEMU's TCG on a
        // busy 2-core host has taken longer than WAIT.
        let startup = if std::env::var_os("AGENT_GUARD_EXPECT_LSM").is_some() {
            WAIT * 4
        } else {
            WAIT
        };
        let deadline = Instant::now() + startup;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("guardd exited with {status}: {}", self.log());
            }
            let out = self.ctl(&["status", "--json"]);
            if out.status.success() {
                let status: StatusView = serde_json::from_slice(&out.stdout).unwrap();
                let programs = &status.programs;
                self.program_ids.extend(programs.iter().map(|p| p.id));
                self.map_ids
                    .extend(programs.iter().flat_map(|p| p.map_ids.iter().copied()));
                // Four tracepoints, and 19 LSM programs (9 self_protect_*, 9 gate_*, one escape_*)
                // where the BPF LSM runs, else the report-only program; and
                // the five API probes where client libraries are installed.
                let api = if status.programs.iter().any(|p| p.name.starts_with("api_")) {
                    5
                } else {
                    0
                };
                let expected = if lsm_active(&status) { 23 } else { 5 } + api;
                assert_eq!(programs.len(), expected, "{status:?}");
                assert!(!self.map_ids.is_empty(), "{status:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "guardd did not come up: {}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Ends guardd with `signal` (SIGTERM: a clean stop; SIGKILL: a crash),
    /// leaving its pins and state behind, as a restart would find them.
    pub fn stop_daemon(&mut self, signal: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + WAIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("guardd did not stop on signal {signal}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Starts guardd again on the same pins, state, socket and audit log.
    pub fn restart(&mut self) {
        self.stop_daemon(libc::SIGTERM);
        self.spawn();
    }

    /// `guardd --teardown` with this guard's directories.
    pub fn teardown(&self) -> std::process::Output {
        self.daemon_command().arg("--teardown").output().unwrap()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("guardd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Freezes this guardd (SIGSTOP to the pid this test started) until the
    /// returned value is dropped, also when an assertion fails meanwhile.
    pub fn freeze(&self) -> Frozen {
        unsafe { libc::kill(self.pid() as i32, libc::SIGSTOP) };
        Frozen(self.pid())
    }

    /// A guardctl command aimed at this daemon.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(guardctl_bin());
        command.arg("--socket").arg(&self.socket).args(args);
        command
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().unwrap()
    }

    /// `guardctl approve|deny ID` on a pending request; asserts it was taken.
    pub fn decide(&self, verb: &str, hold: &HoldView) {
        let out = self.ctl(&[verb, &hold.id]);
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `guardctl pending --json`, read as the protocol's `HoldView`s.
    pub fn pending(&self) -> Vec<HoldView> {
        let out = self.ctl(&["pending", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits for a pending request whose argv contains `word`.
    pub fn wait_hold(&self, word: &str) -> HoldView {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(hold) = self.pending().into_iter().find(|h| argv_has(h, word)) {
                return hold;
            }
            assert!(
                Instant::now() < deadline,
                "no hold with {word:?}; guardd log:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// `guardctl run -- ARGS` with the stubs first on PATH, in the stubs' dir.
    pub fn session(&self, stubs: &Stubs, args: &[&str]) -> Proc {
        let mut command = self.ctl_command(&["run", "--"]);
        command
            .args(args)
            .env("PATH", stubs.path_env())
            .current_dir(stubs.dir.path());
        Proc::spawn(command)
    }

    /// `guardctl explain --json -- ARGV` against this daemon.
    pub fn explain(&self, argv: &[&str]) -> Explanation {
        let mut args = vec!["explain", "--json", "--"];
        args.extend_from_slice(argv);
        let out = self.ctl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `guardctl status --json`, read as the protocol's `StatusView`.
    pub fn status(&self) -> StatusView {
        let out = self.ctl(&["status", "--json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The audit log, read as the daemon's `AuditRecord`s (each line's
    /// `time` is not kept).
    pub fn audit(&self) -> Vec<AuditRecord> {
        fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("audit line not an AuditRecord ({err}): {line}"))
            })
            .collect()
    }

    /// The audit records of one event.
    pub fn audit_events(&self, event: AuditEvent) -> Vec<AuditRecord> {
        self.audit()
            .into_iter()
            .filter(|r| r.event == Some(event))
            .collect()
    }

    /// Asserts that guardd audited this test's SIGCONT to the held `pid`.
    pub fn assert_sigcont_audited(&self, pid: u64) {
        let me = std::process::id();
        assert!(
            self.audit_events(AuditEvent::Error)
                .iter()
                .any(|r| r.pid.map(u64::from) == Some(pid)
                    && r.reason
                        .as_deref()
                        .is_some_and(|why| why
                            .contains(&format!("pid {me} sent the stopped process SIGCONT")))),
            "{:?}",
            self.audit_events(AuditEvent::Error)
        );
    }

    /// Whether the report-only program is on its tracepoints now.
    pub fn reporting(&self) -> bool {
        self.status()
            .programs
            .iter()
            .any(|p| p.name == "report_syscall" && p.attached)
    }

    /// Stops guardd with SIGTERM and checks it left nothing loaded.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops guardd, tears down its pins and state, and checks that nothing is
    /// left: no program, no map, no held process stopped.
    fn shutdown(&mut self) {
        // Also after a guardd that failed to load: it may have made its pin dir.
        if self.program_ids.is_empty() && !self.pin_dir.exists() {
            return;
        }
        self.stop_daemon(libc::SIGTERM);
        let teardown = self.teardown();
        let teardown_ok = teardown.status.success();
        let teardown_err = String::from_utf8_lossy(&teardown.stderr).into_owned();
        let pins_left = self.pin_dir.exists();
        // Programs and maps are freed after an RCU grace period: allow a moment.
        let (mut programs_left, mut maps_left) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            programs_left = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|info| info.id())
                .filter(|id| self.program_ids.contains(id))
                .collect();
            maps_left = aya::maps::loaded_maps()
                .filter_map(Result::ok)
                .map(|info| info.id())
                .filter(|id| self.map_ids.contains(id))
                .collect();
            if programs_left.is_empty() && maps_left.is_empty() {
                break;
            }
            sleep(Duration::from_millis(20));
        }
        // Nor a tracefs probe of the API gate's.
        let group = format!("{}/", guard_daemon::kernel::tracefs_group(&self.pin_dir));
        let probes_left: Vec<String> = fs::read_to_string("/sys/kernel/tracing/uprobe_events")
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&group))
            .map(str::to_string)
            .collect();
        // Nothing this guard ever held may be left stopped.
        let stopped: Vec<u64> = self
            .audit_events(AuditEvent::Hold)
            .iter()
            .filter_map(|record| record.pid.map(u64::from))
            .filter(|pid| is_stopped(*pid))
            .collect();
        self.program_ids.clear();
        if !std::thread::panicking() {
            assert!(teardown_ok, "guardd --teardown failed: {teardown_err}");
            assert!(!pins_left, "pins left in {}", self.pin_dir.display());
            assert!(
                stopped.is_empty(),
                "held processes left stopped: {stopped:?}"
            );
            assert!(
                programs_left.is_empty(),
                "programs left loaded: {programs_left:?}"
            );
            assert!(maps_left.is_empty(), "maps left loaded: {maps_left:?}");
            assert!(
                probes_left.is_empty(),
                "tracefs probes left: {probes_left:?}"
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn argv_has(hold: &HoldView, word: &str) -> bool {
    hold.argv.iter().any(|a| a == word)
}

/// A process tree the test started, in its own process group so that it can
/// be ended as a whole (by the pgid the test created, never by name).
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // A script written just now is "text file busy" while a child that
        // another test thread forked still holds its write fd (until it execs).
        for _ in 0..100 {
            match command.spawn() {
                Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) => {
                    sleep(Duration::from_millis(10))
                }
                spawned => {
                    return Self {
                        child: Some(spawned.expect("spawn")),
                    }
                }
            }
        }
        panic!("spawn: text file busy for a second");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn wait(mut self) -> (ExitStatus, String, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                kill_group(child.id());
                let _ = child.wait();
                panic!("process {} did not finish", child.id());
            }
            sleep(Duration::from_millis(10));
        }
        let status = child.wait().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.wait();
        }
    }
}

pub fn kill_group(pgid: u32) {
    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
}

/// The process state letter from /proc/PID/stat ('T' = stopped).
pub fn state(pid: u64) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.trim().chars().next())
        .unwrap_or('?')
}

/// For a failed check on a process that should be stopped: its state and,
/// for a zombie, how it ended (the wait status, the last field of stat).
pub fn describe(pid: u64) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let status = stat.split_whitespace().last().unwrap_or("?");
    format!("state {}, wait status {status}", state(pid))
}

/// Whether a process is stopped: by a signal ('T') or in ptrace-stop ('t').
pub fn is_stopped(pid: u64) -> bool {
    matches!(state(pid), 'T' | 't')
}

/// Waits until a process has stopped (the kernel's stop lands on return to
/// user mode), or is held frozen (which it may be before the stop lands).
pub fn wait_stopped(pid: u64) {
    let deadline = Instant::now() + WAIT;
    while !is_stopped(pid) && frozen_leaf(pid).is_none() {
        assert!(
            Instant::now() < deadline,
            "pid {pid} is {:?}, not stopped",
            state(pid)
        );
        sleep(Duration::from_millis(5));
    }
}

/// What `guardctl status --json` says about one capability.
pub fn mechanism(status: &StatusView, capability: &str) -> String {
    status
        .mechanisms
        .iter()
        .find(|(name, _)| name == capability)
        .map(|(_, mechanism)| mechanism.clone())
        .unwrap_or_else(|| panic!("no mechanism {capability}: {status:?}"))
}

/// Whether this guardd runs the BPF LSM hooks. Where the test environment
/// says the kernel has the BPF LSM (`cargo xtask vm-test` sets
/// AGENT_GUARD_EXPECT_LSM=1), a guardd without them fails the test.
pub fn lsm_active(status: &StatusView) -> bool {
    let active = !mechanism(status, "hold_release_protection").contains("task_kill: not here");
    if std::env::var("AGENT_GUARD_EXPECT_LSM").as_deref() == Ok("1") {
        assert!(
            active,
            "the BPF LSM is expected here but guardd did not load it: {status:?}"
        );
    }
    active
}

/// The preamble of most tests: as root, fresh stubs and a guardd with
/// `policy`. Bind both (`let (stubs, guard) = ...`) so that they are dropped
/// in that order's reverse, as separate `let`s were.
pub fn setup(policy: &str) -> (Stubs, Daemon) {
    require_root();
    let stubs = Stubs::new();
    let guard = Daemon::start(policy);
    (stubs, guard)
}

/// `setup`, then `guardctl run -- ARGS` in a session and the pending request
/// whose argv contains `word`.
pub fn setup_held(policy: &str, args: &[&str], word: &str) -> (Stubs, Daemon, Proc, HoldView) {
    let (stubs, guard) = setup(policy);
    let run = guard.session(&stubs, args);
    let hold = guard.wait_hold(word);
    (stubs, guard, run, hold)
}

/// An ed25519 key pair made by ssh-keygen; returns the private key's path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    key
}

pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs and must run as root"
    );
}

/// A tree of 3 levels and `files` files.
pub fn tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 3)).join("deeper");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), "keep me").unwrap();
    }
}

pub fn count(root: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        n += 1;
        if entry.file_type().unwrap().is_dir() {
            n += count(&entry.path());
        }
    }
    n
}

pub fn wait_for_file(path: &std::path::Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "no {}", path.display());
        sleep(Duration::from_millis(10));
    }
}

/// The pid of the stopped process whose command line has `word` (this test's own).
pub fn wait_for_stopped_command(word: &str) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|arg| arg == word.as_bytes()) && is_stopped(pid) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "nothing stopped with {word:?}");
        sleep(Duration::from_millis(10));
    }
}

/// Sends SIGCONT to a process this test started; false when refused (the BPF
/// LSM lets only guardd continue a held process).
pub fn sigcont(pid: u64) -> bool {
    unsafe { libc::kill(pid as i32, libc::SIGCONT) == 0 }
}

/// A `terraform` stub that records its arguments, then runs on for 30 s in
/// the same process (a kill of the held pid ends it all).
pub fn long_running_stub(stubs: &Stubs) -> String {
    format!("echo \"$*\" >> {}\nexec sleep 30", stubs.marker().display())
}

/// A frozen guardd; thawed when dropped.
pub struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// That `hold` is one request for the tree at `dir` (its reason says so).
pub fn assert_request_under(hold: &HoldView, dir: &Path) {
    let under = format!("under {}", dir.display());
    assert!(
        hold.why.iter().any(|w| w.contains(&under)),
        "not {under}: {:?}",
        hold.why
    );
}

/// A protected tree in `dir` and a shell line that hard-links one of its
/// files to a name outside it and empties the file through that name
/// (`ln P/f A && : > A`), echoing `ln=STATUS`.
pub struct LinkOut {
    pub protected: PathBuf,
    pub file: PathBuf,
    pub alias: PathBuf,
    pub script: String,
}

impl LinkOut {
    pub fn new(dir: &Path) -> Self {
        let protected = dir.join("precious");
        tree(&protected, 3);
        let file = protected.join("d0/deeper/f0");
        let alias = dir.join("alias");
        let script = format!(
            "ln {f} {a} && : > {a}; echo ln=$?",
            f = file.display(),
            a = alias.display()
        );
        Self {
            protected,
            file,
            alias,
            script,
        }
    }

    /// After a denial: ln failed, no second name, the file kept its bytes.
    pub fn assert_refused(&self, (status, out, err): (std::process::ExitStatus, String, String)) {
        assert!(status.success(), "{err}");
        assert_eq!(out, "ln=1\n", "{err}");
        assert!(!self.alias.exists(), "the second name was made");
        assert_eq!(std::fs::read_to_string(&self.file).unwrap(), "keep me");
    }
}

/// The cgroup2 mount point, where one is mounted (the freezer's hierarchy).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (fields, tail) = line.split_once(" - ")?;
        (tail.starts_with("cgroup2 ")).then(|| PathBuf::from(fields.split(' ').nth(4).unwrap()))
    })
}

/// Whether held processes must be frozen here: a cgroup2 hierarchy is mounted.
pub fn freezer_here() -> bool {
    cgroup2_mount().is_some()
}

/// The cgroup2 path of a process (`/user.slice/...`).
pub fn cgroup_of(pid: u64) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}

/// The frozen agent-guard leaf the process is in, read from the kernel: its
/// cgroup is under `agent-guard/` and that cgroup's `cgroup.freeze` is 1.
pub fn frozen_leaf(pid: u64) -> Option<PathBuf> {
    let path = cgroup_of(pid);
    if !path.starts_with("/agent-guard/") {
        return None;
    }
    let leaf = cgroup2_mount()?.join(path.trim_start_matches('/'));
    let freeze = fs::read_to_string(leaf.join("cgroup.freeze")).ok()?;
    (freeze.trim() == "1").then_some(leaf)
}

/// Waits until `pid` has left the stopped state: a SIGCONT reached it.
pub fn wait_woken(pid: u64) {
    let deadline = Instant::now() + WAIT;
    while is_stopped(pid) {
        assert!(Instant::now() < deadline, "pid {pid} is still stopped");
        sleep(Duration::from_millis(5));
    }
}

/// Whether `signal` is pending for the whole process (`ShdPnd`), not yet delivered.
pub fn signal_pending(pid: u64, signal: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("ShdPnd:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}
