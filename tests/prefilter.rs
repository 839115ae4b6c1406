//! The exec gate's kernel prefilter on real execs: a watched program none
//! of whose arguments a rule names runs without a stop; one that may be
//! held stops and is judged as before; what the kernel cannot read whole
//! stops. Run as root by `cargo xtask test` (and in the VM, on 6.1).
mod common;

use std::{fs, path::Path, process::Command};

use common::*;

/// Copies of `true` under watched names, in a directory the policy names
/// as a program directory: root's, one link, their own names.
fn programs(stubs: &Stubs) -> (std::path::PathBuf, Daemon) {
    let dir = stubs.dir.path().join("programs");
    fs::create_dir(&dir).unwrap();
    for name in ["git", "kubectl", "terraform", "docker"] {
        fs::copy("/bin/true", dir.join(name)).unwrap();
    }
    let policy = format!(
        "version = 1\n[defaults]\nprogram_dirs = [{:?}]\n",
        dir.display().to_string()
    );
    (dir, Daemon::start(&policy))
}

fn in_session(guard: &Daemon, stubs: &Stubs, dir: &Path, line: &str) -> Proc {
    let line = format!("PATH={}:$PATH; {line}", dir.display());
    guard.session(stubs, &["sh", "-c", &line])
}

#[test]
fn watched_programs_stop_only_when_an_argument_may_match_a_rule() {
    require_root();
    let stubs = Stubs::new();
    let (dir, guard) = programs(&stubs);
    let before = guard.status().stats;
    let everyday = "git status; git diff --stat; git log --oneline -5; git add .; \
                    git commit -m 'fix the parser'; git -C . status --short; \
                    kubectl get pods -n prod; terraform plan; docker ps -a";
    // `true` ends the line: in the VM the copies are busybox, which exits
    // 127 under a name it has no applet for.
    let everyday = format!("{everyday}; true");
    let (status, _, err) = in_session(&guard, &stubs, &dir, &everyday).wait();
    assert!(status.success(), "{err}");
    let after = guard.status().stats;
    assert_eq!(after.stops, before.stops, "nothing stopped: {after:?}");
    assert_eq!(after.prefilter_passed - before.prefilter_passed, 9);

    // Each of these may be held: it stops, and is held as before.
    let held = "kubectl delete pod db; terraform destroy; git push --force origin main";
    let run = in_session(&guard, &stubs, &dir, held);
    for word in ["delete", "destroy", "push"] {
        let hold = guard.wait_hold(word);
        guard.decide("deny", &hold);
    }
    assert!(!run.wait().0.success());
    let stops = guard.status().stats.stops;
    assert_eq!(stops - after.stops, 3);

    // A path to the program passes like its name. What the kernel cannot
    // read whole stops, and guardd allows it: more than 31 arguments, an
    // argument of 5000 bytes, argv[0] another name, the same file copied
    // outside a program directory.
    let args = (0..40).map(|n| n.to_string()).collect::<Vec<_>>().join(" ");
    let long = "x".repeat(5000);
    // (No bash in the VM's initramfs to set argv[0] with.)
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .iter()
        .any(|b| Path::new(b).exists());
    let renamed = if bash {
        "bash -c 'exec -a gitx git status';"
    } else {
        ""
    };
    let unread = format!(
        "{git} status; git status {args}; git commit -m {long}; {renamed} \
         PATH=$PWD/other:$PATH git status; true",
        git = dir.join("git").display()
    );
    fs::create_dir(stubs.dir.path().join("other")).unwrap();
    fs::copy(dir.join("git"), stubs.dir.path().join("other/git")).unwrap();
    let (status, _, err) = in_session(&guard, &stubs, &dir, &unread).wait();
    assert!(status.success(), "{err}");
    let stats = guard.status().stats;
    assert_eq!(stats.stops - stops, 3 + u64::from(bash), "{stats:?}");
    assert_eq!(stats.prefilter_passed - after.prefilter_passed, 1);
    assert!(guard.pending().is_empty());
    guard.stop();
}

/// A file of root's with several links passes only where such a link can
/// be root's doing alone: with a program directory anyone may write, a hard
/// link to another program (where `fs.protected_hardlinks` is off) could
/// carry root's ownership there under a watched name, so it stops.
#[test]
fn a_hard_linked_program_stops_where_a_program_directory_is_writable() {
    require_root();
    let stubs = Stubs::new();
    let dir = stubs.dir.path().join("programs");
    fs::create_dir(&dir).unwrap();
    fs::copy("/bin/true", dir.join("git")).unwrap();
    fs::hard_link(dir.join("git"), dir.join("git-twin")).unwrap();
    let writable = stubs.dir.path().join("writable");
    fs::create_dir(&writable).unwrap();
    let mode = |path: &Path, mode: u32| {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    mode(&writable, 0o777);
    // Where the kernel lets users link to root's files (the VM), it stops too.
    let protected = fs::read_to_string("/proc/sys/fs/protected_hardlinks")
        .is_ok_and(|value| value.trim() == "1");
    for (dirs, stops) in [
        (vec![&dir], u64::from(!protected)),
        (vec![&dir, &writable], 1),
    ] {
        let dirs: Vec<String> = dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string()))
            .collect();
        let guard = Daemon::start(&format!(
            "version = 1\n[defaults]\nprogram_dirs = [{}]\n",
            dirs.join(", ")
        ));
        let before = guard.status().stats.stops;
        let (status, _, err) = in_session(&guard, &stubs, &dir, "git status; true").wait();
        assert!(status.success(), "{err}");
        assert_eq!(
            guard.status().stats.stops - before,
            stops,
            "program dirs {dirs:?}"
        );
        guard.stop();
    }
}

#[test]
fn status_and_explain_say_what_the_kernel_does() {
    require_root();
    let stubs = Stubs::new();
    let (_dir, guard) = programs(&stubs);
    let git = guard.explain(&["git", "status"]);
    let kernel = git.kernel.unwrap();
    assert!(kernel.starts_with("runs without a stop"), "{kernel}");
    let push = guard.explain(&["git", "push", "origin", "main"]);
    let kernel = push.kernel.unwrap();
    assert!(kernel.contains("`push`"), "{kernel}");
    let rm = guard.explain(&["rm", "notes.txt"]).kernel.unwrap();
    assert!(rm.contains("rule rm-critical-path"), "{rm}");

    let status = guard.status();
    let view = |name: &str| {
        status
            .prefilters
            .iter()
            .find(|p| p.program == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", status.prefilters))
            .clone()
    };
    assert!(view("git").prefiltered);
    assert!(view("git").detail.contains("`push`"));
    assert!(!view("rm").prefiltered);
    assert!(view("aws").detail.contains("alias"));
    let text = guard.ctl(&["status", "--prefilter"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("argv prefilter:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("kubectl") && l.contains("argv")),
        "{text}"
    );
    guard.stop();
}

/// A real repository and the real git: an agent's everyday git commands
/// run without a stop, a push stops.
#[test]
fn the_real_git_in_a_repository_runs_without_a_stop() {
    require_root();
    let Ok(git) = which("git") else {
        return eprintln!("no git here: skipped");
    };
    let stubs = Stubs::new();
    let guard = Daemon::start("version = 1\n");
    let repo = stubs.dir.path();
    let run = |args: &[&str]| {
        let status = Command::new(&git)
            .args(args)
            .current_dir(repo)
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    };
    run(&["init", "-q", "-b", "main"]);
    fs::write(repo.join("a.txt"), "a\n").unwrap();
    let before = guard.status().stats;
    let line = "git status --short && git add a.txt && \
                git -c user.name=t -c user.email=t@t commit -qm first && \
                git diff HEAD && git log --oneline -1 >/dev/null";
    let (status, _, err) = guard.session(&stubs, &["sh", "-c", line]).wait();
    assert!(status.success(), "{err}");
    let after = guard.status().stats;
    let stopped: Vec<String> = (guard.audit().into_iter())
        .filter(|record| !record.argv.is_empty())
        .map(|record| format!("{:?} {}", record.exe, record.argv.join(" ")))
        .collect();
    assert_eq!(after.stops, before.stops, "{after:?} {stopped:?}");
    assert!(after.prefilter_passed - before.prefilter_passed >= 5);
    guard.stop();
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .ok_or(())
}
