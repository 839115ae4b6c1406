//! The systemd unit is valid, and guardd speaks sd_notify (READY, WATCHDOG).
mod common;

use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

#[test]
fn the_systemd_unit_verifies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(root.join("packaging/agent-guard.service")).unwrap();
    // systemd-analyze checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent-guard.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/guardd", guardd_bin().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (cargo xtask setup installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only our unit's own problems count, not those of units on this machine.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("agent-guard.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
}

#[test]
fn guardd_notifies_ready_and_pings_the_watchdog() {
    require_root();
    // bpffs refuses names that start with a dot: name the pin dir after a prefixed temp dir.
    let dir = tempfile::Builder::new()
        .prefix("agent-guard-notify-")
        .tempdir()
        .unwrap();
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "version = 1\nbase = 'none'\n",
    )
    .unwrap();
    let pin_dir = std::path::Path::new("/sys/fs/bpf").join(dir.path().file_name().unwrap());
    let flags = |command: &mut Command| {
        command
            .arg("--config")
            .arg(dir.path().join("policy.toml"))
            .arg("--socket")
            .arg(dir.path().join("guardd.sock"))
            .arg("--audit-log")
            .arg(dir.path().join("audit.jsonl"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--pin-dir")
            .arg(&pin_dir);
    };
    let mut command = Command::new(guardd_bin());
    flags(&mut command);
    let mut guardd = command
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        assert!(Instant::now() < deadline, "messages so far: {seen:?}");
        let len = match listener.recv(&mut buf) {
            Ok(len) => len,
            Err(err) => panic!("no message from guardd ({err}); so far: {seen:?}"),
        };
        seen.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    unsafe { libc::kill(guardd.id() as i32, libc::SIGTERM) };
    guardd.wait().unwrap();
    let mut teardown = Command::new(guardd_bin());
    flags(&mut teardown);
    assert!(teardown.arg("--teardown").status().unwrap().success());
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    assert!(
        seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{seen:?}"
    );
}
