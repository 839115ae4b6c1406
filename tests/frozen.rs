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
    wait_for_file(&stubs.marker());
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

#[test]
fn teardown_kills_frozen_holds_and_removes_their_cgroups() {
    let Some((stubs, mut guard, run, hold)) =
        setup_frozen(&["terraform", "destroy", "torn"], "torn")
    else {
        return;
    };
    let pid = u64::from(hold.pid);
    let leaf = frozen_leaf(pid).expect("frozen");
    guard.stop_daemon(libc::SIGKILL);
    let out = guard.teardown();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(stubs.marker_text(), "");
    assert!(!leaf.exists(), "{} left", leaf.display());
    assert!(
        !leaf.parent().unwrap().exists(),
        "this guardd's cgroup directory left"
    );
}
