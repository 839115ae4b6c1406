//! A same-uid approval proves a person: with `local_auth = "pam"` (and by
//! default where the PAM service exists) an approver whose uid runs an agent
//! session re-authenticates through PAM for every approval. The PAM stack
//! here is the test's own (pam_exec checks a password file), so it runs
//! unattended. The agent's way around it, typing `guardctl approve` into the
//! user's tmux server, then only reaches a password prompt it cannot answer.
mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;

const PASSWORD: &str = "correct horse battery";

/// A PAM service of the test's own in /etc/pam.d: pam_exec asks for the
/// password and a script compares it with PASSWORD. Removed on drop.
struct PamService {
    name: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl PamService {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let check = write_script(
            dir.path(),
            "check-password",
            // pam_exec writes the password to stdin, NUL-terminated.
            &format!("given=$(tr -d '\\000')\n[ \"$given\" = '{PASSWORD}' ]"),
        );
        let name = format!("agent-guard-test-{}", std::process::id());
        let file = Path::new("/etc/pam.d").join(&name);
        std::fs::write(
            &file,
            format!(
                "auth required pam_exec.so expose_authtok quiet {}\naccount required pam_permit.so\n",
                check.display()
            ),
        )
        .unwrap();
        Self {
            name,
            file,
            _dir: dir,
        }
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `guardctl approve ID` with `answer` on its stdin (no terminal: one line).
fn approve_answering(guard: &Daemon, id: &str, answer: &str) -> Output {
    let mut child = guard
        .ctl_command(&["approve", id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn guard_with_local_auth(settings: &str) -> Daemon {
    Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[approvals]\n{settings}\n"
    ))
}

#[test]
fn a_same_uid_approval_needs_the_approvers_password_every_time() {
    require_root();
    let pam = PamService::new();
    let stubs = Stubs::new();
    let guard = guard_with_local_auth(&format!(
        "local_auth = \"pam\"\npam_service = \"{}\"",
        pam.name
    ));
    let how = mechanism(&guard.status(), "approval_authentication");
    assert!(how.starts_with("PAM (service agent-guard-test-"), "{how}");

    let run = guard.session(&stubs, &["terraform", "destroy", "pam"]);
    let hold = guard.wait_hold("pam");
    let id = hold.id.as_str();
    let pid = u64::from(hold.pid);

    // Nobody answers (the agent's keystrokes stop at the prompt), or a guess.
    for answer in ["", "hunter2\n"] {
        let out = approve_answering(&guard, id, answer);
        assert!(!out.status.success(), "approved with {answer:?}");
        assert!(
            text(&out.stderr).contains("PAM authentication of root failed"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("agent-guard approval: "),
            "the prompt was not shown: {}",
            text(&out.stderr)
        );
        assert!(is_stopped(pid), "a failed authentication released it");
    }
    let refusals = guard.audit_events(AuditEvent::Refuse);
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals
        .iter()
        .all(|r| r.reason.as_deref().unwrap().starts_with("PAM")));

    // The person's password: approved, and the audit record says how.
    let out = approve_answering(&guard, id, &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, _, _) = run.wait();
    assert!(status.success());
    assert!(stubs.marker_text().contains("destroy pam"));
    let approved = &guard.audit_events(AuditEvent::Approve)[0];
    assert!(
        approved
            .approver
            .as_deref()
            .unwrap()
            .contains("re-authenticated by PAM"),
        "{approved:?}"
    );

    // Never cached: the next hold asks again.
    let run = guard.session(&stubs, &["terraform", "destroy", "again"]);
    let hold = guard.wait_hold("again");
    let out = approve_answering(&guard, hold.id.as_str(), "");
    assert!(!out.status.success(), "a cached authentication approved it");
    assert!(guard.ctl(&["deny", hold.id.as_str()]).status.success());
    assert!(!run.wait().0.success());
    guard.stop();
}

#[test]
fn where_pam_cannot_run_same_uid_approvals_are_said_to_be_unauthenticated() {
    require_root();
    let stubs = Stubs::new();
    // "auto" with a service file that does not exist: approvals go through,
    // and status, the held notice and the audit record all say so.
    let guard = guard_with_local_auth("pam_service = \"agent-guard-test-missing\"");
    let how = mechanism(&guard.status(), "approval_authentication");
    assert!(how.contains("UNAUTHENTICATED"), "{how}");
    assert!(how.contains("/etc/pam.d/agent-guard-test-missing"), "{how}");
    let run = guard.session(&stubs, &["terraform", "destroy", "auto"]);
    let hold = guard.wait_hold("auto");
    guard.decide("approve", &hold);
    let (status, _, stderr) = run.wait();
    assert!(status.success());
    assert!(
        stderr.contains("Same-uid approvals here are unauthenticated"),
        "{stderr}"
    );
    let approved = &guard.audit_events(AuditEvent::Approve)[0];
    assert!(
        approved
            .approver
            .as_deref()
            .unwrap()
            .contains("unauthenticated"),
        "{approved:?}"
    );
    guard.stop();

    // "pam" where PAM cannot run: refused, never waved through.
    let guard =
        guard_with_local_auth("local_auth = \"pam\"\npam_service = \"agent-guard-test-missing\"");
    assert!(mechanism(&guard.status(), "approval_authentication").starts_with("refused"));
    let run = guard.session(&stubs, &["terraform", "destroy", "strict"]);
    let hold = guard.wait_hold("strict");
    let out = guard.ctl(&["approve", hold.id.as_str()]);
    assert!(!out.status.success());
    assert!(is_stopped(u64::from(hold.pid)));
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    guard.stop();
}

/// A tmux server of the user's, started outside any session.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        Self { socket, _dir: dir }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["capture-pane", "-p"])
            .output()
            .unwrap();
        text(&out.stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// The agent (a session process) types `guardctl approve ID` into the user's
/// tmux pane: with PAM the pane only shows a password prompt, the hold stays;
/// with `local_auth = "none"` the same keystrokes approve (the channel works).
fn approve_through_tmux(local_auth: &str) -> (bool, String) {
    let pam = PamService::new();
    let stubs = Stubs::new();
    let guard = guard_with_local_auth(&format!(
        "local_auth = \"{local_auth}\"\npam_service = \"{}\"",
        pam.name
    ));
    let tmux = Tmux::start();
    let run = guard.session(&stubs, &["terraform", "destroy", "tmux"]);
    let hold = guard.wait_hold("tmux");
    let id = hold.id.as_str();
    let typed = format!(
        "{} --socket {} approve {id}",
        guardctl_bin().display(),
        guard.socket.display()
    );
    let agent = guard.session(
        &stubs,
        &[
            "tmux",
            "-S",
            tmux.socket.to_str().unwrap(),
            "send-keys",
            &typed,
            "Enter",
        ],
    );
    let (status, _, stderr) = agent.wait();
    assert!(status.success(), "send-keys: {stderr}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = u64::from(hold.pid);
    let approved = loop {
        if !is_stopped(pid) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let screen = tmux.screen();
    drop(tmux);
    if !approved {
        assert!(guard.ctl(&["deny", id]).status.success());
    }
    run.wait();
    guard.stop();
    (approved, screen)
}

#[test]
fn an_agent_typing_into_the_users_tmux_meets_a_password_prompt() {
    require_root();
    let (approved, screen) = approve_through_tmux("pam");
    assert!(!approved, "approved through tmux: {screen}");
    assert!(screen.contains("agent-guard approval: "), "{screen}");
    let (approved, screen) = approve_through_tmux("none");
    assert!(approved, "the channel itself did not work: {screen}");
}

/// `guardctl watch` on a terminal: `a` asks for the password there (echo
/// off), the next line typed answers it, and the approval counts.
#[test]
fn watch_asks_for_the_password_on_its_terminal() {
    require_root();
    let pam = PamService::new();
    let stubs = Stubs::new();
    let guard = guard_with_local_auth(&format!(
        "local_auth = \"pam\"\npam_service = \"{}\"",
        pam.name
    ));
    let watch_command = format!(
        "{} --socket {} watch",
        guardctl_bin().display(),
        guard.socket.display()
    );
    let mut watch = Command::new("script")
        .args(["-q", "-e", "-c", &watch_command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
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
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = screen.lock().unwrap().clone();
            if seen.contains(text) {
                return seen;
            }
            assert!(Instant::now() < deadline, "no {text:?} in: {seen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let run = guard.session(&stubs, &["terraform", "destroy", "watched"]);
    let hold = guard.wait_hold("watched");
    let id = hold.id.as_str();
    wait_for(&format!("request {id}: [a]pprove, [d]eny, [s]kip?"));
    let stdin = watch.stdin.as_mut().unwrap();
    stdin.write_all(b"a\n").unwrap();
    let seen = wait_for("agent-guard approval: ");
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let (status, _, _) = run.wait();
    assert!(status.success(), "not approved: {}", screen.lock().unwrap());
    let seen_after = wait_for(&format!("{id}: Approved"));
    assert!(
        !seen_after.contains(PASSWORD),
        "the password was echoed: {seen_after}"
    );
    assert!(seen.contains("agent-guard approval: "));
    let _ = watch.kill();
    let _ = watch.wait();
    guard.stop();
}
