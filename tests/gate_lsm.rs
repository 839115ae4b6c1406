//! The syscall gate on the BPF LSM, in sessions no launcher started (an
//! agent detected at exec): deleting or moving a protected tree is one held
//! request, a denial keeps every file and fails the calls with EPERM, an
//! approval lets exactly the held call (and that process's later calls on
//! that tree) through, and nobody but guardd can continue the stopped process.
//! Where the kernel has no BPF LSM (the usual host), status must say the gate
//! is off and why; `cargo xtask vm-test` runs these with the LSM.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread::sleep,
    time::Duration,
};

use common::*;

/// guardd protecting `roots` (one `[[protect]]` each, hold, except `cache`), with `claude`
/// as the agent program; None where the BPF LSM does not run here.
fn guard_protecting(roots: &[&Path]) -> Option<Daemon> {
    let mut policy =
        "version = 1\nbase = \"none\"\n[agents]\nprograms = [\"claude\"]\n".to_string();
    for (i, root) in roots.iter().enumerate() {
        policy.push_str(&format!(
            "[[protect]]\nid = \"p{i}\"\npaths = [\"{0}\"]\nexcept = [\"{0}/cache\"]\n",
            root.display()
        ));
    }
    let guard = Daemon::start(&policy);
    let status = guard.status();
    if lsm_active(&status) {
        return Some(guard);
    }
    let gate = mechanism(&status, "syscall_gate.unlink");
    assert!(gate.starts_with("report only"), "{gate}");
    guard.stop();
    None
}

/// Runs `script` as an auto-detected agent: a `claude` program, no launcher.
fn agent(stubs: &Stubs, script: &str) -> Proc {
    let mut command = Command::new(stubs.script("claude", script));
    command
        .env("PATH", stubs.path_env())
        .current_dir(stubs.dir.path());
    Proc::spawn(command)
}

#[test]
fn deleting_a_protected_tree_is_one_request_denied_keeps_every_file() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    tree(&protected, 30);
    let before = count(&protected);
    let Some(guard) = guard_protecting(&[&protected]) else {
        return;
    };
    let path = protected.to_str().unwrap();
    let script = format!("rm -rf {path}; echo rm=$?");

    let run = agent(&stubs, &script);
    let hold = wait_operation(&guard, path);
    let operation = hold.operation.as_deref().unwrap();
    assert!(
        operation.starts_with("unlink ") && operation.contains(path),
        "{operation}"
    );
    assert_eq!(hold.rule, "p0");
    assert!(hold.protection.starts_with("BPF LSM"), "{hold:?}");
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    // Nobody but guardd continues it: not root's kill, not a session process.
    let cont = unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert_eq!(
        (cont, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM)),
        "SIGCONT from root went through"
    );
    sleep(Duration::from_millis(300));
    assert!(is_stopped(pid));
    assert_eq!(guard.pending().len(), 1, "one request for the tree");
    assert_eq!(count(&protected), before, "a file went before the decision");

    guard.decide("deny", &hold);
    let (status, out, err) = run.wait();
    assert!(status.success());
    assert_eq!(out, "rm=1\n", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(count(&protected), before, "a file went missing");

    // Approved: the whole tree goes, with one request.
    let run = agent(&stubs, &script);
    let hold = wait_operation(&guard, path);
    guard.decide("approve", &hold);
    let (_, out, err) = run.wait();
    assert_eq!(out, "rm=0\n", "{err}");
    assert!(!protected.exists());
    assert_eq!(
        guard.audit_events(AuditEvent::Hold).len(),
        2,
        "one hold per run"
    );
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
    tree(&protected.join("cache"), 3);
    let Some(guard) = guard_protecting(&[&protected]) else {
        return;
    };
    let scratch_path = scratch.to_str().unwrap();
    let cache = protected.join("cache");
    let run = agent(
        &stubs,
        &format!(
            "rm -rf {scratch_path} && echo x > {scratch_path}.log && chmod 600 {scratch_path}.log \
             && rm -rf {0}/d0 && echo y > {0}/new && echo ok",
            cache.display()
        ),
    );
    let (_, out, err) = run.wait();
    assert_eq!(out, "ok\n", "{err}");
    assert!(!scratch.exists());
    assert!(!cache.join("d0").exists(), "an except path was gated");
    assert!(guard.pending().is_empty());

    // `..` and a relative path still lead to the protected tree.
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let moved: PathBuf = dir.path().join("moved");
    let run = agent(
        &stubs,
        &format!(
            "cd {} && mv other/../precious moved; echo mv=$?",
            dir.path().display()
        ),
    );
    let hold = wait_operation(&guard, "/precious -> ");
    assert!(
        hold.operation
            .as_deref()
            .unwrap()
            .starts_with(&format!("rename {}", protected.display())),
        "{hold:?}"
    );
    guard.decide("deny", &hold);
    let (_, out, err) = run.wait();
    assert_eq!(out, "mv=1\n", "{err}");
    assert!(protected.exists() && !moved.exists());
    guard.stop();
}

#[test]
fn an_approval_releases_exactly_the_held_call_and_the_next_tree_is_held_again() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(first.join("a"), "old\n").unwrap();
    std::fs::write(second.join("b"), "old\n").unwrap();
    let Some(guard) = guard_protecting(&[&first, &second]) else {
        return;
    };
    // One shell process writes both: the restarted call is its own, once.
    let run = agent(
        &stubs,
        &format!(
            "echo new >> {}/a; echo a=$?; echo new >> {}/b; echo b=$?",
            first.display(),
            second.display()
        ),
    );
    let hold = wait_operation(&guard, "/first/");
    assert_eq!(hold.rule, "p0");
    guard.decide("approve", &hold);
    let hold = wait_operation(&guard, "/second/");
    assert_eq!(hold.rule, "p1");
    assert_eq!(
        std::fs::read_to_string(first.join("a")).unwrap(),
        "old\nnew\n"
    );
    guard.decide("deny", &hold);
    let (_, out, err) = run.wait();
    assert_eq!(out, "a=0\nb=1\n", "{err}");
    assert_eq!(std::fs::read_to_string(second.join("b")).unwrap(), "old\n");
    guard.stop();
}

#[test]
fn a_held_call_stays_held_across_a_guardd_crash_and_is_raised_again() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    tree(&protected, 3);
    let Some(mut guard) = guard_protecting(&[&protected]) else {
        return;
    };
    let path = protected.to_str().unwrap();
    let run = agent(&stubs, &format!("rm -rf {path}; echo rm=$?"));
    let hold = wait_operation(&guard, path);
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    guard.stop_daemon(libc::SIGKILL);
    sleep(Duration::from_millis(500));
    assert!(is_stopped(pid), "released by the crash");
    assert!(protected.exists());

    guard.restart();
    let again = wait_operation(&guard, path);
    assert_eq!(u64::from(again.pid), pid);
    guard.decide("approve", &again);
    let (_, out, err) = run.wait();
    assert_eq!(out, "rm=0\n", "{err}");
    assert!(!protected.exists());
    guard.stop();
}

/// The pending request whose operation contains `word` (busybox's shell runs
/// `rm` and `mv` in its own process, so argv does not name them).
fn wait_operation(guard: &Daemon, word: &str) -> HoldView {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(hold) = guard
            .pending()
            .into_iter()
            .find(|h| h.operation.as_ref().is_some_and(|o| o.contains(word)))
        {
            return hold;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hold on {word}; log:\n{}",
            guard.log()
        );
        sleep(Duration::from_millis(20));
    }
}

/// A `fallback` entry on `/` (the default pack's `outside-workspace`, written
/// out so no exec rule is in the way): the kernel holds a delete outside the
/// session's workspace as one request for the outermost directory holding no
/// home or workspace, and lets /tmp go.
#[test]
fn deleting_outside_the_workspace_is_held_where_the_lsm_runs() {
    require_root();
    let stubs = Stubs::new();
    let outside = tempfile::tempdir_in("/").unwrap();
    let victim = outside.path().join("victim");
    tree(&victim, 12);
    let before = count(&victim);
    let scratch = tempfile::tempdir().unwrap();
    tree(&scratch.path().join("s"), 6);
    let guard = Daemon::start(
        "version = 1\nbase = \"none\"\n[agents]\nprograms = [\"claude\"]\n\
         [[protect]]\nid = \"outside\"\npaths = [\"/\"]\nfallback = true\n\
         operations = [\"unlink\", \"rmdir\", \"rename\", \"truncate\"]\n\
         except = [\"{workspace}\", \"/tmp\", \"/dev\", \"/proc\", \"/sys\", \"/run\"]\n",
    );
    if !lsm_active(&guard.status()) {
        return guard.stop();
    }
    let go = scratch.path().join("go");
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done\n\
         rm -rf {s}; echo tmp=$?; rm -rf {v}; echo rm=$?",
        go = go.display(),
        s = scratch.path().join("s").display(),
        v = victim.display(),
    );
    let run = agent(&stubs, &script);
    // The session's workspace is known once guardd has handled the detection.
    let deadline = std::time::Instant::now() + WAIT;
    while guard.status().sessions.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no session");
        sleep(Duration::from_millis(20));
    }
    std::fs::write(&go, "").unwrap();
    let hold = wait_operation(&guard, victim.to_str().unwrap());
    assert_eq!(hold.rule, "outside");
    assert_request_under(&hold, outside.path());
    sleep(Duration::from_millis(300));
    assert_eq!(guard.pending().len(), 1, "one request for the tree");
    guard.decide("deny", &hold);
    let (status, out, err) = run.wait();
    assert!(status.success());
    assert_eq!(out, "tmp=0\nrm=1\n", "{err}");
    assert!(!scratch.path().join("s").exists());
    assert_eq!(count(&victim), before, "a file went missing");
    guard.stop();
}

/// A hard link out of a protected tree is held by `path_link` as renaming
/// the file away: a denial leaves no second name to empty the file through.
#[test]
fn a_hard_link_out_of_a_protected_tree_is_held_where_the_lsm_runs() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let link = LinkOut::new(dir.path());
    let Some(guard) = guard_protecting(&[&link.protected]) else {
        return;
    };
    let run = agent(&stubs, &link.script);
    let hold = wait_operation(&guard, link.file.to_str().unwrap());
    assert_eq!(hold.rule, "p0");
    guard.decide("deny", &hold);
    link.assert_refused(run.wait());
    guard.stop();
}
