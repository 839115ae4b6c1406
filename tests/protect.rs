//! Self-protection and hold integrity in the kernel (BPF LSM). Where the
//! kernel has no BPF LSM (the usual host), these tests check that guardd
//! says so; `cargo xtask vm-test` runs them on a kernel booted with the BPF
//! LSM and AGENT_GUARD_EXPECT_LSM=1, where every refusal is checked.
mod common;

use std::{
    collections::BTreeMap,
    ffi::CString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
};

use common::*;
use serde_json::{json, Value};

const ATTACK_ENV: &str = "AGENT_GUARD_TEST_ATTACK";

/// On a kernel without the BPF LSM, status must say the hooks are absent and why.
fn lsm_or_explained(guard: &Daemon) -> bool {
    let status = guard.status();
    if lsm_active(&status) {
        return true;
    }
    for capability in ["hold_release_protection", "self_protection"] {
        let text = mechanism(&status, capability);
        assert!(text.contains("not here: "), "{capability}: {text}");
    }
    false
}

#[test]
fn sessions_cannot_signal_trace_or_change_the_guard() {
    let (stubs, guard) = setup(HOLD_TERRAFORM_DESTROY);
    if !lsm_or_explained(&guard) {
        return guard.stop();
    }
    let state_dir = guard.dir.path().join("state");
    let config = guard.dir.path().join("policy.toml");
    let config_before = std::fs::read(&config).unwrap();
    let exec_gate_pin = guard.pin_dir.join("links/exec_gate");
    assert!(state_dir.join("requests.json").exists());
    let targets = json!({
        "guardd": guard.pid(),
        "config": config,
        "audit": guard.audit_log,
        "socket": guard.socket,
        "pin": exec_gate_pin,
        "state_file": state_dir.join("requests.json"),
        "state_dir": state_dir,
        "free_dir": stubs.dir.path(),
    });
    let exe = std::env::current_exe().unwrap();
    let mut command = guard.ctl_command(&["run", "--"]);
    command
        .arg(&exe)
        .args(["--exact", "attack_from_inside_a_session", "--nocapture"])
        .env(ATTACK_ENV, targets.to_string());
    let (status, out, err) = Proc::spawn(command).wait();
    assert!(status.success(), "{out}\n{err}");
    let line = out
        .lines()
        // libtest may have printed "test NAME ... " on the same line first.
        .find_map(|l| l.split_once("ATTACKS ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no result from the session: {out}\n{err}"));
    let results: BTreeMap<String, i32> = serde_json::from_str(line).unwrap();
    let expected: BTreeMap<String, i32> = [
        ("signal_guardd", libc::EPERM),
        ("probe_guardd_alive", 0),
        ("trace_guardd", libc::EPERM),
        // procfs turns a refused ptrace access check into EACCES.
        ("read_guardd_memory", libc::EACCES),
        ("bpf_map_create", libc::EPERM),
        ("bpf_open_pin", libc::EPERM),
        ("write_config", libc::EPERM),
        ("truncate_config", libc::EPERM),
        ("read_config", 0),
        ("replace_config", libc::EPERM),
        ("write_audit_log", libc::EPERM),
        ("unlink_pin", libc::EPERM),
        ("unlink_socket", libc::EPERM),
        ("rename_state_file", libc::EPERM),
        ("create_in_state_dir", libc::EPERM),
        ("write_elsewhere", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(results, expected);
    // Nothing changed, and guardd still answers.
    assert_eq!(std::fs::read(&config).unwrap(), config_before);
    assert!(exec_gate_pin.exists() && guard.socket.exists());
    assert!(state_dir.join("requests.json").exists());
    assert!(guard.status().pid == guard.pid());
    guard.stop();
}

#[test]
fn only_guardd_continues_a_held_process_even_while_it_is_down() {
    let (stubs, mut guard) = setup(HOLD_TERRAFORM_DESTROY);
    if !lsm_or_explained(&guard) {
        return guard.stop();
    }
    let run = guard.session(&stubs, &["terraform", "destroy"]);
    let hold = guard.wait_hold("destroy");
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    let sigcont = || {
        let sent = unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        (sent, std::io::Error::last_os_error().raw_os_error())
    };
    assert_eq!(sigcont(), (-1, Some(libc::EPERM)));
    // Without guardd, the process is in plain group-stop: only the LSM keeps it there.
    guard.stop_daemon(libc::SIGTERM);
    assert_eq!(sigcont(), (-1, Some(libc::EPERM)));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(is_stopped(pid), "state {}", state(pid));
    assert_eq!(stubs.marker_text(), "");
    guard.spawn();
    guard.decide("approve", &hold);
    assert!(run.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy\n");
    guard.stop();
}

/// Not a test of its own: the body `sessions_cannot_signal_trace_or_change_the_guard`
/// runs inside an agent session. Each attempt prints its errno (0: it worked).
#[test]
fn attack_from_inside_a_session() {
    let Ok(targets) = std::env::var(ATTACK_ENV) else {
        return;
    };
    let t: Value = serde_json::from_str(&targets).unwrap();
    let path = |key: &str| PathBuf::from(t[key].as_str().unwrap());
    let guardd = t["guardd"].as_i64().unwrap() as i32;
    let mut results = BTreeMap::new();
    let mut record = |name: &str, ret: i64| {
        let errno = if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        } else {
            0
        };
        results.insert(name.to_string(), errno);
    };
    unsafe {
        record("signal_guardd", libc::kill(guardd, libc::SIGTERM) as i64);
        record("probe_guardd_alive", libc::kill(guardd, 0) as i64);
        let attached = libc::ptrace(libc::PTRACE_ATTACH, guardd, 0, 0);
        record("trace_guardd", attached);
        if attached == 0 {
            libc::ptrace(libc::PTRACE_DETACH, guardd, 0, 0);
        }
        record(
            "read_guardd_memory",
            open(Path::new(&format!("/proc/{guardd}/mem")), libc::O_RDONLY),
        );
        record("bpf_map_create", bpf_map_create());
        record("bpf_open_pin", bpf_obj_get(&path("pin")));
        record(
            "write_config",
            open(&path("config"), libc::O_WRONLY | libc::O_APPEND),
        );
        let config = c(&path("config"));
        record("truncate_config", libc::truncate(config.as_ptr(), 0) as i64);
        record("read_config", open(&path("config"), libc::O_RDONLY));
        let replacement = path("free_dir").join("policy.toml.new");
        std::fs::write(&replacement, "version = 1\nbase = \"none\"\n").unwrap();
        record(
            "replace_config",
            libc::rename(c(&replacement).as_ptr(), config.as_ptr()) as i64,
        );
        record(
            "write_audit_log",
            open(&path("audit"), libc::O_WRONLY | libc::O_APPEND),
        );
        record("unlink_pin", libc::unlink(c(&path("pin")).as_ptr()) as i64);
        record(
            "unlink_socket",
            libc::unlink(c(&path("socket")).as_ptr()) as i64,
        );
        let moved = path("state_dir").join("moved.json");
        record(
            "rename_state_file",
            libc::rename(c(&path("state_file")).as_ptr(), c(&moved).as_ptr()) as i64,
        );
        record(
            "create_in_state_dir",
            open(
                &path("state_dir").join("planted.json"),
                libc::O_WRONLY | libc::O_CREAT,
            ),
        );
        record(
            "write_elsewhere",
            open(
                &path("free_dir").join("free.txt"),
                libc::O_WRONLY | libc::O_CREAT,
            ),
        );
    }
    println!("ATTACKS {}", serde_json::to_string(&results).unwrap());
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

/// open(2), closing the descriptor again when it worked.
unsafe fn open(path: &Path, flags: i32) -> i64 {
    let fd = unsafe { libc::open(c(path).as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
    fd as i64
}

/// bpf(BPF_MAP_CREATE) of a one-entry array.
unsafe fn bpf_map_create() -> i64 {
    // map_type, key_size, value_size, max_entries, then zeroes.
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[2, 4, 4, 1]);
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), size_of_val(&attr)) };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
    }
    fd
}

/// bpf(BPF_OBJ_GET) of a pinned object.
unsafe fn bpf_obj_get(pin: &Path) -> i64 {
    let name = c(pin);
    let mut attr = [0u64; 16];
    attr[0] = name.as_ptr() as u64;
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, attr.as_ptr(), size_of_val(&attr)) };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
    }
    fd
}

// ---- files that run later, and guardd's own files, by the syscall gate ------

/// A user of the test's own (removed again on drop), whose home is a temp
/// dir: `~` in `[[protect]]` is the home of the session's user by
/// /etc/passwd, and no real home may be touched.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestUser {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix("agent-guard-home-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let name = format!("ag-test-{}", std::process::id());
        let out = std::process::Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", "--home-dir"])
            .arg(&home)
            .arg(&name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| {
            let out = std::process::Command::new("id")
                .args([flag, &name])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        Self {
            name,
            uid,
            gid,
            home,
            _dir: dir,
        }
    }

    /// Writes `name` in the home, owned by the user.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.home.join(name);
        std::fs::write(&path, text).unwrap();
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid)).unwrap();
        path
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .output();
    }
}

/// `guardd` lets the user reach its socket (the harness's dir is 0700).
fn open_socket_dir(guard: &Daemon) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(guard.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
}

#[test]
fn a_line_added_to_bashrc_in_a_gated_session_is_held_and_a_denial_keeps_the_file() {
    require_root();
    let user = TestUser::new();
    let bashrc = user.file(".bashrc", "# the developer's own\n");
    let before = std::fs::read(&bashrc).unwrap();
    // The default pack, with the seccomp gate in launched sessions.
    let guard = Daemon::start("version = 1\n[defaults]\nsyscall_gate = true\n");
    open_socket_dir(&guard);
    let script = "echo 'touch MARKER' >> \"$HOME/.bashrc\"";
    // The user may not search a checkout in a 0700 directory (mktemp -d):
    // a copy of guardctl in the user's own 0755 directory.
    let ctl = user._dir.path().join("guardctl");
    std::fs::copy(guardctl_bin(), &ctl).unwrap();
    let mut command = std::process::Command::new(&ctl);
    command
        .arg("--socket")
        .arg(&guard.socket)
        .args(["run", "--", "sh", "-c", script]);
    command
        .uid(user.uid)
        .gid(user.gid)
        .env("HOME", &user.home)
        .current_dir(&user.home);
    let run = Proc::spawn(command);
    let hold = guard.wait_hold("-c");
    assert_eq!(hold.rule, "runs-later");
    assert_eq!(
        hold.operation,
        Some(format!("write {}", bashrc.display())),
        "{hold:?}"
    );
    guard.decide("deny", &hold);
    let (status, _, stderr) = run.wait();
    assert!(!status.success(), "{stderr}");
    assert_eq!(std::fs::read(&bashrc).unwrap(), before, "~/.bashrc changed");
    assert_eq!(guard.audit_events(AuditEvent::Deny).len(), 1);
    guard.stop();
}

const HOLD_DESTROY_GATED: &str = r#"
version = 1
base = "none"
[defaults]
syscall_gate = true
[[rule]]
id = "tf-destroy"
programs = ["terraform"]
subcommand = ["destroy"]
action = "hold"
"#;

/// Disables the policy's one rule.
const DISABLE_RULE: &str = "[[rule]]\nid = \"tf-destroy\"\ndisabled = true\n";

/// `terraform destroy` in a session is still held: denied, it never ran.
fn destroy_is_still_held(guard: &Daemon, stubs: &Stubs) {
    let run = guard.session(stubs, &["terraform", "destroy"]);
    let hold = guard.wait_hold("destroy");
    assert_eq!(hold.rule, "tf-destroy");
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "", "terraform destroy ran");
}

#[test]
fn a_gated_session_cannot_write_guardd_policy_d_or_remove_its_pins() {
    let (stubs, guard) = setup(HOLD_DESTROY_GATED);
    let dropins = guard.dir.path().join("policy.d");
    std::fs::create_dir(&dropins).unwrap();
    let zz = dropins.join("zz.toml");
    let config = guard.dir.path().join("policy.toml");
    let config_before = std::fs::read(&config).unwrap();
    let code = "import shutil, sys\n\
                def attempt(name, f):\n    \
                    try:\n        f()\n        print(name, 'done')\n    \
                    except PermissionError:\n        print(name, 'EPERM')\n\
                attempt('dropin', lambda: open(sys.argv[1], 'w').write(sys.argv[2]))\n\
                attempt('config', lambda: open(sys.argv[3], 'a').write(sys.argv[2]))\n\
                attempt('pins', lambda: shutil.rmtree(sys.argv[4]))\n";
    let run = guard.session(
        &stubs,
        &[
            "python3",
            "-c",
            code,
            zz.to_str().unwrap(),
            DISABLE_RULE,
            config.to_str().unwrap(),
            guard.pin_dir.to_str().unwrap(),
        ],
    );
    let (status, out, err) = run.wait();
    assert!(status.success(), "{out}{err}");
    assert_eq!(out, "dropin EPERM\nconfig EPERM\npins EPERM\n", "{err}");
    assert!(!zz.exists());
    assert_eq!(std::fs::read(&config).unwrap(), config_before);
    assert!(guard.pin_dir.join("links/exec_gate").exists());
    let denied = guard.audit_events(AuditEvent::Deny);
    assert!(
        denied
            .iter()
            .any(|r| r.rule.as_deref() == Some("agent-guard-self")
                && r.operation == Some(format!("write {}", zz.display()))),
        "{denied:?}"
    );
    // Past a reload tick: the rule still holds.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    destroy_is_still_held(&guard, &stubs);
    guard.stop();
}

#[test]
fn a_policy_drop_in_written_from_a_reported_session_is_refused_at_reload() {
    require_root();
    let stubs = Stubs::new();
    // The default syscall_gate ("auto"), an agent no launcher started.
    let guard = Daemon::start(&format!(
        "{}\n[agents]\nprograms = [\"claude\"]\n",
        HOLD_TERRAFORM_DESTROY
    ));
    if lsm_active(&guard.status()) {
        // The BPF LSM refuses the write itself (sessions_cannot_signal_trace_or_change_the_guard).
        return guard.stop();
    }
    let dropins = guard.dir.path().join("policy.d");
    std::fs::create_dir(&dropins).unwrap();
    let zz = dropins.join("zz.toml");
    let (go, then) = (stubs.dir.path().join("go"), stubs.dir.path().join("then"));
    let agent = stubs.script(
        "claude",
        &format!(
            "while [ ! -e {go} ]; do sleep 0.05; done\n\
             printf '{rule}' > {zz}\n\
             while [ ! -e {then} ]; do sleep 0.05; done\n\
             terraform destroy",
            go = go.display(),
            then = then.display(),
            rule = DISABLE_RULE.replace('\n', "\\n"),
            zz = zz.display(),
        ),
    );
    let mut agent = std::process::Command::new(agent);
    agent.env("PATH", stubs.path_env());
    let agent = Proc::spawn(agent);
    // Reporting starts once guardd has seen the session.
    wait_until(|| guard.reporting(), "report-only program attached");
    std::fs::write(&go, "").unwrap();
    wait_until(
        || {
            guard.audit_events(AuditEvent::Refuse).iter().any(|r| {
                r.rule.as_deref() == Some("agent-guard-self")
                    && r.operation == Some(format!("write {}", zz.display()))
                    && r.pid.is_some()
                    && r.session.is_some()
            })
        },
        "the reload refused and audited",
    );
    assert!(zz.exists(), "report only: the write ran");
    let refused: Vec<AuditRecord> = guard
        .audit_events(AuditEvent::PolicyReload)
        .into_iter()
        .filter(|r| r.decision == Some(AuditDecision::Refused))
        .collect();
    assert!(!refused.is_empty());
    let error = guard.status().policy.last_reload_error.unwrap_or_default();
    assert!(
        error.starts_with("refused: a policy file was changed from inside an agent session")
            && error.contains(zz.to_str().unwrap()),
        "{error}"
    );
    assert!(
        guard.log().contains("policy reload refused"),
        "{}",
        guard.log()
    );
    // The old policy is in force: the drop-in's change is not.
    std::fs::write(&then, "").unwrap();
    let hold = guard.wait_hold("destroy");
    assert_eq!(hold.rule, "tf-destroy");
    guard.decide("deny", &hold);
    let _ = agent.wait();
    assert_eq!(stubs.marker_text(), "", "terraform destroy ran");
    // Removed from outside every session, the next reload loads again.
    std::fs::remove_file(&zz).unwrap();
    wait_until(
        || {
            guard.status().policy.last_reload_error.is_none()
                && guard
                    .audit_events(AuditEvent::PolicyReload)
                    .iter()
                    .any(|r| matches!(r.decision, Some(AuditDecision::Loaded(_))))
        },
        "a reload after the drop-in was removed",
    );
    guard.stop();
}

fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
