//! What is held: watched programs in sessions, through wrappers and symlinks,
//! in agents found without the launcher; and nothing else.
//! Run as root by `cargo xtask test`.
mod common;

use std::{
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    process::Command,
    time::Duration,
};

use common::*;

#[test]
fn no_hold_outside_sessions_or_for_unwatched_commands() {
    let (stubs, guard) = setup(HOLD_DESTROY_DENY_NUKE);
    // The same command outside any session.
    let mut outside = Command::new(stubs.bin().join("terraform"));
    outside.arg("destroy").arg("outside");
    let (status, _, _) = Proc::spawn(outside).wait();
    assert!(status.success());
    // Unwatched programs, a busybox applet run by its link from PATH
    // (busybox is a watched wrapper, but argv[0] names an unwatched
    // applet), and a watched program the policy allows, in a session.
    std::os::unix::fs::symlink("/bin/busybox", stubs.bin().join("uname")).unwrap();
    let line = "echo hi; ls / >/dev/null; uname >/dev/null; terraform plan";
    let (status, out, _) = guard.session(&stubs, &["sh", "-c", line]).wait();
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
    let (stubs, guard) = setup(HOLD_DESTROY_DENY_NUKE);
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
        .map(|(_, args)| guard.session(&stubs, args))
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

/// A recursive rm anywhere but a build directory, and a forced git push.
const HOLD_RM_RECURSIVE_AND_FORCE_PUSH: &str = r#"
version = 1
base = "none"
[[rule]]
id = "rm-recursive"
programs = ["rm"]
args_any = ["-r"]
paths_except = ["{cwd}/**/build"]
action = "hold"

[[rule]]
id = "git-push-force"
programs = ["git"]
subcommand = ["push"]
args_any = ["--force"]
action = "hold"
"#;

#[test]
fn busybox_the_loader_and_git_libexec_do_not_dodge_the_hold() {
    let (stubs, guard) = setup(HOLD_RM_RECURSIVE_AND_FORCE_PUSH);
    let dir = stubs.dir.path();
    let rm = ["/usr/bin/rm", "/bin/rm"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    let loader = "/lib64/ld-linux-x86-64.so.2";
    // busybox runs the applet argv[0] names, whatever its link is called.
    let link = stubs.dir.path().join("sleep");
    std::os::unix::fs::symlink("/bin/busybox", &link).unwrap();
    let mut cases: Vec<(&str, Vec<String>)> = vec![
        (
            "v-busybox",
            vec!["busybox".into(), "rm".into(), "-rf".into()],
        ),
        (
            "v-applet-by-argv0",
            // busybox's own shell: dash has no `exec -a`.
            vec![
                "busybox".into(),
                "sh".into(),
                "-c".into(),
                r#"exec -a rm "$0" -rf "$1""#.into(),
                link.display().to_string(),
            ],
        ),
    ];
    // The VM's initramfs has static binaries and no loader.
    if std::path::Path::new(loader).exists() {
        cases.push(("v-loader", vec![loader.into(), rm.into(), "-rf".into()]));
        cases.push((
            "v-argv0",
            vec![
                loader.into(),
                "--argv0".into(),
                "rm".into(),
                rm.into(),
                "-rf".into(),
            ],
        ));
    }
    // git's libexec form of a subcommand, where git is installed (not in the VM).
    let exec_path = Command::new("git").arg("--exec-path").output();
    if let Some(out) = exec_path.ok().filter(|out| out.status.success()) {
        let git_push = std::path::Path::new(String::from_utf8_lossy(&out.stdout).trim())
            .join("git-push")
            .display()
            .to_string();
        cases.push((
            "v-git-push",
            vec![git_push, "--force".into(), "origin".into()],
        ));
    }
    let mut runs = Vec::new();
    for (victim, argv) in &cases {
        std::fs::create_dir_all(dir.join(victim).join("src")).unwrap();
        let target = dir.join(victim).display().to_string();
        let args: Vec<&str> = argv
            .iter()
            .map(String::as_str)
            .chain([target.as_str()])
            .collect();
        runs.push(guard.session(&stubs, &args));
    }
    for (victim, _) in &cases {
        let hold = guard.wait_hold(&dir.join(victim).display().to_string());
        wait_stopped(u64::from(hold.pid));
        let rule = if *victim == "v-git-push" {
            "git-push-force"
        } else {
            "rm-recursive"
        };
        assert_eq!(hold.rule, rule, "{hold:?}");
    }
    for hold in guard.pending() {
        guard.decide("deny", &hold);
    }
    for run in runs {
        assert!(!run.wait().0.success());
    }
    for (victim, _) in &cases {
        assert!(
            dir.join(victim).join("src").exists(),
            "{victim} was deleted"
        );
    }
    guard.stop();
}

#[test]
fn a_command_sent_over_ssh_is_judged_as_a_command() {
    let (stubs, guard) = setup(HOLD_RM_RECURSIVE_AND_FORCE_PUSH);
    // A stand-in for ssh: it records what it would have sent.
    stubs.script(
        "ssh",
        &format!("echo \"$*\" >> {}", stubs.marker().display()),
    );
    let held = guard.session(&stubs, &["ssh", "-p", "2222", "db1", "rm -rf /srv/data"]);
    let hold = guard.wait_hold("rm -rf /srv/data");
    wait_stopped(u64::from(hold.pid));
    assert_eq!(hold.rule, "rm-recursive");
    assert_eq!(
        guard
            .explain(&hold.argv.iter().map(String::as_str).collect::<Vec<_>>())
            .why[0],
        "runs via ssh on db1: rm -rf /srv/data"
    );
    guard.decide("deny", &hold);
    assert!(!held.wait().0.success());
    // The same line given as ssh's RemoteCommand option.
    let held = guard.session(
        &stubs,
        &["ssh", "-o", "RemoteCommand=rm -rf /srv/data", "db1"],
    );
    let hold = guard.wait_hold("RemoteCommand=rm -rf /srv/data");
    guard.decide("deny", &hold);
    assert!(!held.wait().0.success());
    let (status, _, _) = guard.session(&stubs, &["ssh", "db1", "uptime"]).wait();
    assert!(status.success());
    assert_eq!(
        stubs.marker_text(),
        "db1 uptime\n",
        "only the harmless command went"
    );
    guard.stop();
}

#[test]
fn an_exemption_is_judged_on_the_path_a_symlink_leads_to() {
    let (stubs, guard) = setup(HOLD_RM_RECURSIVE_AND_FORCE_PUSH);
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim");
    std::fs::create_dir_all(victim.join("src")).unwrap();
    let dir = stubs.dir.path();
    std::os::unix::fs::symlink(&victim, dir.join("build")).unwrap();
    std::fs::create_dir_all(dir.join("out/build/obj")).unwrap();
    // A real build directory is exempt and goes.
    let (status, _, err) = guard.session(&stubs, &["rm", "-rf", "out/build"]).wait();
    assert!(status.success(), "{err}");
    assert!(!dir.join("out/build").exists());
    // Through the link, the exemption does not apply.
    let held = guard.session(&stubs, &["rm", "-rf", "build/"]);
    let hold = guard.wait_hold("build/");
    wait_stopped(u64::from(hold.pid));
    guard.decide("deny", &hold);
    assert!(!held.wait().0.success());
    assert!(victim.join("src").exists());
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
        "{HOLD_DESTROY_DENY_NUKE}\n[agents]\nprograms = [\"claude\"]\ninterpreters = [\"python3\"]\npackages = [\"{}/agent-pkg/\"]\n",
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
    let guard = Daemon::start(&HOLD_DESTROY_DENY_NUKE.replace("args_any = [\"destroy\"]", ""));
    let recognition = mechanism(&guard.status(), "program_recognition");
    assert!(recognition.contains("symlinks"), "{recognition}");

    let target = stubs.marker();
    let run = guard.session(&stubs, &["tf", target.to_str().unwrap()]);
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

/// Counts every stop and reports the latency figures (printed, not asserted:
/// timing belongs to `cargo xtask bench`).
#[test]
fn every_watched_exec_is_counted_with_its_latency() {
    let (stubs, guard) = setup(HOLD_DESTROY_DENY_NUKE);
    let (status, _, _) = guard
        .session(
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

/// Whether git is installed (not in the VM); says so when it is not.
fn have_git() -> bool {
    let found = Command::new("git").arg("--version").output().is_ok();
    if !found {
        eprintln!("git is not installed here (the VM): skipped");
    }
    found
}

/// Runs git in `cwd` outside any session; its stdout.
fn git(cwd: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository `name` in `dir` with one commit of `file`.
fn repo_with_a_commit(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    git(dir, &["init", "-q", "-b", "main", name]);
    let repo = dir.join(name);
    git(&repo, &["config", "user.email", "dev@example.com"]);
    git(&repo, &["config", "user.name", "dev"]);
    std::fs::write(repo.join("file"), "committed\n").unwrap();
    git(&repo, &["add", "file"]);
    git(&repo, &["commit", "-qm", "first"]);
    repo
}

/// `git stash` saves the changes and then runs `git reset --hard` itself:
/// that reset is not held; the same reset typed by the agent is.
#[test]
fn git_stash_resets_its_own_tree_and_a_typed_reset_is_held() {
    if !have_git() {
        return;
    }
    let (stubs, guard) = setup(
        r#"
version = 1
base = "none"
[[rule]]
id = "git-reset-hard"
programs = ["git"]
subcommand = ["reset"]
flags_any = ["--hard"]
not_run_by = ["git stash"]
action = "hold"
"#,
    );
    let repo = repo_with_a_commit(stubs.dir.path(), "repo");
    let file = repo.join("file");

    std::fs::write(&file, "work in progress\n").unwrap();
    let (status, _, stderr) = guard
        .session(&stubs, &["sh", "-c", "cd repo && git stash push -m wip"])
        .wait();
    assert!(status.success(), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "committed\n");
    assert!(guard.pending().is_empty(), "{:?}", guard.pending());
    let stats = guard.status().stats;
    assert!(
        stats.allowed >= 2,
        "stash and its reset were judged: {stats:?}"
    );

    std::fs::write(&file, "more work\n").unwrap();
    let run = guard.session(&stubs, &["sh", "-c", "cd repo && git reset --hard"]);
    let hold = guard.wait_hold("reset");
    assert_eq!(hold.rule, "git-reset-hard");
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "more work\n");
    guard.stop();
}

/// A watched program under a name no rule knows is judged as itself: a hard
/// link (same inode), a copy a user owns, a copy root made outside the
/// program directories and a memfd (same content), and a copy with a byte
/// appended (same ELF build-id). A copy of an unwatched program runs.
#[test]
fn a_link_a_copy_or_a_memfd_of_a_watched_program_is_held_as_it() {
    let rm = std::fs::canonicalize("/usr/bin/rm")
        .or_else(|_| std::fs::canonicalize("/bin/rm"))
        .unwrap();
    if rm.file_name().is_some_and(|name| name == "busybox") {
        eprintln!("rm is busybox here (the VM): skipped");
        return;
    }
    let (stubs, guard) = setup(HOLD_RM_RECURSIVE_AND_FORCE_PUSH);
    let dir = stubs.dir.path();
    let nobody = |path: &std::path::Path| {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    };
    let mut cases: Vec<(&str, Vec<String>)> = Vec::new();
    let link = dir.join("del");
    match std::fs::hard_link(&rm, &link) {
        Ok(()) => cases.push((
            "i-hard-link",
            vec![link.display().to_string(), "-rf".into()],
        )),
        Err(err) => eprintln!(
            "no hard link to {} here ({err}): case skipped",
            rm.display()
        ),
    }
    let copy = dir.join("x");
    std::fs::copy(&rm, &copy).unwrap();
    nobody(&copy);
    cases.push(("i-copy", vec![copy.display().to_string(), "-rf".into()]));
    // Root's, with one link, but outside the system's program directories
    // (an agent running as root made it).
    let root_copy = dir.join("z");
    std::fs::copy(&rm, &root_copy).unwrap();
    cases.push((
        "i-root-copy",
        vec![root_copy.display().to_string(), "-rf".into()],
    ));
    // The same build with a byte appended: another size, the same build-id.
    let appended = dir.join("y");
    let bytes = std::fs::read(&rm).unwrap();
    std::fs::write(&appended, [bytes.as_slice(), b"\0"].concat()).unwrap();
    std::fs::set_permissions(&appended, std::fs::Permissions::from_mode(0o755)).unwrap();
    nobody(&appended);
    cases.push((
        "i-appended",
        vec![appended.display().to_string(), "-rf".into()],
    ));
    if Command::new("python3").arg("-V").output().is_ok() {
        let script = "import os, sys\n\
            fd = os.memfd_create('x')\n\
            data = open(sys.argv[1], 'rb').read()\n\
            while data:\n    data = data[os.write(fd, data):]\n\
            os.execv('/proc/self/fd/%d' % fd, ['x', '-rf', sys.argv[2]])\n";
        cases.push((
            "i-memfd",
            vec![
                "python3".into(),
                "-c".into(),
                script.into(),
                rm.display().to_string(),
            ],
        ));
    }
    let mut runs = Vec::new();
    for (victim, argv) in &cases {
        std::fs::create_dir_all(dir.join(victim).join("src")).unwrap();
        let target = dir.join(victim).display().to_string();
        let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
        args.push(&target);
        runs.push(guard.session(&stubs, &args));
    }
    for (victim, _) in &cases {
        let hold = guard.wait_hold(&dir.join(victim).display().to_string());
        wait_stopped(u64::from(hold.pid));
        assert_eq!(hold.rule, "rm-recursive", "{victim}: {hold:?}");
        guard.decide("deny", &hold);
    }
    for run in runs {
        assert!(!run.wait().0.success());
    }
    for (victim, _) in &cases {
        assert!(
            dir.join(victim).join("src").exists(),
            "{victim} was deleted"
        );
    }
    // A copy of a program no rule names is stopped, judged and let run.
    let echo = dir.join("say");
    std::fs::copy(
        std::fs::canonicalize("/usr/bin/echo")
            .or_else(|_| std::fs::canonicalize("/bin/echo"))
            .unwrap(),
        &echo,
    )
    .unwrap();
    nobody(&echo);
    let (status, out, _) = guard
        .session(&stubs, &[echo.to_str().unwrap(), "hi"])
        .wait();
    assert!(status.success());
    assert_eq!(out, "hi\n");
    assert!(guard.pending().is_empty());
    guard.stop();
}

/// A force push written into `.git/config` (no `git config` command seen)
/// makes a plain `git push` a force push: held, and the remote keeps its
/// history when denied.
#[test]
fn a_push_the_repository_config_forces_is_held() {
    if !have_git() {
        return;
    }
    let (stubs, guard) = setup(
        r#"
version = 1
base = "none"
[[rule]]
id = "git-push-force-refspec"
programs = ["git"]
subcommand = ["push"]
args_any = ["+*"]
action = "hold"
"#,
    );
    let dir = stubs.dir.path();
    git(dir, &["init", "-q", "--bare", "remote.git"]);
    let repo = repo_with_a_commit(dir, "repo");
    git(&repo, &["remote", "add", "origin", "../remote.git"]);
    git(&repo, &["push", "-q", "origin", "main"]);
    let published = git(dir, &["--git-dir", "remote.git", "rev-parse", "main"]);
    // Rewrite history, and have the config force it out.
    git(&repo, &["commit", "-q", "--amend", "-m", "rewritten"]);
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(repo.join(".git/config"))
        .unwrap();
    std::io::Write::write_all(&mut config, b"\tpush = +refs/heads/main:refs/heads/main\n").unwrap();

    let run = guard.session(&stubs, &["sh", "-c", "cd repo && git push -q"]);
    let hold = guard.wait_hold("push");
    assert_eq!(hold.rule, "git-push-force-refspec");
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    assert_eq!(
        git(dir, &["--git-dir", "remote.git", "rev-parse", "main"]),
        published
    );
    guard.stop();
}

/// A watched `#!` script under another name runs as its interpreter: a
/// symlink or a copy run by its `#!` line, the copy given to a shell (with
/// options, as `/proc/self/fd/N`, or on stdin) is each held as the script.
/// The copies are root's with one link, as an agent running as root makes
/// them. A shell running another script is stopped and let run; `sh -c`
/// is not stopped.
#[test]
fn a_copy_or_symlink_of_a_watched_script_is_held_as_it() {
    require_root();
    let stubs = Stubs::new();
    let policy = format!(
        "{HOLD_DESTROY_DENY_NUKE}\n[defaults]\nprogram_dirs = [{:?}]\n",
        stubs.bin().display().to_string()
    );
    let guard = Daemon::start(&policy);
    let dir = stubs.dir.path();
    std::os::unix::fs::symlink(stubs.bin().join("terraform"), dir.join("tfl")).unwrap();
    std::fs::copy(stubs.bin().join("terraform"), dir.join("tfc")).unwrap();
    let cases: [(&str, &[&str]); 6] = [
        ("s-link", &["./tfl", "destroy", "s-link"]),
        ("s-copy", &["./tfc", "destroy", "s-copy"]),
        ("s-sh", &["sh", "./tfc", "destroy", "s-sh"]),
        (
            "s-options",
            &["sh", "-e", "-u", "./tfc", "destroy", "s-options"],
        ),
        ("s-stdin", &["sh", "-c", "sh -s destroy s-stdin < ./tfc"]),
        (
            "s-fd",
            &["sh", "-c", "exec 3< ./tfc; sh /proc/self/fd/3 destroy s-fd"],
        ),
    ];
    let runs: Vec<Proc> = cases
        .iter()
        .map(|(_, args)| guard.session(&stubs, args))
        .collect();
    for (tag, _) in &cases {
        let hold = guard.wait_hold(tag);
        wait_stopped(u64::from(hold.pid));
        assert_eq!(hold.rule, "tf-destroy", "{tag}: {hold:?}");
        guard.decide("deny", &hold);
    }
    for run in runs {
        assert!(!run.wait().0.success());
    }
    assert_eq!(stubs.marker_text(), "", "no copy of the script ran");

    let stops = guard.status().stats.stops;
    write_script(dir, "other", "echo other ran");
    let (status, out, _) = guard
        .session(&stubs, &["sh", "-c", "sh ./other; echo done"])
        .wait();
    assert!(status.success());
    assert_eq!(out, "other ran\ndone\n");
    let stats = guard.status().stats;
    assert_eq!(
        stats.stops - stops,
        1,
        "`sh ./other` stopped and `sh -c` did not: {stats:?}"
    );
    assert!(guard.pending().is_empty());
    guard.stop();
}
