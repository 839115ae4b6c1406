//! The exec hold end to end: real programs, real processes, real socket.
//! Run as root by `cargo xtask test`.
mod common;

use std::{os::unix::process::ExitStatusExt as _, process::Command, time::Duration};

use common::*;

const POLICY: &str = r#"
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

/// `guardctl run -- ARGS` with the stubs first on PATH.
fn session(guard: &Daemon, stubs: &Stubs, args: &[&str]) -> Proc {
    guard.session(stubs, args)
}

#[test]
fn held_until_approved_from_outside_the_session() {
    let (stubs, guard, run, hold) = setup_held(
        POLICY,
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
    assert_eq!(held[0]["request_id"], id);
    assert_eq!(held[0]["rule"], "tf-destroy");
    assert!(held[0]["ancestry"].as_array().unwrap().len() >= 2);
    let approved = guard.audit_events(AuditEvent::Approve);
    assert!(approved[0]["approver"].as_str().unwrap().contains("uid 0"));
    assert_eq!(guard.audit_events(AuditEvent::Release).len(), 1);
    assert_eq!(guard.audit_events(AuditEvent::SessionStart).len(), 1);
    eprintln!(
        "hold latency (stop -> decision): {} us",
        held[0]["decision_us"]
    );
    guard.stop();
}

#[test]
fn deny_kills_the_command_before_it_ever_runs() {
    let (stubs, guard, run, hold) = setup_held(POLICY, &["terraform", "destroy"], "destroy");
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
    assert_eq!(denied[0]["reason"], "not today");

    // A deny rule kills at once, with the rule's message to the agent.
    let run = session(&guard, &stubs, &["terraform", "destroy", "--nuke"]);
    let (status, _, stderr) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(stderr.contains("nuking is never allowed"), "{stderr}");
    assert_eq!(stubs.marker_text(), "");
    assert!(guard.pending().is_empty());

    // No notice is written into a regular file: it may be the command's artefact.
    let run = session(
        &guard,
        &stubs,
        &["sh", "-c", "terraform destroy to-file 2>err.txt"],
    );
    let hold = guard.wait_hold("to-file");
    guard.decide("deny", &hold);
    run.wait();
    let file = std::fs::read_to_string(stubs.dir.path().join("err.txt")).unwrap();
    assert!(!file.contains("agent-guard"), "{file}");
    guard.stop();
}

#[test]
fn approval_from_inside_a_session_is_refused() {
    let (stubs, guard, run, hold) = setup_held(POLICY, &["terraform", "destroy"], "destroy");
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
        let (status, _, stderr) = session(&guard, &stubs, &attempt).wait();
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
    assert!(refusals[0]["reason"]
        .as_str()
        .unwrap()
        .contains("self-approval attempt"));

    assert!(guard.ctl(&["deny", &id]).status.success());
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    guard.stop();
}

#[test]
fn no_hold_outside_sessions_or_for_unwatched_commands() {
    let (stubs, guard) = setup(POLICY);
    // The same command outside any session.
    let mut outside = Command::new(stubs.bin().join("terraform"));
    outside.arg("destroy").arg("outside");
    let (status, _, _) = Proc::spawn(outside).wait();
    assert!(status.success());
    // Unwatched programs, and a watched program the policy allows, in a session.
    let (status, out, _) = session(
        &guard,
        &stubs,
        &["sh", "-c", "echo hi; ls / >/dev/null; terraform plan"],
    )
    .wait();
    assert!(status.success());
    assert_eq!(out, "hi\n");
    assert_eq!(stubs.marker_text(), "destroy outside\nplan\n");
    assert!(guard.audit_events(AuditEvent::Hold).is_empty());
    let stats = &guard.status().stats;
    assert_eq!(
        stats.stops, 1,
        "only the watched `terraform plan` stopped: {stats:?}"
    );
    assert_eq!(stats.allowed, 1);
    guard.stop();
}

#[test]
fn wrappers_do_not_dodge_the_hold() {
    let (stubs, guard) = setup(POLICY);
    let wrappers: [(&str, &[&str]); 9] = [
        ("w-sh", &["sh", "-c", "terraform destroy w-sh"]),
        ("w-bash", &["bash", "-c", "terraform destroy w-bash; true"]),
        ("w-env", &["env", "terraform", "destroy", "w-env"]),
        ("w-nohup", &["nohup", "terraform", "destroy", "w-nohup"]),
        (
            "w-setsid",
            &["setsid", "--wait", "terraform", "destroy", "w-setsid"],
        ),
        (
            "w-xargs",
            &["sh", "-c", "echo destroy w-xargs | xargs terraform"],
        ),
        (
            "w-subshell",
            &["sh", "-c", "(terraform destroy w-subshell &); sleep 30"],
        ),
        (
            "w-doublefork",
            // The outer shell stays: were it to exit while the grandchild is
            // stopped, the kernel would SIGHUP the orphaned process group.
            &[
                "sh",
                "-c",
                "sh -c 'terraform destroy w-doublefork &' & sleep 30",
            ],
        ),
        (
            "w-script",
            &[
                "sh",
                "-c",
                "printf '#!/bin/sh\\nterraform destroy w-script\\n' > s; chmod +x s; ./s",
            ],
        ),
    ];
    let runs: Vec<Proc> = wrappers
        .iter()
        .map(|(_, args)| session(&guard, &stubs, args))
        .collect();
    for (tag, _) in &wrappers {
        let hold = guard.wait_hold(tag);
        wait_stopped(u64::from(hold.pid));
    }
    assert_eq!(stubs.marker_text(), "", "no wrapper let the command run");
    for hold in guard.pending() {
        guard.decide("deny", &hold);
    }
    assert!(guard.pending().is_empty());
    drop(runs);
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

#[test]
fn agents_are_detected_without_a_launcher() {
    require_root();
    let stubs = Stubs::new();
    // Started before guardd: found by the /proc scan.
    let early_dir = stubs.dir.path().join("early");
    std::fs::create_dir(&early_dir).unwrap();
    let early = write_script(
        &early_dir,
        "claude",
        "while [ ! -e go ]; do sleep 0.05; done\nterraform destroy by-early-agent\necho early-done",
    );
    let mut early = Command::new(early);
    early.env("PATH", stubs.path_env()).current_dir(&early_dir);
    let early = Proc::spawn(early);
    let policy = format!(
        "{POLICY}\n[agents]\nprograms = [\"claude\"]\ninterpreters = [\"python3\"]\npackages = [\"{}/agent-pkg/\"]\n",
        stubs.dir.path().display()
    );
    let guard = Daemon::start(&policy);
    std::fs::write(early_dir.join("go"), "").unwrap();
    // Started after guardd: detected by the kernel at exec.
    let mut late = Command::new(stubs.script("claude", "terraform destroy by-late-agent"));
    late.env("PATH", stubs.path_env());
    let late = Proc::spawn(late);
    // An agent package run by an interpreter.
    let pkg = stubs.dir.path().join("agent-pkg");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(
        pkg.join("cli.py"),
        "import os, subprocess, time\nwhile not os.path.exists('go'): time.sleep(0.05)\nsubprocess.run(['terraform', 'destroy', 'by-python-agent'])\n",
    )
    .unwrap();
    let mut python = Command::new("/usr/bin/python3");
    python
        .arg(pkg.join("cli.py"))
        .env("PATH", stubs.path_env())
        .current_dir(&pkg);
    let python = Proc::spawn(python);
    // Adoption follows the interpreter's exec event; on a slow machine (the VM)
    // a fixed sleep could let the child run first, so wait for the session.
    let deadline = std::time::Instant::now() + WAIT;
    while !guard
        .status()
        .sessions
        .iter()
        .any(|s| s.origin == "interpreter")
    {
        assert!(std::time::Instant::now() < deadline, "python never adopted");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(pkg.join("go"), "").unwrap();

    for (tag, proc) in [("by-late-agent", &late), ("by-python-agent", &python)] {
        let hold = guard.wait_hold(tag);
        assert_eq!(u64::from(hold.session), proc.pid() as u64, "{hold:?}");
    }
    let hold = guard.wait_hold("by-early-agent");
    assert_eq!(u64::from(hold.session), early.pid() as u64);
    assert_eq!(hold.agent.as_deref(), Some("claude"));
    assert_eq!(stubs.marker_text(), "");
    let origins: Vec<String> = guard
        .status()
        .sessions
        .into_iter()
        .map(|s| s.origin)
        .collect();
    for origin in ["scan", "detected", "interpreter"] {
        assert!(origins.iter().any(|o| o == origin), "{origins:?}");
    }
    for hold in guard.pending() {
        guard.decide("approve", &hold);
    }
    let (status, out, _) = early.wait();
    assert!(status.success());
    assert_eq!(out, "early-done\n");
    assert!(late.wait().0.success());
    assert!(python.wait().0.success());
    let marker = stubs.marker_text();
    for tag in ["by-early-agent", "by-late-agent", "by-python-agent"] {
        assert!(marker.contains(tag), "{marker}");
    }
    guard.stop();
}

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
fn a_stopped_guardd_keeps_holds_and_teardown_denies_them() {
    let (stubs, mut guard, run, hold) = setup_held(POLICY, &["terraform", "destroy"], "destroy");
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
        .any(|r| r["reason"] == "guardd --teardown"));
    guard.stop();
}

#[test]
fn a_sigcont_while_held_takes_no_effect_when_guardd_stops() {
    let (stubs, mut guard, run, hold) =
        setup_held(POLICY, &["terraform", "destroy", "later"], "later");
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
    assert!(is_stopped(pid), "{}", describe(pid));
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
    let mut guard = Daemon::start(POLICY);
    let continued = session(&guard, &stubs, &["terraform", "destroy", "continued"]);
    let held = session(&guard, &stubs, &["terraform", "destroy", "held"]);
    let continued_pid = u64::from(guard.wait_hold("continued").pid);
    guard.wait_hold("held");
    wait_stopped(continued_pid);
    guard.stop_daemon(libc::SIGKILL);
    // Refused by the BPF LSM; elsewhere it runs until the teardown.
    let ran = sigcont(continued_pid);
    if ran {
        wait_for_file(&stubs.marker());
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
        .filter(|r| r["pid"] == continued_pid)
        .filter_map(|r| r["reason"].as_str().map(str::to_string))
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
    let guard = Daemon::start(POLICY);
    let run = session(
        &guard,
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
        wait_for_file(&stubs.marker());
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
    let me = std::process::id();
    assert!(
        guard
            .audit_events(AuditEvent::Error)
            .iter()
            .any(|r| r["pid"] == pid
                && r["reason"].as_str().is_some_and(
                    |why| why.contains(&format!("pid {me} sent the stopped process SIGCONT"))
                )),
        "{:?}",
        guard.audit_events(AuditEvent::Error)
    );
    guard.stop();
}

#[test]
fn malformed_requests_are_refused_and_the_daemon_lives_on() {
    use std::io::{BufRead as _, BufReader, Write as _};
    require_root();
    let guard = Daemon::start(POLICY);
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
fn a_hold_times_out_to_deny() {
    let (stubs, guard, run, hold) = setup_held(
        &POLICY.replace("action = \"hold\"", "action = \"hold\"\ntimeout = \"1s\""),
        &["terraform", "destroy"],
        "destroy",
    );
    let (status, _, stderr) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(stderr.contains("timed out"), "{stderr}");
    assert_eq!(stubs.marker_text(), "");
    let timeouts = guard.audit_events(AuditEvent::Timeout);
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0]["request_id"], hold.id);
    assert_eq!(timeouts[0]["decision"], "deny");
    guard.stop();
}

#[test]
fn a_held_process_killed_by_others_ends_its_request() {
    let (_stubs, guard, run, hold) = setup_held(POLICY, &["terraform", "destroy"], "destroy");
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
        guard.audit_events(AuditEvent::Exit)[0]["request_id"],
        hold.id
    );
    // Approving it now is refused: nothing can be released by accident.
    let out = guard.ctl(&["approve", hold.id.as_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pending request"));
    guard.stop();
}

#[test]
fn control_characters_in_argv_are_escaped_everywhere() {
    let (stubs, guard) = setup(POLICY);
    let evil = "\x1b[2J\x1b]0;pwned\x07\nfake-line";
    let run = session(&guard, &stubs, &["terraform", "destroy", evil]);
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
    let guard = Daemon::start(POLICY);
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
    let human = guard.ctl(&["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("exec_gate"));
    guard.stop();
}

/// Counts every stop and reports the latency figures (printed, not asserted:
/// timing belongs to `cargo xtask bench`).
#[test]
fn every_watched_exec_is_counted_with_its_latency() {
    let (stubs, guard) = setup(POLICY);
    let (status, _, _) = session(
        &guard,
        &stubs,
        &["sh", "-c", "for i in $(seq 200); do terraform plan; done"],
    )
    .wait();
    assert!(status.success());
    assert_eq!(stubs.marker_text().lines().count(), 200);
    let stats = guard.status().stats;
    assert_eq!(stats.stops, 200);
    assert_eq!(stats.allowed, 200);
    assert_eq!(stats.event_latency.samples, 200);
    assert_eq!(stats.decision_latency.samples, 200);
    eprintln!("exec gate over 200 allowed execs: {stats:?}");
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
    let guard =
        Daemon::start(&POLICY.replace("action = \"hold\"", "action = \"hold\"\napprovals = 2"));
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
    assert_eq!(approvals[0]["reason"], "approval 1 of 2");
    guard.stop();
}

#[test]
fn a_symlink_to_a_watched_binary_is_held() {
    require_root();
    let stubs = Stubs::new();
    // A real binary named `terraform` (a copy of touch), run through a symlink `tf`.
    let binary = stubs.bin().join("terraform");
    // (Under busybox, touch resolves to busybox itself; the hold is what is tested.)
    let touch = std::fs::canonicalize("/usr/bin/touch")
        .or_else(|_| std::fs::canonicalize("/bin/touch"))
        .unwrap();
    std::fs::copy(touch, &binary).unwrap();
    std::os::unix::fs::symlink(&binary, stubs.bin().join("tf")).unwrap();
    let guard = Daemon::start(&POLICY.replace("args_any = [\"destroy\"]", ""));
    let recognition = mechanism(&guard.status(), "program_recognition");
    assert!(recognition.contains("symlinks"), "{recognition}");

    let target = stubs.marker();
    let run = session(&guard, &stubs, &["tf", target.to_str().unwrap()]);
    let hold = guard.wait_hold(target.to_str().unwrap());
    assert_eq!(hold.rule, "tf-destroy");
    assert!(hold.exe.ends_with("/bin/terraform"), "{hold:?}");
    wait_stopped(u64::from(hold.pid));
    assert!(!target.exists(), "the symlinked binary must not have run");
    guard.decide("deny", &hold);
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!target.exists());
    guard.stop();
}

#[test]
fn sigcont_and_ptrace_from_outside_do_not_release_a_hold() {
    let (stubs, guard, run, hold) = setup_held(POLICY, &["terraform", "destroy"], "destroy");
    let pid = u64::from(hold.pid);
    assert!(hold.protection.starts_with("ptrace-stop"), "{hold:?}");
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
