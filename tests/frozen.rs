//! Frozen holds: where the cgroup v2 freezer is, a held process is kept in a
//! frozen cgroup leaf, so no signal from anyone lets it run; approval moves
//! it back into the cgroup it came from. Run as root by `cargo xtask test`.
mod common;

use std::{os::unix::process::ExitStatusExt as _, thread::sleep, time::Duration};

use common::*;

const POLICY: &str = HOLD_TERRAFORM_DESTROY;

fn setup_frozen(args: &[&str], word: &str) -> Option<(Stubs, Daemon, Proc, HoldView)> {
    if !freezer_here() {
        eprintln!("no cgroup2 hierarchy here: holds are kept in ptrace-stop (tests/restart.rs)");
        return None;
    }
    require_root();
    let stubs = Stubs::new();
    stubs.script("terraform", &long_running_stub(&stubs));
    let guard = Daemon::start(POLICY);
    let run = guard.session(&stubs, args);
    let hold = guard.wait_hold(word);
    wait_stopped(u64::from(hold.pid));
    Some((stubs, guard, run, hold))
}

#[test]
fn a_sigcont_to_a_frozen_hold_runs_nothing_and_approval_moves_it_back() {
    let origin = cgroup_of(u64::from(std::process::id()));
    let Some((stubs, guard, run, hold)) = setup_frozen(&["terraform", "destroy", "back"], "back")
    else {
        return;
    };
    let pid = u64::from(hold.pid);
    let leaf = frozen_leaf(pid).unwrap_or_else(|| panic!("not frozen: {}", cgroup_of(pid)));
    assert!(hold.protection.starts_with("frozen"), "{hold:?}");

    // guardd also traces it: no one else can attach, and a SIGCONT does not
    // even wake it while guardd runs.
    let attach = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid as i32, 0, 0) };
    assert_eq!(attach, -1, "a second tracer attached to a held process");
    // (Where the BPF LSM runs, it refuses the signal outright.)
    sigcont(pid);
    sleep(Duration::from_millis(300));
    assert_eq!(stubs.marker_text(), "", "ran after the agent's SIGCONT");
    let pending = guard.pending();
    assert_eq!(pending.len(), 1, "a SIGCONT after the freeze ends nothing");

    guard.decide("approve", &hold);
    stubs.wait_for_marker();
    assert_eq!(stubs.marker_text(), "destroy back\n");
    assert_eq!(
        cgroup_of(pid),
        origin,
        "approved, it runs where it came from"
    );
    // The leaf goes once the hold has ended (guardd's tick).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while leaf.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} left",
            leaf.display()
        );
        sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    run.wait();
    guard.stop();
}

#[test]
fn an_orphaned_process_group_s_sighup_and_sigcont_run_nothing() {
    // A session leader starts the command in a process group of its own,
    // then exits: that group is orphaned with a stopped member, and the
    // kernel sends it SIGHUP and SIGCONT.
    let Some((stubs, guard, run, hold)) = setup_frozen(
        &[
            "setsid",
            "perl",
            "-e",
            "if (fork() == 0) { setpgrp(0, 0); exec('terraform', 'destroy', 'orphan') } \
             until (-e 'go') { select(undef, undef, undef, 0.05) }",
        ],
        "orphan",
    ) else {
        return;
    };
    let pid = u64::from(hold.pid);
    std::fs::write(stubs.dir.path().join("go"), "").unwrap();
    // The kernel's SIGHUP waits, undelivered, in the frozen process.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !signal_pending(pid, libc::SIGHUP) {
        assert!(
            std::time::Instant::now() < deadline,
            "no SIGHUP for the orphaned group"
        );
        sleep(Duration::from_millis(20));
    }
    sleep(Duration::from_millis(300));
    assert_eq!(stubs.marker_text(), "", "ran after the kernel's SIGCONT");
    assert!(frozen_leaf(pid).is_some(), "{}", cgroup_of(pid));
    assert_eq!(guard.pending().len(), 1);

    guard.decide("deny", &hold);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && state(pid) != 'Z' {
        assert!(std::time::Instant::now() < deadline, "pid {pid} lives on");
        sleep(Duration::from_millis(20));
    }
    assert_eq!(stubs.marker_text(), "");
    run.wait();
    guard.stop();
}

/// kill -9 of guardd, then `guardd --teardown`: the held command is killed.
fn tear_down_after_a_crash(guard: &mut Daemon, run: Proc) {
    guard.stop_daemon(libc::SIGKILL);
    let out = guard.teardown();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn teardown_kills_frozen_holds_and_removes_their_cgroups() {
    let Some((stubs, mut guard, run, hold)) =
        setup_frozen(&["terraform", "destroy", "torn"], "torn")
    else {
        return;
    };
    let pid = u64::from(hold.pid);
    let leaf = frozen_leaf(pid).expect("frozen");
    tear_down_after_a_crash(&mut guard, run);
    assert_eq!(stubs.marker_text(), "");
    assert!(!leaf.exists(), "{} left", leaf.display());
    assert!(
        !leaf.parent().unwrap().exists(),
        "this guardd's cgroup directory left"
    );
}

/// The v1 freezer hierarchy's mount point, where one is mounted (a hybrid
/// host such as the usual CI machine has both).
fn v1_freezer_mount() -> Option<std::path::PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find_map(|line| {
            let (fields, tail) = line.split_once(" - ")?;
            let options = tail.split(' ').nth(2)?;
            (tail.starts_with("cgroup ") && options.split(',').any(|o| o == "freezer"))
                .then(|| std::path::PathBuf::from(fields.split(' ').nth(4).unwrap()))
        })
}

/// The process's path in the v1 freezer hierarchy.
fn v1_cgroup_of(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == "freezer")
                .then(|| path.to_string())
        })
        .unwrap_or_default()
}

/// On a failed test: kills and thaws what is left in v1 leaves under `0`
/// (a v1-frozen process dies only once thawed, and `Proc` waits for it).
struct ThawV1(std::path::PathBuf);

impl Drop for ThawV1 {
    fn drop(&mut self) {
        for leaf in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let procs = std::fs::read_to_string(leaf.path().join("cgroup.procs"));
            for pid in procs.unwrap_or_default().lines() {
                unsafe { libc::kill(pid.trim().parse().unwrap_or(0), libc::SIGKILL) };
            }
            let _ = std::fs::write(leaf.path().join("freezer.state"), "THAWED");
        }
    }
}

#[test]
fn the_v1_freezer_holds_across_a_restart_releases_denies_and_tears_down() {
    let Some(mount) = v1_freezer_mount() else {
        eprintln!("no cgroup v1 freezer hierarchy here");
        return;
    };
    require_root();
    let stubs = Stubs::new();
    stubs.script("terraform", &long_running_stub(&stubs));
    let mut guard = Daemon::start_with(POLICY, &["--freezer", "v1"]);
    let base = mount.join("agent-guard").join(
        guard
            .pin_dir
            .to_string_lossy()
            .trim_matches('/')
            .replace('/', "-"),
    );
    let origin = v1_cgroup_of(u64::from(std::process::id()));
    // Waits until the process is in a frozen v1 leaf (a v1-frozen task
    // shows as D, not T), and returns the leaf.
    let frozen_v1 = |pid: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let path = v1_cgroup_of(pid);
            let leaf = mount.join(path.trim_start_matches('/'));
            let state = std::fs::read_to_string(leaf.join("freezer.state")).unwrap_or_default();
            if path.starts_with("/agent-guard/") && state.trim() == "FROZEN" {
                return leaf;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not in a frozen v1 leaf: {path} {state}"
            );
            sleep(Duration::from_millis(20));
        }
    };

    // Held: frozen, a SIGCONT runs nothing; approved: back where it came from.
    let run = guard.session(&stubs, &["terraform", "destroy", "one"]);
    let _thaw = ThawV1(base.clone());
    let hold = guard.wait_hold("one");
    let pid = u64::from(hold.pid);
    let leaf = frozen_v1(pid);
    assert!(hold.protection.contains("cgroup v1 freezer"), "{hold:?}");
    // Across a kill -9 (and a SIGCONT meanwhile) and a restart: the same
    // id, still frozen.
    guard.stop_daemon(libc::SIGKILL);
    sigcont(pid);
    guard.restart();
    let again = guard.wait_hold("one");
    assert_eq!(again.id, hold.id);
    frozen_v1(pid);
    sigcont(pid);
    sleep(Duration::from_millis(300));
    assert_eq!(stubs.marker_text(), "", "ran after the agent's SIGCONT");
    guard.decide("approve", &hold);
    stubs.wait_for_marker();
    assert_eq!(
        v1_cgroup_of(pid),
        origin,
        "approved, it runs where it came from"
    );
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    run.wait();

    // Denied: a v1 frozen task dies only once thawed; it must die, not run.
    let run = guard.session(&stubs, &["terraform", "destroy", "two"]);
    let _thaw = ThawV1(base.clone());
    let hold = guard.wait_hold("two");
    frozen_v1(u64::from(hold.pid));
    guard.decide("deny", &hold);
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    // Torn down with a hold pending: killed, every leaf removed.
    let run = guard.session(&stubs, &["terraform", "destroy", "three"]);
    let _thaw = ThawV1(base.clone());
    let hold = guard.wait_hold("three");
    let third = frozen_v1(u64::from(hold.pid));
    tear_down_after_a_crash(&mut guard, run);
    assert_eq!(stubs.marker_text(), "destroy one\n", "a denied command ran");
    for dir in [&leaf, &third, &third.parent().unwrap().to_path_buf()] {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}
