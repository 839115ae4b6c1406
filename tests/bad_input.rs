//! Hostile and oversized input: huge and odd argv, odd paths, and a flood of
//! control-socket clients. Held and decided correctly, escaped, never a crash.
mod common;

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{ffi::OsStrExt as _, net::UnixStream, process::CommandExt as _},
    process::Command,
    sync::{Arc, Barrier},
};

use common::*;

const POLICY: &str = HOLD_TERRAFORM_DESTROY;

#[test]
fn huge_and_numerous_arguments_are_held_and_decided() {
    let (stubs, guard) = setup(POLICY);
    // 2 MiB of argv in 17 arguments (one argument may be at most 128 KiB), then 10,000 arguments.
    let big: Vec<String> = (0..17)
        .map(|i| format!("{i}{}", "x".repeat(124 * 1024)))
        .collect();
    let many: Vec<String> = (0..10_000).map(|i| format!("a{i}")).collect();
    for (tag, extra) in [("big-argv", &big), ("many-args", &many)] {
        let mut command = guard.ctl_command(&["run", "--", "terraform", "destroy", tag]);
        command
            .args(extra)
            .env("PATH", stubs.path_env())
            .current_dir(stubs.dir.path());
        // Room for 2 MiB of arguments: the kernel allows a quarter of the stack limit.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 64 << 20,
                    rlim_max: 64 << 20,
                };
                libc::setrlimit(libc::RLIMIT_STACK, &limit);
                Ok(())
            });
        }
        let run = Proc::spawn(command);
        let hold = guard.wait_hold(tag);
        assert_eq!(hold.argv.len(), 3 + extra.len());
        assert_eq!(hold.rule, "tf-destroy");
        wait_stopped(u64::from(hold.pid));
        guard.decide("deny", &hold);
        let (status, _, _) = run.wait();
        assert!(!status.success());
    }
    assert_eq!(stubs.marker_text(), "");
    let total: usize = big.iter().map(String::len).sum();
    assert!(total >= 2 << 20, "{total}");
    guard.stop();
}

#[test]
fn non_utf8_argv_and_hostile_paths_are_escaped() {
    let (stubs, guard) = setup(POLICY);
    let dir = stubs.dir.path().join("work\x1b[31mred\ndir");
    std::fs::create_dir(&dir).unwrap();
    let mut command = guard.ctl_command(&["run", "--", "terraform", "destroy"]);
    command
        .arg(OsStr::from_bytes(b"bad-\xff\xfe-bytes"))
        .env("PATH", stubs.path_env())
        .current_dir(&dir);
    let run = Proc::spawn(command);
    let hold = guard.wait_hold("bad-\\xff\\xfe-bytes");
    let cwd = hold.cwd.as_str();
    assert!(cwd.ends_with("work\\u{1b}[31mred\\ndir"), "{cwd}");
    let human = guard.ctl(&["pending"]);
    assert!(!human.stdout.contains(&0x1b), "raw escape on the terminal");
    let audit = std::fs::read(&guard.audit_log).unwrap();
    assert!(!audit.contains(&0x1b) && !audit.contains(&0xff));
    // Raw JSON on purpose: what is checked is the file's bytes, escaped and
    // still one JSON object a line, whatever type reads them.
    for line in audit.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        serde_json::from_slice::<serde_json::Value>(line).expect("one JSON object per line");
    }
    guard.decide("approve", &hold);
    assert!(run.wait().0.success());
    guard.stop();
}

#[test]
fn a_thousand_clients_do_not_stall_decisions_and_per_peer_limits_hold() {
    let (stubs, guard) = setup(POLICY);
    let socket = guard.socket.clone();
    let clients = 1000;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let stream = UnixStream::connect(&socket);
                barrier.wait();
                let mut stream = stream.ok()?;
                // A refused connection is already closed: its answer waits to be read.
                let _ = stream.write_all(b"{\"version\":1,\"type\":\"status\"}\n");
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).ok()?;
                let response: Response = serde_json::from_str(&line).ok()?;
                Some(match response {
                    Response::Status(_) => "status".to_string(),
                    Response::Error { .. } => "error".to_string(),
                    other => format!("{other:?}"),
                })
            })
        })
        .collect();
    // While every client is connected, the exec gate still decides.
    barrier.wait();
    let run = guard.session(
        &stubs,
        &[
            "sh",
            "-c",
            "terraform plan && terraform destroy during-flood",
        ],
    );
    let answers: Vec<Option<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let served = answers
        .iter()
        .filter(|a| a.as_deref() == Some("status"))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.as_deref() == Some("error"))
        .count();
    assert!(served >= 32, "served {served}");
    assert!(
        refused > 0,
        "no per-peer limit: {served} of {clients} connections served"
    );
    assert_eq!(
        served + refused,
        clients,
        "every client got an answer: {answers:?}"
    );
    let hold = guard.wait_hold("during-flood");
    guard.decide("approve", &hold);
    assert!(run.wait().0.success());
    assert_eq!(stubs.marker_text(), "plan\ndestroy during-flood\n");
    guard.stop();
}

#[test]
fn a_refused_peer_gets_an_error_not_a_hang() {
    require_root();
    let guard = Daemon::start(POLICY);
    // Hold the per-process limit of idle connections open, then one more.
    let idle: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&guard.socket).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let extra = UnixStream::connect(&guard.socket).unwrap();
    let mut line = String::new();
    BufReader::new(&extra).read_line(&mut line).unwrap();
    assert!(line.contains("too many connections"), "{line}");
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Another process is not affected by this one's connections.
    let out = Command::new(guardctl_bin())
        .arg("--socket")
        .arg(&guard.socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(out.status.success());
    guard.stop();
}
