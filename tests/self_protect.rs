//! guardd against an agent that tries to switch it off from inside a session
//! (as root, without the BPF LSM): removing the pin directory detaches
//! nothing and the pins come back, audited; a failed attach is never shown
//! as working; a root session is told it cannot be fully contained.
mod common;

use std::{
    os::unix::process::ExitStatusExt as _,
    thread::sleep,
    time::{Duration, Instant},
};

use common::*;

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn removing_the_pin_directory_from_a_session_detaches_nothing_and_is_repaired() {
    let (stubs, mut guard) = setup(HOLD_TERRAFORM_DESTROY);
    let pin_dir = guard.pin_dir.clone();
    assert!(pin_dir.join("links/exec_gate").exists());

    let lsm = lsm_active(&guard.status());
    // `rm` is no watched program here (nor python's shutil.rmtree anywhere).
    let (status, _, stderr) = guard
        .session(&stubs, &["rm", "-rf", pin_dir.to_str().unwrap()])
        .wait();
    if lsm {
        // The BPF LSM keeps session processes off agent-guard's files.
        assert!(!status.success(), "the LSM let a session remove the pins");
        assert!(pin_dir.join("links/exec_gate").exists());
    } else {
        assert!(status.success(), "rm -rf: {stderr}");
        assert!(!pin_dir.join("links/exec_gate").exists());
    }

    // The exec gate still stops a watched command at once.
    let run = guard.session(&stubs, &["terraform", "destroy", "after-rmtree"]);
    let hold = guard.wait_hold("after-rmtree");
    wait_stopped(u64::from(hold.pid));
    assert_eq!(stubs.marker_text(), "", "it ran");

    // The pins are back, and the removal is in the audit log and in status.
    wait_until("the pins to come back", || {
        [
            "links/exec_gate",
            "links/sessions_fork",
            "maps/HELD",
            "maps/SESSIONS",
        ]
        .iter()
        .all(|pin| pin_dir.join(pin).exists())
    });
    wait_until("the audit record", || {
        lsm || guard
            .audit_events(AuditEvent::Error)
            .iter()
            .any(|r| r.reason.as_deref().unwrap_or("").contains("were removed"))
    });
    let watch = mechanism(&guard.status(), "pin_watch");
    let repairs = if lsm {
        "repaired 0 time(s)"
    } else {
        "repaired 1 time(s)"
    };
    assert!(watch.contains(repairs), "{watch}");

    // The pins are the live maps: a crash now keeps the hold, and the next
    // guardd re-adopts it from them with the same id.
    guard.stop_daemon(libc::SIGKILL);
    sleep(Duration::from_millis(200));
    assert!(is_stopped(u64::from(hold.pid)));
    guard.spawn();
    let again = guard.wait_hold("after-rmtree");
    assert_eq!(again.id, hold.id);
    guard.decide("deny", &again);
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

#[test]
fn a_root_session_is_told_what_cannot_be_promised() {
    let (stubs, guard) = setup(HOLD_TERRAFORM_DESTROY);
    let status = guard.status();
    let root = mechanism(&status, "root_sessions");
    let (_, _, stderr) = guard.session(&stubs, &["true"]).wait();
    if lsm_active(&status) {
        assert!(!root.contains("NOT contained"), "{root}");
        assert!(!stderr.contains("cannot be fully contained"), "{stderr}");
    } else {
        assert!(root.contains("NOT contained"), "{root}");
        assert!(
            stderr.contains("WARNING: this session runs as root")
                && stderr.contains("cannot be fully contained"),
            "{stderr}"
        );
    }
    guard.stop();
}

/// The report-only gate cannot attach while its pin directory cannot take
/// pins (a file where `links/` should be): status and `guardctl run` say it
/// is not working, the failure is audited, and it is retried until it works.
#[test]
fn a_report_gate_that_fails_to_attach_is_said_so_and_retried() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("precious");
    std::fs::create_dir(&protected).unwrap();
    let guard = Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[[protect]]\nid = \"precious\"\npaths = [\"{}\"]\n",
        protected.display()
    ));
    if lsm_active(&guard.status()) {
        eprintln!("skipped: the BPF LSM gates calls here, there is no report-only gate");
        guard.stop();
        return;
    }
    // Break pinning before a session needs the gate: a map is pinned where
    // the link pins' directory was (bpffs holds no plain files), so neither
    // the attach nor the pin watch can pin there.
    let links = guard.pin_dir.join("links");
    std::fs::remove_dir_all(&links).unwrap();
    aya::maps::MapData::from_pin(guard.pin_dir.join("maps/HELD"))
        .unwrap()
        .pin(&links)
        .unwrap();
    let blocker = guard.session(&stubs, &["sh", "-c", "sleep 30"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let report_status = loop {
        let gate = mechanism(&guard.status(), "syscall_gate.unlink");
        if gate.contains("NOT WORKING") || Instant::now() > deadline {
            break gate;
        }
        sleep(Duration::from_millis(100));
    };
    assert!(report_status.contains("NOT WORKING"), "{report_status}");
    let program = guard
        .status()
        .programs
        .into_iter()
        .find(|p| p.name == "report_syscall")
        .unwrap();
    assert!(!program.attached, "{program:?}");
    let (_, _, stderr) = guard.session(&stubs, &["true"]).wait();
    assert!(
        stderr.contains("report-only syscall gate is NOT working"),
        "{stderr}"
    );
    assert!(guard.audit_events(AuditEvent::Error).iter().any(|r| r
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("report-only syscall gate not attached")));

    // Repaired: the retry attaches it and reports resume.
    let _ = std::fs::remove_file(&links);
    wait_until("the report gate to attach again", || {
        !mechanism(&guard.status(), "syscall_gate.unlink").contains("NOT WORKING")
    });
    let (status, _, _) = guard
        .session(&stubs, &["rmdir", protected.to_str().unwrap()])
        .wait();
    assert!(status.success());
    wait_until("the report of the rmdir", || {
        guard
            .audit_events(AuditEvent::Audit)
            .iter()
            .any(|r| r.rule.as_deref() == Some("precious"))
    });
    drop(blocker);
    guard.stop();
}

/// An agent (root, in its session) kills guardd with the shell's builtin
/// `kill` and continues its own held command. Frozen, the command does not
/// run and the next guardd holds it under the same id. Without the freezer
/// and the BPF LSM nothing can stop that, but it is not silent: the next
/// guardd audits that the command ran without a decision, and who continued it.
#[test]
fn a_held_command_continued_while_guardd_was_killed_stays_frozen_or_is_audited() {
    let (stubs, mut guard) = setup(HOLD_TERRAFORM_DESTROY);
    let lsm = lsm_active(&guard.status());
    let go = stubs.dir.path().join("go");
    let run = guard.session(&stubs, &["terraform", "destroy", "killed"]);
    let hold = guard.wait_hold("killed");
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    let agent = guard.session(
        &stubs,
        &[
            "sh",
            "-c",
            &format!(
                "while [ ! -e {go} ]; do sleep 0.05; done; kill -9 {guardd} && sleep 0.5 && kill -CONT {pid}",
                go = go.display(),
                guardd = guard.pid(),
            ),
        ],
    );
    std::fs::write(&go, "").unwrap();
    let (killed, _, stderr) = agent.wait();
    if lsm || !killed.success() {
        // The BPF LSM refuses a session's signal to guardd: the hold stands.
        assert!(is_stopped(pid), "{stderr}");
        guard.decide("deny", &hold);
        run.wait();
        guard.stop();
        return;
    }
    if freezer_here() {
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(stubs.marker_text(), "", "the continued command ran");
        guard.stop_daemon(libc::SIGKILL);
        guard.spawn();
        let pending = guard.pending();
        assert!(pending.iter().any(|h| h.id == hold.id), "{pending:?}");
        guard.decide("deny", &hold);
        assert_eq!(run.wait().0.signal(), Some(libc::SIGKILL));
        assert_eq!(stubs.marker_text(), "");
        guard.stop();
        return;
    }
    let (status, _, _) = run.wait();
    assert!(status.success(), "the continued command did not run");
    guard.stop_daemon(libc::SIGKILL);
    guard.spawn();
    let record = guard
        .audit_events(AuditEvent::Error)
        .into_iter()
        .find(|r| r.request_id.as_ref() == Some(&hold.id))
        .unwrap_or_else(|| panic!("no record of the run: {:?}", guard.audit()));
    assert_eq!(record.decision, Some(AuditDecision::Ran));
    let reason = record.reason.as_deref().unwrap();
    assert!(
        reason.contains("sent the stopped process SIGCONT while guardd was down: it ran"),
        "{reason}"
    );
    guard.stop();
}

const ESCAPE_ENV: &str = "AGENT_GUARD_TEST_ESCAPE";

/// A detected session (no launcher, so no seccomp filter) tries to use a
/// process outside it: with the BPF LSM, attaching to it, opening its memory
/// and reading it with process_vm_readv fail, while its own child is fair
/// game. Without the BPF LSM, status says detected sessions are not covered.
#[test]
fn a_detected_session_cannot_attach_to_an_outside_process_where_the_lsm_runs() {
    require_root();
    let stubs = Stubs::new();
    let Some((guard, escape)) = guard_for_detected_sessions() else {
        return;
    };
    assert!(escape.contains("ptrace_access_check"), "{escape}");
    let outside = Proc::spawn({
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg("30");
        sleep
    });
    let exe = std::env::current_exe().unwrap();
    let agent = stubs.script(
        "claude",
        &format!(
            "exec {} --exact escape_attempts_from_a_session --nocapture",
            exe.display()
        ),
    );
    let mut command = std::process::Command::new(agent);
    command
        .env("PATH", stubs.path_env())
        .env(ESCAPE_ENV, outside.pid().to_string());
    let (status, out, err) = Proc::spawn(command).wait();
    assert!(status.success(), "{out}\n{err}");
    let line = out
        .lines()
        // libtest may have printed "test NAME ... " on the same line first.
        .find_map(|l| l.split_once("ESCAPES ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no result from the session: {out}\n{err}"));
    let results: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        results,
        serde_json::json!({
            "trace_own_child": 0,
            "trace_outside": libc::EPERM,
            // procfs turns a refused ptrace access check into EACCES.
            "open_outside_memory": libc::EACCES,
            "vm_readv_outside": libc::EPERM,
        })
    );
    drop(outside);
    guard.stop();
}

/// Runs inside the session of the test above (a no-op otherwise).
#[test]
fn escape_attempts_from_a_session() {
    let Ok(outside) = std::env::var(ESCAPE_ENV) else {
        return;
    };
    let outside: i32 = outside.parse().unwrap();
    let errno = |ret: i64| {
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        } else {
            0
        }
    };
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let mut results = serde_json::Map::new();
    unsafe {
        let own = child.id() as i32;
        let attached = libc::ptrace(libc::PTRACE_ATTACH, own, 0, 0);
        results.insert("trace_own_child".into(), errno(attached).into());
        if attached == 0 {
            libc::waitpid(own, std::ptr::null_mut(), 0);
            libc::ptrace(libc::PTRACE_DETACH, own, 0, 0);
        }
        let attached = libc::ptrace(libc::PTRACE_ATTACH, outside, 0, 0);
        results.insert("trace_outside".into(), errno(attached).into());
        if attached == 0 {
            libc::ptrace(libc::PTRACE_DETACH, outside, 0, 0);
        }
        let mem = std::ffi::CString::new(format!("/proc/{outside}/mem")).unwrap();
        let fd = libc::open(mem.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        results.insert("open_outside_memory".into(), errno(fd as i64).into());
        if fd >= 0 {
            libc::close(fd);
        }
        let mut byte = [0u8; 1];
        let local = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // Any address: the access check comes before the copy.
        let remote = libc::iovec {
            iov_base: 0x10000 as *mut libc::c_void,
            iov_len: 1,
        };
        let read = libc::process_vm_readv(outside, &local, 1, &remote, 1, 0);
        results.insert("vm_readv_outside".into(), errno(read as i64).into());
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("ESCAPES {}", serde_json::Value::Object(results));
}

/// Where the BPF LSM does not run, fanotify keeps session processes from
/// opening the policy file at all (so from rewriting it in place), while
/// guardd and processes outside every session use it as before.
#[test]
fn a_session_cannot_open_the_policy_file_where_the_lsm_does_not_run() {
    let (stubs, guard) = setup(HOLD_TERRAFORM_DESTROY);
    let how = mechanism(&guard.status(), "policy_files");
    if lsm_active(&guard.status()) {
        assert!(how.starts_with("BPF LSM"), "{how}");
        return guard.stop();
    }
    let config = guard.dir.path().join("policy.toml");
    assert!(
        how.starts_with("fanotify") && how.contains(config.to_str().unwrap()),
        "{how}"
    );
    let before = std::fs::read(&config).unwrap();
    let c = config.display();
    let (status, _, stderr) = guard
        .session(
            &stubs,
            &[
                "sh",
                "-c",
                &format!("echo 'base = \"none\"' >> {c} || exit 3; cat {c}"),
            ],
        )
        .wait();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        before,
        "the config changed"
    );
    wait_until("the refusal in the audit log", || {
        guard.audit_events(AuditEvent::Deny).iter().any(|r| {
            r.rule.as_deref() == Some("agent-guard-self")
                && r.operation == Some(format!("open {c}"))
        })
    });
    // Outside every session the file is the admin's: a change is loaded.
    let mut text = before.clone();
    text.extend_from_slice(b"# changed from outside\n");
    std::fs::write(&config, text).unwrap();
    wait_until("the reload of the admin's change", || {
        guard
            .audit_events(AuditEvent::PolicyReload)
            .iter()
            .any(|r| matches!(r.decision, Some(AuditDecision::Loaded(_))))
    });
    assert!(guard.status().policy.last_reload_error.is_none());
    guard.stop();
}

/// guardd with `claude` as an agent program and what status says of the
/// escape checks; None (after checking status says detected sessions are
/// not covered) where the BPF LSM does not run.
fn guard_for_detected_sessions() -> Option<(Daemon, String)> {
    let guard = Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[agents]\nprograms = [\"claude\"]\n"
    ));
    let escape = mechanism(&guard.status(), "session_escape");
    if !lsm_active(&guard.status()) {
        assert!(escape.contains("not here: detected sessions"), "{escape}");
        guard.stop();
        return None;
    }
    Some((guard, escape))
}

/// A unix stream server run by the test (outside every session) that counts
/// the connections that send it something (guardd's own probe, which finds
/// the server's pid, sends nothing).
struct CountingServer {
    path: std::path::PathBuf,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingServer {
    fn at(path: std::path::PathBuf) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let count = count.clone();
                std::thread::spawn(move || {
                    use std::io::Read as _;
                    let mut byte = [0u8; 1];
                    if stream
                        .and_then(|mut s| s.read(&mut byte))
                        .is_ok_and(|n| n > 0)
                    {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        Self { path, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Where the BPF LSM runs, a detected session's connect to a tmux socket
/// served from outside is held (`escape_unix_stream_connect`, whatever the
/// client is: guardctl here), while another outside socket is reached at
/// once; a launched session's connect is held once, by its seccomp filter
/// only. Without the LSM, status says detected sessions are not covered.
#[test]
fn a_detected_session_connecting_to_an_outside_tmux_server_is_held_where_the_lsm_runs() {
    require_root();
    let stubs = Stubs::new();
    let Some((guard, escape)) = guard_for_detected_sessions() else {
        return;
    };
    assert!(escape.contains("unix_stream_connect"), "{escape}");
    std::fs::create_dir(stubs.dir.path().join("tmux-0")).unwrap();
    let tmux = CountingServer::at(stubs.dir.path().join("tmux-0/default"));
    let plain = CountingServer::at(stubs.dir.path().join("plain.sock"));
    let ctl = guardctl_bin();
    let agent = stubs.script(
        "claude",
        &format!(
            "{ctl} --socket {plain} status; {ctl} --socket {tmux} status\necho done",
            ctl = ctl.display(),
            plain = plain.path.display(),
            tmux = tmux.path.display()
        ),
    );
    let detected = || {
        let mut command = std::process::Command::new(&agent);
        command.env("PATH", stubs.path_env());
        Proc::spawn(command)
    };

    let run = detected();
    let hold = guard.wait_hold("status");
    assert_eq!(
        hold.operation,
        Some(format!(
            "connect {} (tmux server pid {}, outside the session)",
            tmux.path.display(),
            std::process::id()
        ))
    );
    assert_eq!(hold.rule, "session-escape");
    wait_until("the plain socket, reached at once", || {
        plain.accepted() == 1
    });
    assert_eq!(tmux.accepted(), 0);
    guard.decide("deny", &hold);
    let (_, out, err) = run.wait();
    assert_eq!(out, "done\n", "{err}");
    assert_eq!(tmux.accepted(), 0, "a denied connect reached the server");

    let run = detected();
    let hold = guard.wait_hold("status");
    guard.decide("approve", &hold);
    run.wait();
    wait_until("the approved connect", || tmux.accepted() == 1);

    // A launched session: its filter holds the connect; the LSM lets it be.
    let tmux_arg = tmux.path.to_str().unwrap();
    let ctl_arg = ctl.to_str().unwrap();
    let run = guard.session(&stubs, &[ctl_arg, "--socket", tmux_arg, "status"]);
    let hold = guard.wait_hold("status");
    guard.decide("approve", &hold);
    wait_until("the launched session's connect", || tmux.accepted() == 2);
    run.wait();
    assert!(guard.pending().is_empty(), "{:?}", guard.pending());
    assert_eq!(guard.audit_events(AuditEvent::Hold).len(), 3);
    guard.stop();
}

/// `bpf(cmd, attr)` with a zeroed attr whose first words are `words`.
fn bpf(cmd: i64, words: &[u64]) -> Result<i64, i32> {
    let mut attr = [0u64; 16];
    attr[..words.len()].copy_from_slice(words);
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(ret)
    }
}

/// Root outside every session (more than an agent has) takes each of
/// guardd's pinned links and asks the kernel to detach it: the kernel has no
/// detach for tracepoint and LSM links (EOPNOTSUPP), so a program cannot be
/// taken off while guardd holds its link, and a watched command is still held.
#[test]
fn the_kernel_refuses_to_detach_guardd_links() {
    require_root();
    const BPF_OBJ_GET: i64 = 7;
    const BPF_LINK_DETACH: i64 = 34;
    let stubs = Stubs::new();
    let guard = Daemon::start(HOLD_TERRAFORM_DESTROY);
    let lsm = lsm_active(&guard.status());
    let mut tried = Vec::new();
    for entry in std::fs::read_dir(guard.pin_dir.join("links")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let fd = bpf(BPF_OBJ_GET, &[c_path.as_ptr() as u64]).unwrap() as i32;
        assert_eq!(
            bpf(BPF_LINK_DETACH, &[fd as u64]),
            Err(libc::EOPNOTSUPP),
            "{name} was detached"
        );
        unsafe { libc::close(fd) };
        tried.push(name);
    }
    assert!(tried.iter().any(|n| n == "exec_gate"), "{tried:?}");
    assert_eq!(
        lsm,
        tried.iter().any(|n| n == "self_protect_task_kill"),
        "{tried:?}"
    );

    let run = guard.session(&stubs, &["terraform", "destroy", "after-detach"]);
    let hold = guard.wait_hold("after-detach");
    wait_stopped(u64::from(hold.pid));
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "", "it ran");
    guard.stop();
}
