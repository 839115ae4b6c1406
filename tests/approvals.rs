//! Approvals the agent cannot give itself: signed tokens checked against
//! allowed_signers, distinct identities, approver lists, self-approval off,
//! local approvers' terminal and polkit, and `guardctl watch` (JSON, and its
//! prompt on a terminal). Keys are made with ssh-keygen, as users do.
mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;

fn public_key(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// A guard whose policy holds `terraform destroy` with `rule_extra` settings,
/// and whose allowed_signers lists alice (for agent-guard only) and carol
/// (for git only).
fn guard_with_signers(rule_extra: &str, keys: &tempfile::TempDir) -> Daemon {
    let alice = keygen(keys.path(), "alice");
    let carol = keygen(keys.path(), "carol");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!(
            "# who may sign approvals\nalice@example namespaces=\"agent-guard\" {}\ncarol@example namespaces=\"git\" {}\n",
            public_key(&alice),
            public_key(&carol)
        ),
    )
    .unwrap();
    // rule_extra lands in the rule; [approvals] opens its own table after it.
    Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}{rule_extra}\n[approvals]\nallowed_signers = \"{}\"\n",
        signers.display()
    ))
}

fn sign(guard: &Daemon, id: &str, key: &Path, ttl: &str) -> String {
    let out = guard.ctl(&["sign", id, "--key", key.to_str().unwrap(), "--ttl", ttl]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn approve_token(guard: &Daemon, id: &str, token: &str) -> std::process::Output {
    guard.ctl(&["approve", id, "--token", token])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn signed_tokens_count_once_per_key_and_only_for_their_request() {
    require_root();
    let stubs = Stubs::new();
    let keys = tempfile::tempdir().unwrap();
    let guard = guard_with_signers("approvals = 2", &keys);
    let alice = keys.path().join("alice");
    let carol = keys.path().join("carol");
    let mallory = keygen(keys.path(), "mallory");
    let run_a = guard.session(&stubs, &["terraform", "destroy", "a"]);
    let hold_a = guard.wait_hold("a");
    let run_b = guard.session(&stubs, &["terraform", "destroy", "b"]);
    let hold_b = guard.wait_hold("b");
    let (a, b) = (hold_a.id.as_str(), hold_b.id.as_str());

    let refused = |token: &str, why: &str| {
        let out = approve_token(&guard, a, token);
        assert!(!out.status.success(), "accepted: {token}");
        assert!(stderr(&out).contains(why), "{why}: {}", stderr(&out));
    };
    refused(&sign(&guard, b, &alice, "5m"), "does not sign this request");
    let good = sign(&guard, a, &alice, "5m");
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 30;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    refused(&String::from_utf8(tampered).unwrap(), "");
    let expiring = sign(&guard, a, &alice, "1s");
    std::thread::sleep(Duration::from_millis(2100));
    refused(&expiring, "expired token");
    refused(&sign(&guard, a, &mallory, "5m"), "not in allowed_signers");
    refused(&sign(&guard, a, &carol, "5m"), "not in allowed_signers");
    refused(&sign(&guard, a, &alice, "3h"), "longer than");
    assert_eq!(
        guard.pending().len(),
        2,
        "a refused token decided something"
    );

    // The valid token is one approval of two; replaying it, or alice signing
    // again, does not make a second one.
    let out = approve_token(&guard, a, &good);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("more approvals are needed"));
    refused(&good, "replayed token");
    refused(&sign(&guard, a, &alice, "5m"), "already approved");
    assert!(is_stopped(u64::from(hold_a.pid)));
    assert_eq!(stubs.marker_text(), "");
    // A second, distinct identity (root, locally) releases it.
    assert!(guard.ctl(&["approve", a]).status.success());
    assert!(run_a.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy a\n");
    assert!(guard.ctl(&["deny", b]).status.success());
    drop(run_b);

    let audit = guard.audit();
    let refusals: Vec<&AuditRecord> = audit
        .iter()
        .filter(|r| r.event == Some(AuditEvent::Refuse) && r.channel == Some(Channel::Token))
        .collect();
    for why in [
        "bad signature",
        "expired",
        "not in allowed_signers",
        "replayed",
    ] {
        assert!(
            refusals
                .iter()
                .any(|r| r.reason.as_deref().unwrap().contains(why)),
            "no audited refusal for {why}: {refusals:?}"
        );
    }
    let approvals: Vec<&AuditRecord> = audit
        .iter()
        .filter(|r| r.event == Some(AuditEvent::Approve) && r.request_id.as_deref() == Some(a))
        .collect();
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    assert!(approvals[0]
        .approver
        .as_deref()
        .unwrap()
        .starts_with("key:alice@example (SHA256:"));
    assert_eq!(approvals[1].channel, Some(Channel::Socket));
    guard.stop();
}

/// A policy file that adds a stricter rule for a command the pack already
/// holds makes the hold stricter: the first matching rule does not decide
/// the terms alone (it used to, and the added `approvals = 2` was ignored).
#[test]
fn a_second_matching_hold_rule_makes_the_hold_stricter() {
    require_root();
    let stubs = Stubs::new();
    let keys = tempfile::tempdir().unwrap();
    let guard = guard_with_signers(
        "\n[[rule]]\nid = \"tf-destroy-two-people\"\nprograms = [\"terraform\"]\n\
         subcommand = [\"destroy\"]\naction = \"hold\"\napprovals = 2\n\
         approvers = [\"key:alice@example\", \"user:root\"]",
        &keys,
    );
    let explained = guard.explain(&["terraform", "destroy", "twice"]);
    assert_eq!(explained.terms.approvals, 2, "{explained:?}");
    assert_eq!(
        explained.terms_from,
        ["tf-destroy", "tf-destroy-two-people"]
    );
    let run = guard.session(&stubs, &["terraform", "destroy", "twice"]);
    let hold = guard.wait_hold("twice");
    let id = hold.id.as_str();
    assert_eq!(hold.approvals_needed, 2);
    assert_eq!(hold.rule, "tf-destroy");
    let combined = "terms: the strictest of rules tf-destroy, tf-destroy-two-people";
    assert!(hold.why.iter().any(|w| w == combined), "{:?}", hold.why);
    let held = guard.audit_events(AuditEvent::Hold);
    assert!(
        held.iter()
            .any(|r| r.request_id.as_deref() == Some(id) && r.why.iter().any(|w| w == combined)),
        "{held:?}"
    );
    // Root is accepted by both rules' lists, but is one approval of two.
    let out = guard.ctl(&["approve", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("more approvals are needed"));
    assert!(is_stopped(u64::from(hold.pid)));
    assert_eq!(stubs.marker_text(), "");
    let out = approve_token(
        &guard,
        id,
        &sign(&guard, id, &keys.path().join("alice"), "5m"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy twice\n");
    guard.stop();
}

#[test]
fn approver_lists_and_self_approval_are_enforced() {
    require_root();
    let stubs = Stubs::new();
    let keys = tempfile::tempdir().unwrap();
    // The session runs as root here, so root is the session's owner.
    let guard = guard_with_signers(
        "self_approval = false\napprovers = [\"key:alice@example\", \"group:root\"]",
        &keys,
    );
    let run = guard.session(&stubs, &["terraform", "destroy", "self"]);
    let hold = guard.wait_hold("self");
    let id = hold.id.as_str();
    assert!(!hold.self_approval);
    let out = guard.ctl(&["approve", id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not allow self-approval"),
        "{}",
        stderr(&out)
    );
    assert_eq!(guard.pending().len(), 1);
    let out = guard.ctl(&[
        "approve",
        id,
        "--sign",
        keys.path().join("alice").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy self\n");

    // A listed key is required when keys are listed; an unlisted uid is refused.
    let run = guard.session(&stubs, &["terraform", "destroy", "listed"]);
    let hold = guard.wait_hold("listed");
    let id = hold.id.as_str();
    let nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(guardctl_bin())
        .arg("--socket")
        .arg(&guard.socket)
        .args(["approve", id])
        .output()
        .unwrap();
    assert!(!nobody.status.success());
    assert!(
        stderr(&nobody).contains("not among the rule's approvers"),
        "{}",
        stderr(&nobody)
    );
    // The session's owner may still deny.
    assert!(guard.ctl(&["deny", id]).status.success());
    drop(run);
    guard.stop();
}

#[test]
fn watch_json_shows_a_hold_and_its_decision() {
    let (stubs, guard) = setup(HOLD_TERRAFORM_DESTROY);
    let mut watch = guard
        .ctl_command(&["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let next = || -> Response {
        let line = received.recv_timeout(WAIT).expect("watch said nothing");
        serde_json::from_str(&line).unwrap()
    };
    // First the holds pending now (none): from here on every record streams.
    assert!(matches!(next(), Response::Pending { .. }));
    let run = guard.session(&stubs, &["terraform", "destroy", "watched"]);
    let hold = guard.wait_hold("watched");
    let id = hold.id.clone();
    assert!(guard.ctl(&["deny", &id]).status.success());
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !(seen.contains(&AuditEvent::Hold) && seen.contains(&AuditEvent::Deny)) {
        assert!(Instant::now() < deadline, "saw only {seen:?}");
        let event = next();
        let Response::Event { record } = event else {
            panic!("not an event: {event:?}");
        };
        let record: AuditRecord = serde_json::from_value(record).unwrap();
        if record.request_id == Some(id.clone()) {
            seen.push(record.event.unwrap());
        }
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    drop(run);
    guard.stop();
}

/// `guardctl ARGS` on a fresh pseudo-terminal of its own (util-linux script).
fn on_a_terminal(guard: &Daemon, shell: &str) -> Command {
    let socket = guard.socket.display();
    let guardctl = guardctl_bin();
    let shell = shell.replace(
        "GUARDCTL",
        &format!("{} --socket {socket}", guardctl.display()),
    );
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-c", &shell, "/dev/null"])
        .stdin(Stdio::null());
    command
}

#[test]
fn local_approvers_can_be_required_to_use_a_terminal_no_session_uses() {
    let (stubs, guard) = setup(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[approvals]\nrequire_terminal = true\n"
    ));
    // The agent runs on a terminal; a process beside it (not in the session)
    // on that terminal tries to approve: refused, it shares the terminal.
    let fifo = stubs.dir.path().join("id.fifo");
    let answer = stubs.dir.path().join("approve.out");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut shared = on_a_terminal(
        &guard,
        &format!(
            "GUARDCTL run -- terraform destroy shared & read id < {fifo}; GUARDCTL approve $id > {answer} 2>&1; wait",
            fifo = fifo.display(),
            answer = answer.display()
        ),
    );
    shared
        .env("PATH", stubs.path_env())
        .current_dir(stubs.dir.path());
    let shared = Proc::spawn(shared);
    let hold = guard.wait_hold("shared");
    let id = hold.id.as_str();
    std::fs::write(&fifo, format!("{id}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&answer).is_ok_and(|t| t.contains("refused")) {
        assert!(
            Instant::now() < deadline,
            "no refusal: {:?}",
            std::fs::read_to_string(&answer)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = std::fs::read_to_string(&answer).unwrap();
    assert!(said.contains("terminal is also used by pid"), "{said}");
    // Without any controlling terminal: refused.
    let detached = Command::new("setsid")
        .arg("-w")
        .arg(guardctl_bin())
        .arg("--socket")
        .arg(&guard.socket)
        .args(["approve", id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!detached.status.success());
    assert!(
        stderr(&detached).contains("no controlling terminal"),
        "{}",
        stderr(&detached)
    );
    assert!(is_stopped(u64::from(hold.pid)));
    assert_eq!(stubs.marker_text(), "");
    // From a terminal of its own: approved, and the command runs.
    let own = on_a_terminal(&guard, &format!("GUARDCTL approve {id}"))
        .output()
        .unwrap();
    assert!(own.status.success(), "{own:?}");
    assert!(shared.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy shared\n");
    let refusals = guard.audit_events(AuditEvent::Refuse);
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals.iter().all(|r| r.channel == Some(Channel::Socket)));
    guard.stop();
}

#[test]
fn polkit_re_authentication_fails_closed() {
    require_root();
    if Path::new("/run/dbus/system_bus_socket").exists() {
        eprintln!(
            "skipped: a system bus runs here, so polkit's answer depends on this machine's rules"
        );
        return;
    }
    let stubs = Stubs::new();
    let guard = Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[approvals]\nlocal_auth = \"polkit\"\n"
    ));
    assert_eq!(guard.status().policy.local_auth, LocalAuth::Polkit);
    let run = guard.session(&stubs, &["terraform", "destroy", "pk"]);
    let hold = guard.wait_hold("pk");
    let id = hold.id.as_str();
    // No polkit daemon answers here: the approval is refused, not waved through.
    let out = guard.ctl(&["approve", id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("polkit: pkcheck failed"),
        "{}",
        stderr(&out)
    );
    assert!(is_stopped(u64::from(hold.pid)));
    let refusal = &guard.audit_events(AuditEvent::Refuse)[0];
    assert!(
        refusal.reason.as_deref().unwrap().starts_with("polkit"),
        "{refusal:?}"
    );
    assert!(
        guard.ctl(&["deny", id]).status.success(),
        "deny needs no re-authentication"
    );
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

#[test]
fn watch_on_a_terminal_shows_the_context_and_takes_a_decision() {
    let (stubs, guard) = setup(HOLD_TERRAFORM_DESTROY);
    let mut watch = on_a_terminal(&guard, "GUARDCTL watch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let (stdout, shown) = (watch.stdout.take().unwrap(), screen.clone());
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buffer) {
            shown
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    let wait_for = |text: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = screen.lock().unwrap().clone();
            if seen.contains(text) {
                return seen;
            }
            assert!(Instant::now() < deadline, "no {text:?} in: {seen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut session = guard.ctl_command(&["run", "--", "terraform", "destroy", "seen"]);
    session
        .env("PATH", stubs.path_env())
        .env("AWS_PROFILE", "prod-eu")
        .current_dir(stubs.dir.path());
    let run = Proc::spawn(session);
    let hold = guard.wait_hold("seen");
    let id = hold.id.as_str();
    let seen = wait_for(&format!("request {id}: [a]pprove, [d]eny, [s]kip?"));
    for shown in [
        format!("HELD {id}: "),
        "rule      tf-destroy (".into(),
        "context   AWS_PROFILE=prod-eu".into(),
        format!("cwd       {}", stubs.dir.path().display()),
        "ancestry  ".into(),
    ] {
        assert!(seen.contains(&shown), "{shown:?} not in: {seen}");
    }
    watch.stdin.as_mut().unwrap().write_all(b"d\n").unwrap();
    assert!(!run.wait().0.success());
    wait_for(&format!("{id}: Denied"));
    let denial = &guard.audit_events(AuditEvent::Deny)[0];
    assert_eq!(denial.reason.as_deref(), Some("denied in guardctl watch"));
    assert_eq!(stubs.marker_text(), "");
    watch.kill().unwrap();
    watch.wait().unwrap();
    guard.stop();
}

#[test]
fn a_signed_denial_ends_the_request_and_encrypted_keys_sign_through_ssh_keygen() {
    require_root();
    let stubs = Stubs::new();
    let keys = tempfile::tempdir().unwrap();
    // erin's key has a passphrase; ssh-keygen gets it from an askpass helper.
    let erin = keys.path().join("erin");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "erin-pass", "-C", "erin", "-f"])
        .arg(&erin)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let askpass = write_script(keys.path(), "askpass", "echo erin-pass");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, format!("erin@example {}\n", public_key(&erin))).unwrap();
    let guard = Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[approvals]\nallowed_signers = \"{}\"\n",
        signers.display()
    ));
    let run = guard.session(&stubs, &["terraform", "destroy", "signed-deny"]);
    let hold = guard.wait_hold("signed-deny");
    let id = hold.id.as_str();
    let with_askpass = |args: &[&str]| {
        let mut command = guard.ctl_command(args);
        command
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .stdin(Stdio::null());
        command.output().unwrap()
    };
    // An approval token is no denial (and the reverse): the decision is signed.
    let approval = with_askpass(&["sign", id, "--key", erin.to_str().unwrap()]);
    assert!(approval.status.success(), "{}", stderr(&approval));
    let approval = String::from_utf8(approval.stdout).unwrap();
    let out = guard.ctl(&["deny", id, "--token", approval.trim()]);
    assert!(stderr(&out).contains("bad signature"), "{}", stderr(&out));
    let denial = with_askpass(&["sign", id, "--deny", "--key", erin.to_str().unwrap()]);
    let denial = String::from_utf8(denial.stdout).unwrap();
    let out = guard.ctl(&["approve", id, "--token", denial.trim()]);
    assert!(stderr(&out).contains("bad signature"), "{}", stderr(&out));
    assert!(is_stopped(u64::from(hold.pid)));

    let out = with_askpass(&[
        "deny",
        id,
        "--sign",
        erin.to_str().unwrap(),
        "--reason",
        "not today",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "");
    let denied = &guard.audit_events(AuditEvent::Deny)[0];
    assert_eq!(denied.channel, Some(Channel::Token));
    assert!(
        denied
            .approver
            .as_deref()
            .unwrap()
            .starts_with("key:erin@example"),
        "{denied:?}"
    );
    assert_eq!(denied.reason.as_deref(), Some("not today"));
    guard.stop();
}

#[test]
fn escapes_to_an_approver_outside_the_tree_are_held_or_refused() {
    require_root();
    let stubs = Stubs::new();
    // systemd-run would have systemd start the approver outside the session;
    // the stub stands in for it and records whether it ran.
    stubs.script(
        "systemd-run",
        &format!("echo \"systemd-run $*\" >> {}", stubs.marker().display()),
    );
    // The default pack (its launcher rule) with the test's terraform rule on top.
    let guard = Daemon::start(&HOLD_TERRAFORM_DESTROY.replace("base = \"none\"\n", ""));
    let run = guard.session(&stubs, &["terraform", "destroy", "escape"]);
    let hold = guard.wait_hold("escape");
    let id = hold.id.as_str();
    let ctl = guardctl_bin();
    let ctl = ctl.to_str().unwrap();
    let socket = guard.socket.to_str().unwrap();

    // A new session id (setsid) and nohup do not leave the agent session.
    for launcher in [&["setsid", "--wait"][..], &["nohup"][..]] {
        let mut argv: Vec<&str> = launcher.to_vec();
        argv.extend([ctl, "--socket", socket, "approve", id]);
        let (status, _, stderr) = guard.session(&stubs, &argv).wait();
        assert!(!status.success(), "{launcher:?}");
        assert!(stderr.contains("self-approval"), "{launcher:?}: {stderr}");
    }
    // systemd-run is held itself, before it could ask systemd for anything.
    let launcher = guard.session(&stubs, &["systemd-run", "--wait", ctl, "approve", id]);
    let held = guard.wait_hold("--wait");
    assert_eq!(held.rule, "tree-escape");
    assert_eq!(guard.pending().len(), 2);
    assert!(is_stopped(u64::from(hold.pid)));
    guard.decide("deny", &held);
    assert!(!launcher.wait().0.success());
    assert!(guard.ctl(&["deny", id]).status.success());
    assert!(!run.wait().0.success());
    assert_eq!(
        stubs.marker_text(),
        "",
        "neither terraform nor systemd-run ran"
    );
    guard.stop();
}
