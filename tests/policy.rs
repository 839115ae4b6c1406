//! Policy handling in a running guardd: reload, refusal of a broken policy,
//! and guardctl's policy tools.
mod common;

use std::{fs, process::Command, thread::sleep, time::Duration};

use common::*;

const FIRST: &str = HOLD_TERRAFORM_DESTROY;

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..250 {
        if done() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn policy_reloads_on_change_and_sighup_and_a_broken_one_is_refused() {
    let (stubs, guard) = setup(FIRST);
    let config = guard.dir.path().join("policy.toml");
    let first_version = guard.status().policy.version;
    assert_eq!(
        guard.explain(&["terraform", "destroy"]).action,
        Action::Hold
    );
    assert_eq!(
        guard.explain(&["helm", "uninstall", "x"]).action,
        Action::Allow
    );

    // A drop-in file is picked up on change, and its program is watched in the kernel at once.
    fs::create_dir(guard.dir.path().join("policy.d")).unwrap();
    fs::write(
        guard.dir.path().join("policy.d/10-helm.toml"),
        "version = 1\n[[rule]]\nid = 'helm'\nprograms = ['helm']\nsubcommand = ['uninstall']\naction = 'hold'\n",
    )
    .unwrap();
    wait_for("the drop-in to load", || {
        guard.explain(&["helm", "uninstall", "x"]).action == Action::Hold
    });
    stubs.script(
        "helm",
        &format!("echo helm \"$*\" >> {}", stubs.marker().display()),
    );
    let mut command = guard.ctl_command(&["run", "--", "helm", "uninstall", "api"]);
    command.env("PATH", stubs.path_env());
    let run = Proc::spawn(command);
    let hold = guard.wait_hold("uninstall");
    assert_eq!(hold.rule, "helm");
    guard.decide("deny", &hold);
    drop(run);

    // A broken policy is refused: the old one stays in force and status says why.
    fs::write(&config, "version = 1\n[[rule]]\nid = 'oops'\n").unwrap();
    wait_for("the refusal", || {
        guard.status().policy.last_reload_error.is_some()
    });
    let status = guard.status();
    let error = status.policy.last_reload_error.as_deref().unwrap();
    assert!(error.contains("policy.toml"), "{error}");
    assert_eq!(
        guard.explain(&["terraform", "destroy"]).action,
        Action::Hold
    );
    assert_eq!(
        guard.explain(&["helm", "uninstall", "x"]).action,
        Action::Hold
    );

    // Fixed and reloaded by SIGHUP: the new rules apply, the error is gone.
    fs::write(&config, FIRST.replace("\"hold\"", "\"deny\"")).unwrap();
    unsafe { libc::kill(guard.pid() as i32, libc::SIGHUP) };
    wait_for("the fixed policy", || {
        guard.explain(&["terraform", "destroy"]).action == Action::Deny
    });
    let status = guard.status();
    assert!(status.policy.last_reload_error.is_none());
    assert_ne!(status.policy.version, first_version);
    let reloads = guard.audit_events(AuditEvent::PolicyReload);
    assert!(reloads
        .iter()
        .any(|r| r.decision == Some(AuditDecision::Refused)));
    assert!(reloads
        .iter()
        .any(|r| r.reason.as_deref() == Some("SIGHUP")));
    guard.stop();
}

#[test]
fn explain_without_a_daemon_and_with_a_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let explain = |args: &[&str]| {
        let out = Command::new(guardctl_bin())
            .args(["--socket", "/nonexistent/guardd.sock", "explain", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            serde_json::from_slice::<Explanation>(&out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (held, stderr) = explain(&[
        "--cwd",
        "/home/dev/project",
        "--env",
        "HOME=/home/dev",
        "--",
        "rm",
        "-fr",
        "~",
    ]);
    assert_eq!(held.action, Action::Hold);
    assert_eq!(held.rule.as_deref(), Some("rm-recursive"));
    assert!(stderr.contains("embedded default policy"), "{stderr}");
    let (allowed, _) = explain(&[
        "--cwd",
        "/home/dev/project",
        "--",
        "rm",
        "-rf",
        "node_modules",
    ]);
    assert_eq!(allowed.action, Action::Allow);
    assert!(allowed.rule.is_none());

    let file = dir.path().join("p.toml");
    fs::write(
        &file,
        "version = 1\nbase = 'none'\n[[rule]]\nid = 'ls'\nprograms = ['ls']\naction = 'deny'\n",
    )
    .unwrap();
    let (denied, _) = explain(&["--policy", file.to_str().unwrap(), "--", "ls", "-la"]);
    assert_eq!(
        (denied.action, denied.rule.as_deref()),
        (Action::Deny, Some("ls"))
    );
}

#[test]
fn policy_check_names_the_file_line_and_failing_example() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    fs::write(&good, "version = 1\n[[rule]]\nid = 'x'\nprograms = ['x']\naction = 'hold'\nexamples.match = ['x y']\n").unwrap();
    let syntax = dir.path().join("syntax.toml");
    fs::write(&syntax, "version = 1\n[[rule]]\nid = \n").unwrap();
    let example = dir.path().join("example.toml");
    fs::write(&example, "version = 1\n[[rule]]\nid = 'x'\nprograms = ['x']\naction = 'hold'\nexamples.no_match = ['x y']\n").unwrap();
    let check = |file: &std::path::Path| {
        Command::new(guardctl_bin())
            .args(["policy", "check"])
            .arg(file)
            .output()
            .unwrap()
    };

    let out = check(&good);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("good.toml: ok"));
    let out = check(&syntax);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("syntax.toml") && stderr.contains("line 3"),
        "{stderr}"
    );
    let out = check(&example);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("example `x y` should not match"),
        "{stderr}"
    );
}

/// `terraform apply PLAN` in a session, judged by the saved plan's content
/// (real plan files written by terraform 1.11, see
/// guard-daemon/src/policy/terraform_plan/tests.rs): the destructive one as a
/// destroy naming what it deletes and replaces, one that only creates as an
/// apply. Neither runs without a decision.
#[test]
fn a_saved_plan_that_deletes_is_held_as_a_destroy_naming_the_resources() {
    let (stubs, guard) = setup("version = 1\n");
    let plans = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guard-daemon/src/policy/terraform_plan");
    for plan in ["destructive.tfplan", "creates.tfplan"] {
        fs::copy(plans.join(plan), stubs.dir.path().join(plan)).unwrap();
    }
    let run = guard.session(&stubs, &["terraform", "apply", "destructive.tfplan"]);
    let hold = guard.wait_hold("destructive.tfplan");
    assert_eq!(hold.rule, "terraform-destroy");
    let why = hold.why.join("\n");
    assert!(
        why.contains("which deletes terraform_data.gone")
            && why.contains("replaces (delete, then create) terraform_data.db"),
        "{why}"
    );
    guard.decide("deny", &hold);
    let (status, _, _) = run.wait();
    assert!(!status.success());
    assert_eq!(stubs.marker_text(), "", "the denied apply ran");

    let run = guard.session(&stubs, &["terraform", "apply", "creates.tfplan"]);
    let hold = guard.wait_hold("creates.tfplan");
    assert_eq!(hold.rule, "terraform-apply");
    guard.decide("approve", &hold);
    let (status, _, stderr) = run.wait();
    assert!(status.success(), "{stderr}");
    assert_eq!(stubs.marker_text(), "apply creates.tfplan\n");
    guard.stop();
}

/// `mv VICTIM /tmp/` in a session: the move and a free `rm -rf` in /tmp
/// would delete VICTIM in two unheld steps, so the move is held as the
/// delete, and so is util-linux's `rename` doing the same; a rename in the
/// working tree runs.
#[test]
fn moving_a_tree_where_deletes_are_free_is_held_as_deleting_it() {
    let (stubs, guard) = setup("version = 1\n");
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap_or("/root".into()));
    let outside = tempfile::tempdir_in(&home).unwrap();
    let victim = outside.path().join("victim");
    tree(&victim, 6);
    let before = count(&victim);
    let parked = tempfile::tempdir().unwrap();
    let (victim_text, from, to) = (
        victim.to_str().unwrap(),
        outside.path().to_str().unwrap(),
        parked.path().to_str().unwrap(),
    );
    let mut moves = vec![(vec!["mv", victim_text, to], "runs via a move into")];
    // util-linux's rename, with the target in the replacement.
    if Command::new("rename.ul").arg("--version").output().is_ok() {
        moves.push((
            vec!["rename.ul", from, to, victim_text],
            "runs via a rename to",
        ));
    } else {
        eprintln!("no rename.ul here: that case skipped");
    }
    for (argv, via) in moves {
        let run = guard.session(&stubs, &argv);
        let hold = guard.wait_hold(victim_text);
        assert_eq!(hold.rule, "rm-recursive");
        assert!(hold.why[0].starts_with(via), "{:?}", hold.why);
        guard.decide("deny", &hold);
        assert!(!run.wait().0.success());
        assert_eq!(count(&victim), before, "{argv:?} moved the victim");
    }

    fs::write(stubs.dir.path().join("a.txt"), "x").unwrap();
    let (status, _, stderr) = guard.session(&stubs, &["mv", "a.txt", "b.txt"]).wait();
    assert!(status.success(), "{stderr}");
    assert!(stubs.dir.path().join("b.txt").exists());
    guard.stop();
}
