//! Crash and restart: pinned programs keep enforcing while guardd is down, and
//! a restarted guardd re-adopts the held processes and their requests.
mod common;

use std::{os::unix::process::ExitStatusExt as _, thread::sleep, time::Duration};

use common::*;

const POLICY: &str = HOLD_TERRAFORM_DESTROY;

#[test]
fn a_crash_releases_nothing_and_the_restart_readopts_every_hold() {
    let (stubs, mut guard) = setup(POLICY);
    let runs: Vec<Proc> = (0..5)
        .map(|i| guard.session(&stubs, &["terraform", "destroy", &format!("r{i}")]))
        .collect();
    let holds: Vec<_> = (0..5).map(|i| guard.wait_hold(&format!("r{i}"))).collect();
    for hold in &holds {
        wait_stopped(u64::from(hold.pid));
    }

    guard.stop_daemon(libc::SIGKILL);
    sleep(Duration::from_millis(300));
    for hold in &holds {
        assert!(
            is_stopped(u64::from(hold.pid)),
            "released by the crash: {hold:?}"
        );
    }
    assert_eq!(stubs.marker_text(), "");

    guard.restart();
    let pending = guard.pending();
    assert_eq!(pending.len(), 5, "{pending:?}");
    for hold in &holds {
        let again = pending
            .iter()
            .find(|p| p.id == hold.id)
            .expect("same id after restart");
        assert_eq!(again.pid, hold.pid);
        let kept = if freezer_here() {
            "frozen"
        } else {
            "ptrace-stop"
        };
        assert!(again.protection.starts_with(kept), "{again:?}");
    }
    assert_eq!(guard.audit_events(AuditEvent::Readopt).len(), 5);
    // Their launchers' seccomp listeners died with the old guardd: said.
    let lost = guard
        .audit_events(AuditEvent::Error)
        .into_iter()
        .filter(|r| {
            r.reason
                .as_deref()
                .unwrap_or("")
                .contains("lost its seccomp listener")
        })
        .count();
    assert_eq!(lost, 5, "{:?}", guard.audit());

    // Exactly the approved ones run.
    for hold in &holds[..2] {
        guard.decide("approve", hold);
    }
    for hold in &holds[2..] {
        guard.decide("deny", hold);
    }
    let statuses: Vec<_> = runs.into_iter().map(|run| run.wait().0).collect();
    assert!(statuses[..2].iter().all(|s| s.success()), "{statuses:?}");
    assert!(
        statuses[2..]
            .iter()
            .all(|s| s.signal() == Some(libc::SIGKILL)),
        "{statuses:?}"
    );
    let mut ran: Vec<&str> = stubs.marker_text().leak().lines().collect();
    ran.sort_unstable();
    assert_eq!(ran, ["destroy r0", "destroy r1"]);
    guard.stop();
}

#[test]
fn a_command_run_while_guardd_is_down_is_held_and_raised_on_restart() {
    let (stubs, mut guard) = setup(POLICY);
    // Handshakes, not sleeps: a slow machine (the VM) must not turn this into
    // a command run before the crash or after the restart.
    let run = guard.session(
        &stubs,
        &[
            "sh",
            "-c",
            "touch started; while [ ! -e go ]; do sleep 0.05; done; terraform destroy while-down",
        ],
    );
    wait_for_file(&stubs.dir.path().join("started"));
    guard.stop_daemon(libc::SIGKILL);
    std::fs::write(stubs.dir.path().join("go"), "").unwrap();
    let held = wait_for_stopped_command("while-down");
    assert_eq!(stubs.marker_text(), "", "ran while guardd was down");

    guard.restart();
    let hold = guard.wait_hold("while-down");
    assert_eq!(hold.rule, "tf-destroy");
    assert_eq!(Some(u64::from(hold.pid)), Some(held));
    guard.decide("approve", &hold);
    assert!(run.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy while-down\n");
    guard.stop();
}

#[test]
fn two_guards_do_not_interfere() {
    require_root();
    let stubs = Stubs::new();
    let first = Daemon::start(POLICY);
    let second = Daemon::start(POLICY);
    let run = first.session(&stubs, &["terraform", "destroy", "in-first"]);
    let hold = first.wait_hold("in-first");
    sleep(Duration::from_millis(200));
    assert!(
        second.pending().is_empty(),
        "the second guard saw the first one's session"
    );
    let out = second.ctl(&["approve", hold.id.as_str()]);
    assert!(!out.status.success());
    assert!(is_stopped(u64::from(hold.pid)));
    second.stop();
    first.decide("approve", &hold);
    assert!(run.wait().0.success());
    first.stop();
}

#[test]
fn a_second_guardd_on_the_same_pin_dir_is_refused_and_the_first_goes_on() {
    let (stubs, guard) = setup(POLICY);
    // The same flags: the same pin directory (and socket, never reached).
    let mut second = guard
        .daemon_command()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // Only the process this test started.
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second guardd ran on the same pin directory");
        }
        sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("another guardd is running with"), "{err}");
    let teardown = guard.teardown();
    let teardown_err = String::from_utf8_lossy(&teardown.stderr);
    assert!(
        !teardown.status.success(),
        "teardown under a running guardd"
    );
    assert!(
        teardown_err.contains("guardd is running with"),
        "{teardown_err}"
    );
    // The first one still holds and answers.
    let run = guard.session(&stubs, &["terraform", "destroy", "still-guarded"]);
    let hold = guard.wait_hold("still-guarded");
    let id = hold.id.as_str();
    assert!(guard.ctl(&["deny", id]).status.success());
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

#[test]
fn an_exec_flood_past_the_ring_buffer_strands_no_process() {
    require_root();
    // One page of ring buffer holds fewer than a hundred events.
    let (stubs, guard, run) = flood_with_guardd_frozen(&["--ring-buffer-bytes", "4096"]);
    let (status, _, _) = run.wait();
    assert!(status.success());
    assert_eq!(
        stubs.marker_text().lines().count(),
        300,
        "every allowed command ran"
    );
    let stats = guard.status().stats;
    assert_eq!(stats.stops, 300, "{stats:?}");
    assert!(
        stats.recovered_from_map > 0,
        "the flood never overflowed: {stats:?}"
    );
    assert!(
        stats.events_lost > 0,
        "the kernel did not count the events it could not send: {stats:?}"
    );
    eprintln!("flood of 300 parallel watched execs: {stats:?}");
    guard.stop();
}

#[test]
fn a_stop_with_no_room_to_record_it_is_killed_not_stranded() {
    require_root();
    // 16 stops fit the map and a page of ring buffer fewer than a hundred events:
    // most of a frozen guardd's flood of 300 has no record anywhere.
    let (stubs, guard, run) =
        flood_with_guardd_frozen(&["--ring-buffer-bytes", "4096", "--held-entries", "16"]);
    // A stop nothing recorded would keep the shell waiting: wait() fails then.
    run.wait();
    let stats = guard.status().stats;
    let killed = stats.stops_killed;
    let ran = stubs.marker_text().lines().count() as u64;
    assert!(killed > 0, "nothing overflowed: {stats:?}");
    assert_eq!(ran, stats.stops, "{stats:?}");
    assert_eq!(
        ran + killed,
        300,
        "every exec ran judged or was killed: {stats:?}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !guard.audit_events(AuditEvent::Error).iter().any(|r| {
        r.reason
            .as_deref()
            .is_some_and(|why| why.contains("killed by the kernel"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the kills were not audited"
        );
        sleep(Duration::from_millis(50));
    }
    eprintln!("flood of 300 with room for 16 stops: {stats:?}");
    guard.stop();
}

/// A session that starts 300 watched (allowed) execs at once while guardd,
/// started with `flags`, is frozen (by the pid this test started): nothing
/// drains the ring buffer or the map while the flood is stopped in the
/// kernel, so an overflow is certain, not a matter of speed. The shell forks
/// only once guardd is frozen, and guardd thaws only after every fork, so a
/// slow machine cannot move the flood out of the frozen window.
fn flood_with_guardd_frozen(flags: &[&str]) -> (Stubs, Daemon, Proc) {
    let stubs = Stubs::new();
    let guard = Daemon::start_with(POLICY, flags);
    let run = guard.session(
        &stubs,
        &[
            "sh",
            "-c",
            "touch ready; while [ ! -e go ]; do sleep 0.01; done; \
             for i in $(seq 300); do terraform plan $i & done; touch forked; wait",
        ],
    );
    let dir = stubs.dir.path();
    wait_for_file(&dir.join("ready"));
    let frozen = guard.freeze();
    std::fs::write(dir.join("go"), "").unwrap();
    wait_for_file(&dir.join("forked"));
    // Time for the last children to reach their exec stop.
    sleep(Duration::from_secs(1));
    drop(frozen);
    (stubs, guard, run)
}

#[test]
fn a_hold_another_process_continues_before_and_after_a_crash_of_guardd_runs_nothing() {
    require_root();
    let stubs = Stubs::new();
    stubs.script("terraform", &long_running_stub(&stubs));
    let mut guard = Daemon::start(POLICY);
    let run = guard.session(&stubs, &["terraform", "destroy", "continued"]);
    let hold = guard.wait_hold("continued");
    let pid = u64::from(hold.pid);
    wait_stopped(pid);
    // The agent's SIGCONT while guardd runs, then guardd dies, then another.
    let refused = !sigcont(pid);
    guard.stop_daemon(libc::SIGKILL);
    let refused = refused | !sigcont(pid);
    if refused {
        // The BPF LSM refuses it: still held, and re-adopted.
        assert!(is_stopped(pid));
        guard.restart();
        assert_eq!(guard.pending().len(), 1);
        guard.stop();
        return;
    }
    if !freezer_here() {
        // Nothing refuses the signal while guardd is down (ptrace-stop ended with
        // it): it runs, and the restart kills it and says so.
        stubs.wait_for_marker();
        guard.restart();
        let (status, _, _) = run.wait();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "left running");
        assert!(guard.pending().is_empty(), "{:?}", guard.pending());
        guard.assert_sigcont_audited(pid);
        guard.stop();
        return;
    }
    // Frozen: the SIGCONTs woke it into the freezer, where it stays.
    wait_woken(pid);
    sleep(Duration::from_millis(500));
    assert_eq!(
        stubs.marker_text(),
        "",
        "ran after SIGCONT and guardd's crash"
    );
    assert!(frozen_leaf(pid).is_some(), "{}", cgroup_of(pid));
    guard.restart();
    let pending = guard.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].id, hold.id, "re-adopted under the same id");
    assert!(pending[0].protection.starts_with("frozen"), "{pending:?}");
    guard.decide("deny", &pending[0]);
    let (status, _, _) = run.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(stubs.marker_text(), "", "a denied command never runs");
    guard.stop();
}

/// Spawns `sleep 30` with exactly `pid`, by setting the kernel's last pid
/// just before the fork (retried: other processes may fork in between).
fn spawn_with_pid(pid: u32) -> Option<std::process::Child> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let child = std::process::Command::new("sleep").arg("30").spawn().ok()?;
        if child.id() == pid {
            return Some(child);
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

#[test]
fn a_reused_pid_is_not_readopted_and_cannot_be_approved() {
    let (stubs, mut guard, run, hold) =
        setup_held(POLICY, &["terraform", "destroy", "reused"], "reused");
    let pid = hold.pid;
    wait_stopped(pid as u64);
    // While guardd is down, the held process dies and another takes its pid.
    guard.stop_daemon(libc::SIGKILL);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = run.wait();
    let Some(mut impostor) = spawn_with_pid(pid) else {
        panic!("could not get pid {pid} again");
    };
    guard.restart();
    assert!(
        guard.pending().is_empty(),
        "a process with a reused pid was re-adopted"
    );
    let out = guard.ctl(&["approve", hold.id.as_str()]);
    assert!(!out.status.success());
    assert!(guard
        .audit_events(AuditEvent::Exit)
        .iter()
        .any(|r| r.request_id.as_ref() == Some(&hold.id)));
    assert_eq!(state(pid as u64), 'S', "the impostor was touched");
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

/// The layout marker guardd keeps in its pin directory (`layout-N`).
fn layout_marker(guard: &Daemon) -> std::path::PathBuf {
    let markers: Vec<_> = std::fs::read_dir(&guard.pin_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("layout-"))
        })
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    markers[0].clone()
}

/// Holds `terraform destroy WORD`, kills guardd and marks its pins as of
/// another layout, as an upgrade's new guardd would find them. Returns also
/// the marker guardd wrote (its own layout).
fn held_on_pins_of_another_layout(
    args: &[&str],
    word: &str,
) -> (Stubs, Daemon, Proc, HoldView, std::path::PathBuf) {
    let (stubs, mut guard) = setup(POLICY);
    let run = guard.session(&stubs, args);
    let hold = guard.wait_hold(word);
    wait_stopped(u64::from(hold.pid));
    guard.stop_daemon(libc::SIGKILL);
    let ours = layout_marker(&guard);
    std::fs::rename(&ours, guard.pin_dir.join("layout-999")).unwrap();
    (stubs, guard, run, hold, ours)
}

/// The audit records that name the layout change.
fn layout_records(guard: &Daemon) -> Vec<AuditRecord> {
    guard
        .audit_events(AuditEvent::Error)
        .into_iter()
        .filter(|r| r.reason.as_deref().unwrap_or("").contains("layout 999"))
        .collect()
}

#[test]
fn pins_of_another_layout_are_not_reused_and_their_holds_stay_held() {
    // A second command after it: the session must still be known to the kernel.
    let script = "terraform destroy relayout; terraform destroy after-relayout";
    let (stubs, mut guard, run, hold, ours) =
        held_on_pins_of_another_layout(&["sh", "-c", script], "relayout");
    guard.spawn();
    assert!(is_stopped(u64::from(hold.pid)), "released by the migration");
    // Re-adopted from the state file, with its id.
    let pending = guard.pending();
    let again = pending
        .iter()
        .find(|p| p.id == hold.id)
        .expect("still held");
    assert_eq!(again.pid, hold.pid);
    assert_eq!(layout_marker(&guard), ours);
    let records = layout_records(&guard);
    assert!(
        records
            .iter()
            .any(|r| r.pid == Some(hold.pid) && r.decision == Some(AuditDecision::Hold)),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r
            .reason
            .as_deref()
            .unwrap()
            .contains("1 stopped process(es) held again")),
        "{records:?}"
    );
    assert!(mechanism(&guard.status(), "pin_layout").starts_with("MIGRATED"));
    guard.decide("deny", &hold);
    // The session was put back into the fresh session map: its next command is held too.
    let next = guard.wait_hold("after-relayout");
    guard.decide("deny", &next);
    // Killed unrun: the shell reports it (137), or, where the shell exec'd its
    // last command (busybox in the VM), the session root itself was killed.
    let status = run.wait().0;
    assert!(
        status.code() == Some(128 + libc::SIGKILL) || status.signal() == Some(libc::SIGKILL),
        "{status:?}"
    );
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

#[test]
fn a_hold_only_the_old_held_map_names_is_raised_again_after_a_layout_change() {
    let (stubs, mut guard, run, hold, _) =
        held_on_pins_of_another_layout(&["terraform", "destroy", "relayout-map"], "relayout-map");
    // No state file either: only the old HELD's keys name the process.
    std::fs::remove_file(guard.dir.path().join("state/requests.json")).unwrap();
    guard.spawn();
    let raised = guard.wait_hold("relayout-map");
    assert_eq!(raised.pid, hold.pid);
    assert!(layout_records(&guard).iter().any(|r| {
        r.pid == Some(hold.pid) && r.reason.as_deref().unwrap().contains("by the old HELD")
    }));
    guard.decide("deny", &raised);
    assert_eq!(run.wait().0.signal(), Some(libc::SIGKILL));
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

#[test]
fn teardown_denies_the_holds_of_pins_of_another_layout() {
    let (stubs, guard, run, hold, _) =
        held_on_pins_of_another_layout(&["terraform", "destroy", "relayout-down"], "relayout-down");
    // Only the old HELD's keys name the process.
    std::fs::remove_file(guard.dir.path().join("state/requests.json")).unwrap();
    let teardown = guard.teardown();
    assert!(teardown.status.success(), "{teardown:?}");
    assert!(!guard.pin_dir.exists());
    assert_eq!(run.wait().0.signal(), Some(libc::SIGKILL));
    assert!(!is_stopped(u64::from(hold.pid)));
    assert_eq!(stubs.marker_text(), "");
    guard.stop();
}

/// The kernel's id of the link pinned at `path` (the fd opened for it is closed again).
fn pinned_link_id(path: &std::path::Path) -> u32 {
    let link = aya::programs::links::PinnedLink::from_pin(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    aya::programs::links::FdLink::from(link)
        .info()
        .unwrap()
        .id()
}

/// Whether the kernel still has link `id`, waiting a moment for it to go
/// (a detached link is freed after an RCU grace period).
fn link_stays(id: u32) -> bool {
    let loaded = || {
        aya::programs::loaded_links()
            .filter_map(Result::ok)
            .any(|link| link.id() == id)
    };
    (0..100).all(|_| {
        let here = loaded();
        if here {
            sleep(Duration::from_millis(20));
        }
        here
    })
}

#[test]
fn links_another_guardd_pinned_under_other_names_are_removed_on_restart() {
    let (stubs, mut guard) = setup(POLICY);
    // Where the BPF LSM runs, the self-protection program that refuses foreign
    // SIGCONTs under its old name; elsewhere a tracepoint's link under a name
    // no guardd has (the cleanup goes by name alone).
    let (current, stale) = if lsm_active(&guard.status()) {
        ("self_protect_task_kill", "protect_task_kill")
    } else {
        ("sessions_fork", "protect_old")
    };
    guard.stop_daemon(libc::SIGTERM);
    let links = guard.pin_dir.join("links");
    // As the older guardd an upgrade replaces left it: attached, pinned by its name.
    std::fs::rename(links.join(current), links.join(stale)).unwrap();
    let id = pinned_link_id(&links.join(stale));
    assert!(link_stays(id), "link {id} went with the rename");

    guard.spawn();
    assert!(
        !links.join(stale).exists(),
        "links/{stale} is still pinned: {}",
        guard.log()
    );
    assert!(
        !link_stays(id),
        "link {id} (links/{stale}) is still attached"
    );
    assert_ne!(pinned_link_id(&links.join(current)), id);
    let records: Vec<_> = guard
        .audit_events(AuditEvent::Error)
        .into_iter()
        .filter(|r| {
            r.reason
                .as_deref()
                .is_some_and(|why| why.contains(&format!("links/{stale}")))
        })
        .collect();
    assert_eq!(records.len(), 1, "{:?}", guard.audit());
    // Still guarded by the new links.
    let run = guard.session(&stubs, &["terraform", "destroy", "after-rename"]);
    let hold = guard.wait_hold("after-rename");
    guard.decide("deny", &hold);
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "");

    // --teardown removes a link of any name (Daemon::stop tears down and
    // checks that no program of these guardds is left).
    guard.stop_daemon(libc::SIGTERM);
    std::fs::rename(links.join(current), links.join("renamed_by_hand")).unwrap();
    let id = pinned_link_id(&links.join("renamed_by_hand"));
    guard.stop();
    assert!(
        !link_stays(id),
        "link {id} (links/renamed_by_hand) outlived --teardown"
    );
}
