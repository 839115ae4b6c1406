//! The control surface around holds: guardctl run without guardd, malformed
//! requests, control characters in argv, explain and status.
//! Run as root by `cargo xtask test`.
mod common;

use std::process::Command;

use common::*;

#[test]
fn guardctl_run_refuses_without_guardd() {
    require_root();
    let stubs = Stubs::new();
    let mut command = Command::new(guardctl_bin());
    command
        .args([
            "--socket",
            "/nonexistent/guardd.sock",
            "run",
            "--",
            "terraform",
            "destroy",
        ])
        .env("PATH", stubs.path_env());
    let (status, _, stderr) = Proc::spawn(command).wait();
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert_eq!(stubs.marker_text(), "");
}

#[test]
fn malformed_requests_are_refused_and_the_daemon_lives_on() {
    use std::io::{BufRead as _, BufReader, Write as _};
    require_root();
    let guard = Daemon::start(HOLD_DESTROY_DENY_NUKE);
    for line in [
        &b"not json\n"[..],
        b"{\"version\":1,\"type\":\"approve\"}\n",
        b"{\"version\":7,\"type\":\"status\"}\n",
        b"\xff\xfe\n",
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&guard.socket).unwrap();
        stream.write_all(line).unwrap();
        let mut response = String::new();
        BufReader::new(&stream).read_line(&mut response).unwrap();
        let response: Response = serde_json::from_str(&response).unwrap();
        assert!(matches!(response, Response::Error { .. }), "{response:?}");
    }
    // An oversized request is refused without the daemon buffering it whole.
    let mut stream = std::os::unix::net::UnixStream::connect(&guard.socket).unwrap();
    let _ = stream.write_all(&vec![b'x'; 300 * 1024]);
    let mut response = String::new();
    BufReader::new(&stream).read_line(&mut response).unwrap();
    assert!(response.contains("longer than"), "{response}");
    assert!(guard.ctl(&["status"]).status.success());
    guard.stop();
}

#[test]
fn control_characters_in_argv_are_escaped_everywhere() {
    let (stubs, guard) = setup(HOLD_DESTROY_DENY_NUKE);
    let evil = "\x1b[2J\x1b]0;pwned\x07\nfake-line";
    let run = guard.session(&stubs, &["terraform", "destroy", evil]);
    let hold = guard.wait_hold("destroy");
    let shown = hold.argv[2].as_str();
    assert_eq!(shown, "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\nfake-line");
    let human = guard.ctl(&["pending"]);
    assert!(
        !human.stdout.iter().any(|b| *b == 0x1b || *b == 0x07),
        "raw control bytes on the terminal"
    );
    let audit = std::fs::read(&guard.audit_log).unwrap();
    assert!(!audit.iter().any(|b| *b == 0x1b || *b == 0x07));
    guard.decide("deny", &hold);
    let (_, _, stderr) = run.wait();
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    guard.stop();
}

#[test]
fn explain_and_status_describe_the_loaded_policy() {
    require_root();
    let guard = Daemon::start(HOLD_DESTROY_DENY_NUKE);
    let explain = |argv: &[&str]| guard.explain(argv);
    let held = explain(&["terraform", "destroy"]);
    assert_eq!(
        (held.action, held.rule.as_deref()),
        (Action::Hold, Some("tf-destroy"))
    );
    let denied = explain(&["/usr/local/bin/terraform", "destroy", "--nuke"]);
    assert_eq!(
        (denied.action, denied.rule.as_deref()),
        (Action::Deny, Some("tf-nuke"))
    );
    let allowed = explain(&["terraform", "plan"]);
    assert_eq!(allowed.action, Action::Allow);
    assert!(allowed.rule.is_none());

    let status = guard.status();
    assert_eq!(status.policy.rules, 2);
    let mechanisms = &status.mechanisms;
    assert!(mechanisms.iter().any(|(name, _)| name == "exec_hold"));
    // No [[protect]] in the policy: the gate still covers guardd's own files.
    assert!(mechanisms
        .iter()
        .any(
            |(name, how)| name == "syscall_gate.unlink" && how.contains("1 [[protect]] entries")
                || how.starts_with("report only")
        ));
    let self_protection = mechanism(&status, "self_protection");
    assert!(
        self_protection.starts_with("no guard-* rules"),
        "{self_protection}"
    );
    let config = guard.dir.path().join("policy.toml");
    assert!(
        self_protection.contains(&format!(
            "[[protect]] agent-guard-self (built in, by the syscall gate below): Deny {}",
            std::fs::canonicalize(config).unwrap().display()
        )) && self_protection.contains(guard.pin_dir.to_str().unwrap()),
        "{self_protection}"
    );
    // The first screen: one line a mechanism (a family with one text shares
    // it), the LSM's absence said once; --verbose has the rest.
    let human = String::from_utf8_lossy(&guard.ctl(&["status"]).stdout).into_owned();
    assert!(human.contains("exec_hold"), "{human}");
    assert!(
        human.lines().count() <= 30,
        "{} lines:\n{human}",
        human.lines().count()
    );
    if let Some(why) = &status.lsm_missing {
        assert_eq!(human.matches(why.as_str()).count(), 1, "{human}");
    }
    let verbose = String::from_utf8_lossy(&guard.ctl(&["status", "--verbose"]).stdout).into_owned();
    assert!(
        verbose.contains("exec_gate") && verbose.contains("stop -> decision"),
        "{verbose}"
    );
    guard.stop();
}
