//! Nothing but guardd's decision releases a hold: not a stopped guardd, a
//! teardown, SIGCONT or ptrace from outside, or a continue before the hold.
//! Run as root by `cargo xtask test`.
mod common;

use std::{os::unix::process::ExitStatusExt as _, time::Duration};

use common::*;

#[test]
fn a_stopped_guardd_keeps_holds_and_teardown_denies_them() {
    let (stubs, mut guard, run, hold) =
        setup_held(HOLD_DESTROY_DENY_NUKE, &["terraform", "destroy"], "destroy");
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    // SIGTERM is a restart as much as a stop: the hold stays, fail closed.
    guard.stop_daemon(libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        is_stopped(pid),
        "{}; ran: {:?}; guardd log:\n{}",
        describe(pid),
        stubs.marker_text(),
        guard.log()
    );
    assert_eq!(stubs.marker_text(), "");
    // Teardown (uninstall) denies it: killed, never ran, and told why.
    let out = guard.teardown();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, stderr) = run.wait();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "fail closed: never released by a shutdown"
    );
    assert!(stderr.contains("stays held until it is back"), "{stderr}");
    assert!(stderr.contains("teardown"), "{stderr}");
    assert_eq!(stubs.marker_text(), "");
    assert!(!guard.pin_dir.exists());
    assert!(guard
        .audit_events(AuditEvent::Deny)
        .iter()
        .any(|r| r.reason.as_deref() == Some("guardd --teardown")));
    guard.stop();
}

#[test]
fn a_sigcont_while_held_takes_no_effect_when_guardd_stops() {
    let (stubs, mut guard, run, hold) = setup_held(
        HOLD_DESTROY_DENY_NUKE,
        &["terraform", "destroy", "later"],
        "later",
    );
    let pid = u64::from(hold.pid);
    let deadline = std::time::Instant::now() + WAIT;
    while state(pid) != 't' {
        assert!(std::time::Instant::now() < deadline, "not in ptrace-stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    // In ptrace-stop it does not wake, but its group-stop ends (unless the
    // BPF LSM refuses the signal): without a new SIGSTOP it would run as
    // guardd's tracer lets go.
    sigcont(pid);
    guard.stop_daemon(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let held = is_stopped(pid) || frozen_leaf(pid).is_some();
    assert!(held, "{}", describe(pid));
    assert_eq!(stubs.marker_text(), "", "it ran as guardd stopped");
    // Re-adopted as an ordinary hold: the SIGCONT never took effect.
    guard.restart();
    assert_eq!(guard.pending().len(), 1, "{:?}", guard.pending());
    guard.decide("approve", &hold);
    assert!(run.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy later\n");
    guard.stop();
}

#[test]
fn teardown_also_ends_a_hold_another_process_let_run() {
    require_root();
    let stubs = Stubs::new();
    stubs.script("terraform", &long_running_stub(&stubs));
    let mut guard = Daemon::start(HOLD_DESTROY_DENY_NUKE);
    let continued = guard.session(&stubs, &["terraform", "destroy", "continued"]);
    let held = guard.session(&stubs, &["terraform", "destroy", "held"]);
    let continued_pid = u64::from(guard.wait_hold("continued").pid);
    guard.wait_hold("held");
    wait_stopped(continued_pid);
    guard.stop_daemon(libc::SIGKILL);
    // Refused by the BPF LSM; frozen, it wakes only into the freezer;
    // elsewhere it runs until the teardown.
    let ran = sigcont(continued_pid) && !freezer_here();
    if ran {
        stubs.wait_for_marker();
    } else {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(stubs.marker_text(), "", "ran while guardd was down");
    }
    let out = guard.teardown();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for run in [held, continued] {
        let (status, _, _) = run.wait();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    let reasons: Vec<String> = guard
        .audit_events(AuditEvent::Deny)
        .iter()
        .filter(|r| r.pid.map(u64::from) == Some(continued_pid))
        .filter_map(|r| r.reason.clone())
        .collect();
    let me = std::process::id();
    let told = reasons
        .iter()
        .any(|why| why.contains(&format!("pid {me} sent the stopped process SIGCONT")));
    assert_eq!(told, ran, "{reasons:?}");
    guard.stop();
}

#[test]
fn a_stop_another_process_continues_before_guardd_holds_it_is_killed() {
    require_root();
    let stubs = Stubs::new();
    stubs.script("terraform", &long_running_stub(&stubs));
    let guard = Daemon::start(HOLD_DESTROY_DENY_NUKE);
    let run = guard.session(
        &stubs,
        &[
            "sh",
            "-c",
            "touch ready; while [ ! -e go ]; do sleep 0.01; done; exec terraform destroy early",
        ],
    );
    let dir = stubs.dir.path();
    wait_for_file(&dir.join("ready"));
    // Frozen, guardd cannot take the stop into ptrace-stop before the SIGCONT.
    let frozen = guard.freeze();
    std::fs::write(dir.join("go"), "").unwrap();
    let pid = wait_for_stopped_command("early");
    let ran = sigcont(pid);
    if ran {
        stubs.wait_for_marker();
    }
    drop(frozen);
    if !ran {
        // The BPF LSM refused it: an ordinary hold.
        let hold = guard.wait_hold("early");
        guard.decide("deny", &hold);
        assert_eq!(run.wait().0.signal(), Some(libc::SIGKILL));
        guard.stop();
        return;
    }
    let (status, _, stderr) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "left running");
    assert!(stderr.contains("Killed (fail closed)"), "{stderr}");
    assert!(guard.pending().is_empty(), "{:?}", guard.pending());
    guard.assert_sigcont_audited(pid);
    guard.stop();
}

#[test]
fn sigcont_and_ptrace_from_outside_do_not_release_a_hold() {
    let (stubs, guard, run, hold) =
        setup_held(HOLD_DESTROY_DENY_NUKE, &["terraform", "destroy"], "destroy");
    let pid = u64::from(hold.pid);
    let kept = if freezer_here() {
        "frozen"
    } else {
        "ptrace-stop"
    };
    assert!(hold.protection.starts_with(kept), "{hold:?}");
    wait_stopped(pid);
    // Wait for ptrace-stop proper ('t'), then try to wake the process as the agent could.
    let deadline = std::time::Instant::now() + WAIT;
    while state(pid) != 't' {
        assert!(
            std::time::Instant::now() < deadline,
            "not in ptrace-stop: {}",
            state(pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let refused_by_lsm = lsm_active(&guard.status());
    for _ in 0..3 {
        let sent = unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        if refused_by_lsm {
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert_eq!(
                (sent, errno),
                (-1, Some(libc::EPERM)),
                "task_kill let SIGCONT through"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Nobody else can attach to it either.
    let attach = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid as i32, 0, 0) };
    assert_eq!(attach, -1, "a second tracer attached");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(is_stopped(pid), "state {}", state(pid));
    assert_eq!(
        stubs.marker_text(),
        "",
        "SIGCONT from outside released the hold"
    );

    guard.decide("approve", &hold);
    let (status, _, _) = run.wait();
    assert!(status.success());
    assert_eq!(stubs.marker_text(), "destroy\n");
    guard.stop();
}
