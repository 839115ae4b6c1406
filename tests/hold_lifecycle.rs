//! The exec hold's life: held until approved from outside the session, denied,
//! refused from inside, timed out, ended by a kill, or approved by two people.
//! Run as root by `cargo xtask test`.
mod common;

use std::{os::unix::process::ExitStatusExt as _, process::Command};

use common::*;

#[test]
fn held_until_approved_from_outside_the_session() {
    let (stubs, guard, run, hold) = setup_held(
        HOLD_DESTROY_DENY_NUKE,
        &["terraform", "destroy", "-auto-approve"],
        "destroy",
    );
    assert_eq!(hold.rule, "tf-destroy");
    assert_eq!(hold.state, HoldState::Held);
    assert_eq!(
        hold.program, "terraform",
        "a shell-script stub is judged as itself"
    );
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    assert_eq!(
        stubs.marker_text(),
        "",
        "the held command must not have run"
    );

    let id = hold.id.as_str();
    let out = guard.ctl(&["approve", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, stderr) = run.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stubs.marker_text(), "destroy -auto-approve\n");
    assert!(
        stderr.contains(&format!("request {id}")) && stderr.contains("held"),
        "{stderr}"
    );
    assert!(guard.pending().is_empty());

    let held = guard.audit_events(AuditEvent::Hold);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].request_id.as_deref(), Some(id));
    assert_eq!(held[0].rule.as_deref(), Some("tf-destroy"));
    assert!(held[0].ancestry.len() >= 2);
    let approved = guard.audit_events(AuditEvent::Approve);
    assert!(approved[0].approver.as_deref().unwrap().contains("uid 0"));
    assert_eq!(guard.audit_events(AuditEvent::Release).len(), 1);
    assert_eq!(guard.audit_events(AuditEvent::SessionStart).len(), 1);
    eprintln!(
        "hold latency (stop -> decision): {:?} us",
        held[0].decision_us
    );
    guard.stop();
}

#[test]
fn deny_kills_the_command_before_it_ever_runs() {
    let (stubs, guard, run, hold) =
        setup_held(HOLD_DESTROY_DENY_NUKE, &["terraform", "destroy"], "destroy");
    let id = hold.id.as_str();
    wait_stopped(u64::from(hold.pid));

    let out = guard.ctl(&["deny", id, "--reason", "not today"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, stderr) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(stubs.marker_text(), "", "a denied command never runs");
    assert!(stderr.contains(&format!("request {id}")), "{stderr}");
    assert!(
        stderr.contains("denied") && stderr.contains("not today"),
        "{stderr}"
    );
    let denied = guard.audit_events(AuditEvent::Deny);
    assert_eq!(denied[0].reason.as_deref(), Some("not today"));

    // A deny rule kills at once, with the rule's message to the agent.
    let run = guard.session(&stubs, &["terraform", "destroy", "--nuke"]);
    let (status, _, stderr) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(stderr.contains("nuking is never allowed"), "{stderr}");
    assert_eq!(stubs.marker_text(), "");
    assert!(guard.pending().is_empty());

    // No notice is written into a regular file: it may be the command's artefact.
    let run = guard.session(&stubs, &["sh", "-c", "terraform destroy to-file 2>err.txt"]);
    let hold = guard.wait_hold("to-file");
    guard.decide("deny", &hold);
    run.wait();
    let file = std::fs::read_to_string(stubs.dir.path().join("err.txt")).unwrap();
    assert!(!file.contains("agent-guard"), "{file}");
    guard.stop();
}

#[test]
fn approval_from_inside_a_session_is_refused() {
    let (stubs, guard, run, hold) =
        setup_held(HOLD_DESTROY_DENY_NUKE, &["terraform", "destroy"], "destroy");
    let id = hold.id.clone();
    let pid = u64::from(hold.pid);

    let ctl = guardctl_bin();
    let socket = guard.socket.to_str().unwrap().to_string();
    let attempts = [
        // guardctl itself is the session root.
        vec![ctl.to_str().unwrap(), "--socket", &socket, "approve", &id],
        // A descendant of the session root.
        vec![
            "sh",
            "-c",
            "\"$0\" --socket \"$1\" approve \"$2\"",
            ctl.to_str().unwrap(),
            &socket,
            &id,
        ],
    ];
    for attempt in attempts {
        let (status, _, stderr) = guard.session(&stubs, &attempt).wait();
        assert!(
            !status.success(),
            "approval from inside a session must fail"
        );
        assert!(stderr.contains("self-approval"), "{stderr}");
    }
    assert_eq!(guard.pending().len(), 1, "the hold remains");
    wait_stopped(pid);
    assert_eq!(stubs.marker_text(), "");
    let refusals = guard.audit_events(AuditEvent::Refuse);
    assert_eq!(refusals.len(), 2);
    assert!(refusals[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("self-approval attempt"));

    assert!(guard.ctl(&["deny", &id]).status.success());
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    guard.stop();
}

#[test]
fn a_hold_times_out_to_deny() {
    let (stubs, guard, run, hold) = setup_held(
        &HOLD_DESTROY_DENY_NUKE.replace("action = \"hold\"", "action = \"hold\"\ntimeout = \"1s\""),
        &["terraform", "destroy"],
        "destroy",
    );
    let (status, _, stderr) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(stderr.contains("timed out"), "{stderr}");
    assert_eq!(stubs.marker_text(), "");
    let timeouts = guard.audit_events(AuditEvent::Timeout);
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0].request_id.as_ref(), Some(&hold.id));
    assert_eq!(timeouts[0].decision, Some(AuditDecision::Deny));
    guard.stop();
}

#[test]
fn a_held_process_killed_by_others_ends_its_request() {
    let (_stubs, guard, run, hold) =
        setup_held(HOLD_DESTROY_DENY_NUKE, &["terraform", "destroy"], "destroy");
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let deadline = std::time::Instant::now() + WAIT;
    while !guard.pending().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the request outlived its process"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        guard.audit_events(AuditEvent::Exit)[0].request_id.as_ref(),
        Some(&hold.id)
    );
    // Approving it now is refused: nothing can be released by accident.
    let out = guard.ctl(&["approve", hold.id.as_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pending request"));
    guard.stop();
}

#[test]
fn two_approvals_need_two_distinct_people() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let stubs = Stubs::new();
    // The session runs as nobody, so root and nobody are two distinct approvers.
    std::fs::set_permissions(stubs.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(stubs.marker(), "").unwrap();
    std::fs::set_permissions(stubs.marker(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let guard = Daemon::start(
        &HOLD_DESTROY_DENY_NUKE.replace("action = \"hold\"", "action = \"hold\"\napprovals = 2"),
    );
    std::fs::set_permissions(guard.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(guardctl_bin())
            .arg("--socket")
            .arg(&guard.socket)
            .args(args)
            .env("PATH", stubs.path_env())
            .current_dir(stubs.dir.path());
        command
    };
    let run = Proc::spawn(as_nobody(&["run", "--", "terraform", "destroy"]));
    let hold = guard.wait_hold("destroy");
    let id = hold.id.as_str();
    assert_eq!(hold.approvals_needed, 2);

    let first = guard.ctl(&["approve", id]);
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stdout).contains("more approvals are needed"));
    let again = guard.ctl(&["approve", id]);
    assert!(!again.status.success(), "the same identity counts once");
    assert!(String::from_utf8_lossy(&again.stderr).contains("counts once"));
    let pending = guard.pending();
    assert_eq!(pending[0].approved_by, ["uid:0"]);
    wait_stopped(u64::from(hold.pid));
    assert_eq!(stubs.marker_text(), "");

    let second = as_nobody(&["approve", id]).output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let (status, _, _) = run.wait();
    assert!(status.success());
    assert_eq!(stubs.marker_text(), "destroy\n");
    let approvals = guard.audit_events(AuditEvent::Approve);
    assert_eq!(approvals.len(), 2);
    assert_eq!(approvals[0].reason.as_deref(), Some("approval 1 of 2"));
    guard.stop();
}
