//! The syscall gate in `guardctl run` sessions (seccomp user notification):
//! deleting or moving a protected tree is one held request; a denial leaves
//! every file in place and the call fails with EPERM; an approval lets the
//! whole tree go; unprotected paths pass without a hold.
mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;

fn guard_protecting(protected: &Path) -> Daemon {
    Daemon::start(&format!(
        "version = 1\nbase = \"none\"\n[defaults]\nsyscall_gate = true\n[[protect]]\nid = \"precious\"\npaths = [\"{}\"]\n",
        protected.display()
    ))
}

fn python(guard: &Daemon, stubs: &Stubs, code: &str, arg: &Path) -> Proc {
    guard.session(stubs, &["python3", "-c", code, arg.to_str().unwrap()])
}

const RMTREE: &str = "import shutil, sys; shutil.rmtree(sys.argv[1])";
const RENAME: &str = "import os, sys; os.rename('other/../precious', sys.argv[1])";

#[test]
fn deleting_a_protected_tree_is_one_request_and_a_denial_keeps_every_file() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    tree(&protected, 60);
    let before = count(&protected);
    let guard = guard_protecting(&protected);

    let run = python(&guard, &stubs, RMTREE, &protected);
    let hold = guard.wait_hold(RMTREE);
    let id = hold.id.clone();
    let operation = hold.operation.as_deref().unwrap();
    assert!(
        operation.starts_with("unlink ") && operation.contains(protected.to_str().unwrap()),
        "{operation}"
    );
    assert_eq!(hold.rule, "precious");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(guard.pending().len(), 1, "one request for the tree");
    assert!(guard.ctl(&["deny", &id]).status.success());
    let (status, _, stderr) = run.wait();
    assert!(!status.success());
    assert!(stderr.contains("PermissionError: [Errno 1]"), "{stderr}");
    assert_eq!(count(&protected), before, "a file went missing");

    // Approved: the whole tree goes, still with one request.
    let run = python(&guard, &stubs, RMTREE, &protected);
    let hold = guard.wait_hold(RMTREE);
    assert_ne!(hold.id.as_str(), id);
    guard.decide("approve", &hold);
    let (status, _, stderr) = run.wait();
    assert!(status.success(), "{stderr}");
    assert!(!protected.exists());
    assert_eq!(
        guard.audit_events(AuditEvent::Hold).len(),
        2,
        "one hold per run"
    );
    let approved = &guard.audit_events(AuditEvent::Approve)[0];
    assert!(approved
        .operation
        .as_deref()
        .unwrap()
        .starts_with("unlink "));
    guard.stop();
}

#[test]
fn unprotected_trees_and_writes_pass_and_moving_a_protected_tree_away_is_held() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    let scratch = dir.path().join("scratch");
    tree(&protected, 6);
    tree(&scratch, 30);
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let guard = guard_protecting(&protected);

    // Unprotected: removed, and files written, with no request at all.
    let run = python(
        &guard,
        &stubs,
        "import shutil, sys, os; shutil.rmtree(sys.argv[1]); open(sys.argv[1] + '.log', 'w').write('x'); os.chmod(sys.argv[1] + '.log', 0o600)",
        &scratch,
    );
    let (status, _, stderr) = run.wait();
    assert!(status.success(), "{stderr}");
    assert!(!scratch.exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("scratch.log")).unwrap(),
        "x"
    );
    // Relative paths and `..` resolve to the protected tree: still held.
    let elsewhere: PathBuf = dir.path().join("moved");
    let mut session = guard.ctl_command(&[
        "run",
        "--",
        "python3",
        "-c",
        RENAME,
        elsewhere.to_str().unwrap(),
    ]);
    session.current_dir(dir.path());
    let run = Proc::spawn(session);
    let hold = guard.wait_hold(RENAME);
    assert!(hold
        .operation
        .as_deref()
        .unwrap()
        .starts_with(&format!("rename {}", protected.display())));
    guard.decide("deny", &hold);
    let (status, _, stderr) = run.wait();
    assert!(!status.success());
    assert!(stderr.contains("PermissionError"), "{stderr}");
    assert!(protected.exists() && !elsewhere.exists());
    assert_eq!(guard.audit_events(AuditEvent::Hold).len(), 1);
    guard.stop();
}

/// The listener's thread answers the calls no protection covers itself, by
/// the protections guardd published: one a reload adds holds the next call
/// of a session already running.
#[test]
fn a_protection_added_by_a_reload_holds_the_next_call_of_a_running_session() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let (kept, later) = (dir.path().join("kept"), dir.path().join("later"));
    tree(&kept, 1);
    std::fs::create_dir(&later).unwrap();
    let (first, second, go) = (
        later.join("first"),
        later.join("second"),
        dir.path().join("go"),
    );
    std::fs::write(&first, "x").unwrap();
    std::fs::write(&second, "x").unwrap();
    let guard = guard_protecting(&kept);
    // One line: the hold shows argv with control characters escaped.
    let code = "import os, sys, time; os.unlink(sys.argv[1] + '/first'); \
                [time.sleep(0.02) for _ in iter(lambda: os.path.exists(sys.argv[1] + '/../go'), True)]; \
                os.unlink(sys.argv[1] + '/second')";
    let run = python(&guard, &stubs, code, &later);
    wait_for(|| !first.exists(), "the unprotected unlink");
    let config = guard.dir.path().join("policy.toml");
    let policy = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        policy.replace(
            &format!("paths = [\"{}\"]", kept.display()),
            &format!("paths = [\"{}\", \"{}\"]", kept.display(), later.display()),
        ),
    )
    .unwrap();
    let version = guard.status().policy.version;
    unsafe { libc::kill(guard.pid() as i32, libc::SIGHUP) };
    wait_for(|| guard.status().policy.version != version, "the reload");
    std::fs::write(&go, "").unwrap();
    let hold = guard.wait_hold(code);
    assert!(
        hold.operation.as_deref().unwrap().contains("second"),
        "{hold:?}"
    );
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    assert!(second.exists(), "the denied unlink ran");
    guard.stop();
}

#[test]
fn guardd_protect_adds_a_held_path_and_status_says_how_each_operation_is_gated() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("cli");
    tree(&protected, 3);
    let guard = Daemon::start_with(
        "version = 1\nbase = \"none\"\n[defaults]\nsyscall_gate = true\n",
        &["--protect", protected.to_str().unwrap()],
    );
    let unlink = mechanism(&guard.status(), "syscall_gate.unlink");
    assert!(unlink.starts_with("seccomp user notification"), "{unlink}");
    let run = python(&guard, &stubs, RMTREE, &protected);
    let hold = guard.wait_hold(RMTREE);
    assert_eq!(hold.rule, "guardd --protect");
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    assert_eq!(count(&protected), 9);
    guard.stop();
}

#[test]
fn a_held_call_fails_closed_when_guardd_restarts() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    tree(&protected, 9);
    let before = count(&protected);
    let mut guard = guard_protecting(&protected);
    let run = python(&guard, &stubs, RMTREE, &protected);
    guard.wait_hold(RMTREE);
    // The listener goes with guardd: the waiting call fails, nothing is deleted.
    guard.restart();
    let (status, _, stderr) = run.wait();
    assert!(!status.success());
    assert!(stderr.contains("[Errno 38]"), "ENOSYS expected: {stderr}");
    assert_eq!(count(&protected), before);
    assert!(guard.pending().is_empty(), "a held call is not re-adopted");
    guard.stop();
}

#[test]
fn without_the_lsm_detected_sessions_are_reported_not_held() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    let scratch = dir.path().join("scratch");
    tree(&protected, 6);
    std::fs::create_dir(&scratch).unwrap();
    // The default syscall_gate ("auto"), an agent no launcher started.
    let guard = Daemon::start(&format!(
        "version = 1\nbase = \"none\"\n[agents]\nprograms = [\"claude\"]\n[[protect]]\nid = \"precious\"\npaths = [\"{}\"]\n",
        protected.display()
    ));
    if lsm_active(&guard.status()) {
        // Held there instead: tests/gate_lsm.rs.
        return guard.stop();
    }
    let unlink = mechanism(&guard.status(), "syscall_gate.unlink");
    assert!(unlink.starts_with("report only"), "{unlink}");
    assert!(
        !guard.reporting(),
        "no session yet: the sys_enter tracepoints would slow every call of the machine"
    );
    let p = protected.display();
    let s = scratch.display();
    run_detected_agent(
        &guard,
        &stubs,
        dir.path(),
        &format!(
            "rm {p}/d0/deeper/f0 && echo x > {p}/new && mv {p}/d1 {p}/d1b && echo y > {s}/log"
        ),
    );
    assert!(guard.pending().is_empty(), "report only: nothing is held");
    let reported = wait_reported(
        &guard,
        &[
            format!("unlink {p}/d0/deeper/f0"),
            format!("write {p}/new"),
            format!("rename {p}/d1"),
        ],
    );
    assert!(
        !reported.iter().any(|o| o.contains("scratch")),
        "an unprotected path was reported: {reported:?}"
    );
    wait_for(
        || !guard.reporting(),
        "report-only program detached after the session",
    );
    guard.stop();
}

#[test]
fn without_the_lsm_dev_null_writes_stay_in_the_kernel_unless_protected() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    std::fs::create_dir(&protected).unwrap();
    let p = protected.display();
    for covered in [false, true] {
        let extra = if covered { "\"/dev/null\", " } else { "" };
        let guard = Daemon::start(&format!(
            "version = 1\nbase = \"none\"\n[agents]\nprograms = [\"claude\"]\n[[protect]]\nid = \"precious\"\npaths = [{extra}\"{p}\"]\n"
        ));
        if lsm_active(&guard.status()) {
            return guard.stop();
        }
        let quiet = guard.status().stats.quiet_opens;
        assert_eq!(
            quiet.iter().any(|q| q == "/dev/null"),
            !covered,
            "quiet paths with /dev/null protected: {covered}: {quiet:?}"
        );
        assert!(quiet.iter().any(|q| q == "/dev/zero"), "{quiet:?}");
        let before = guard.status().stats.quiet_opens_skipped;
        run_detected_agent(
            &guard,
            &stubs,
            dir.path(),
            &format!("for i in $(seq 100); do : > /dev/null; done; echo x > {p}/new-{covered}"),
        );
        let reported = wait_reported(&guard, &[format!("write {p}/new-{covered}")]);
        let skipped = guard.status().stats.quiet_opens_skipped - before;
        if covered {
            assert_eq!(skipped, 0, "a protected path's opens are all sent");
            wait_reported(&guard, &["write /dev/null".to_string()]);
        } else {
            assert!(
                skipped >= 100,
                "{skipped} opens of /dev/null left in the kernel"
            );
            assert!(
                !reported.iter().any(|r| r.contains("/dev/null")),
                "{reported:?}"
            );
        }
        guard.stop();
    }
}

/// Runs `script` as a detected agent (`claude`) once guardd reports its
/// calls, and checks it succeeded.
fn run_detected_agent(guard: &Daemon, stubs: &Stubs, dir: &Path, script: &str) {
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let mut agent = std::process::Command::new(stubs.script(
        "claude",
        &format!(
            "while [ ! -e {go} ]; do sleep 0.05; done\n{script} && echo ok",
            go = go.display()
        ),
    ));
    agent.env("PATH", stubs.path_env());
    let agent = Proc::spawn(agent);
    // Reporting starts once guardd has seen the session (documented).
    wait_for(|| guard.reporting(), "report-only program attached");
    std::fs::write(&go, "").unwrap();
    let (status, out, err) = agent.wait();
    assert!(status.success() && out == "ok\n", "{out}{err}");
}

/// Waits until every one of `expected` is among the report-only audit
/// records' operations; returns them all.
fn wait_reported(guard: &Daemon, expected: &[String]) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reported: Vec<String> = guard
            .audit_events(AuditEvent::Audit)
            .iter()
            .filter(|r| r.reason.as_deref().unwrap_or("").starts_with("report only"))
            .filter_map(|r| r.operation.clone())
            .collect();
        if expected.iter().all(|e| reported.iter().any(|r| r == e)) {
            return reported;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reported: {expected:?} in {reported:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(condition: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The default pack's `outside-workspace` entry: a library call deleting a
/// tree outside the session's working tree is one held request (and a denial
/// keeps every file); the workspace and /tmp are left out.
#[test]
fn deleting_outside_the_workspace_is_held_by_the_default_pack() {
    require_root();
    let stubs = Stubs::new();
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap_or("/root".into()));
    let outside = tempfile::tempdir_in(&home).unwrap();
    let victim = outside.path().join("victim");
    tree(&victim, 20);
    let before = count(&victim);
    let workspace = tempfile::tempdir_in(&home).unwrap();
    let scratch = workspace.path().join("target");
    tree(&scratch, 10);
    let temp = tempfile::tempdir().unwrap();
    tree(&temp.path().join("t"), 10);
    // The default pack, with the seccomp gate asked for where the LSM is missing.
    let guard = Daemon::start("version = 1\n[defaults]\nsyscall_gate = true\n");
    let rmtree = |target: &Path| {
        let mut session = guard.ctl_command(&[
            "run",
            "--",
            "python3",
            "-c",
            RMTREE,
            target.to_str().unwrap(),
        ]);
        session
            .env("PATH", stubs.path_env())
            .current_dir(workspace.path());
        Proc::spawn(session)
    };

    // In the workspace and in /tmp: no request at all.
    for target in [scratch.clone(), temp.path().join("t")] {
        let (status, _, stderr) = rmtree(&target).wait();
        assert!(status.success(), "{stderr}");
        assert!(!target.exists());
    }
    assert!(guard.audit_events(AuditEvent::Hold).is_empty());

    let run = rmtree(&victim);
    let hold = guard.wait_hold(RMTREE);
    assert_eq!(hold.rule, "outside-workspace");
    // The session says which workspace is left out.
    let workspace_text = workspace.path().display().to_string();
    let status = guard.status();
    assert_eq!(
        status.sessions[0].workspace.as_deref(),
        Some(workspace_text.as_str())
    );
    let human = guard.ctl(&["status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains(&format!("workspace {workspace_text}")),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
    let operation = hold.operation.as_deref().unwrap();
    assert!(
        operation.starts_with("unlink ") && operation.contains(victim.to_str().unwrap()),
        "{operation}"
    );
    // One request for the outermost directory holding no home or workspace.
    assert_request_under(&hold, outside.path());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(guard.pending().len(), 1, "one request for the tree");
    guard.decide("deny", &hold);
    let (status, _, stderr) = run.wait();
    assert!(!status.success());
    assert!(stderr.contains("PermissionError: [Errno 1]"), "{stderr}");
    assert_eq!(count(&victim), before, "a file went missing");
    assert!(workspace.path().exists());

    // Emptying a file that exists there (`open(.., "w")`, `: > file`) is a
    // truncate, held the same way; creating a new one is not held.
    let victim_file = victim.join("d0/deeper/f0");
    let truncate =
        "import sys; open(sys.argv[1] + '.new', 'w').close(); open(sys.argv[1], 'w').close()";
    let mut session = guard.ctl_command(&[
        "run",
        "--",
        "python3",
        "-c",
        truncate,
        victim_file.to_str().unwrap(),
    ]);
    session
        .env("PATH", stubs.path_env())
        .current_dir(workspace.path());
    let run = Proc::spawn(session);
    let hold = guard.wait_hold(truncate);
    let operation = hold.operation.as_deref().unwrap();
    assert_eq!(operation, format!("truncate {}", victim_file.display()));
    guard.decide("deny", &hold);
    let (status, _, stderr) = run.wait();
    assert!(stderr.contains("PermissionError"), "{stderr}");
    assert!(!status.success());
    assert_eq!(std::fs::read_to_string(&victim_file).unwrap(), "keep me");
    assert!(
        victim.join("d0/deeper/f0.new").exists(),
        "a new file was held"
    );
    guard.stop();
}

/// The gate judges paths as the session's mount namespace shows them: a
/// bind mount made in a new user and mount namespace would give a protected
/// file an unprotected name. Mounting is refused in gated sessions, so the
/// file stays (before, `rm` through the bind mount deleted it unheld).
#[test]
fn a_bind_mount_cannot_give_a_protected_file_another_name() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    tree(&protected, 3);
    let before = count(&protected);
    let alias = dir.path().join("alias");
    std::fs::create_dir(&alias).unwrap();
    let guard = guard_protecting(&protected);
    // In a namespace of its own, so a failing run leaves no mount behind.
    let script = format!(
        "unshare -Urm sh -c 'mount --bind {p} {a} && rm -rf {a}/d0; echo mount=$?'",
        p = protected.display(),
        a = alias.display()
    );
    // unshare itself may fail: it makes its mounts private first.
    let (_, out, err) = guard.session(&stubs, &["sh", "-c", &script]).wait();
    assert!(!out.contains("mount=0"), "{out}{err}");
    assert_eq!(count(&protected), before, "a file went missing: {out}{err}");
    guard.stop();
}

/// A hard link gives a protected file a second name outside its protection
/// (`ln P/f /tmp/h; : > /tmp/h` empties P/f through the new name): the link
/// is held as renaming the file away, and a denial leaves no second name.
#[test]
fn a_hard_link_out_of_a_protected_tree_is_held() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let link = LinkOut::new(dir.path());
    let guard = guard_protecting(&link.protected);
    let run = guard.session(&stubs, &["sh", "-c", &link.script]);
    let hold = guard.wait_hold(link.alias.to_str().unwrap());
    assert_eq!(hold.rule, "precious");
    assert_eq!(
        hold.operation.as_deref(),
        Some(format!("link {}", link.file.display()).as_str())
    );
    guard.decide("deny", &hold);
    link.assert_refused(run.wait());
    guard.stop();
}
