//! Peers on the same exec loop: a bpftrace one-liner on the tracepoint the
//! exec gate uses (the cost floor of any tracepoint-based guard), and the
//! kernel audit with an execve rule and auditd receiving the records.
//! Installed from the distribution's packages when missing; skipped (and
//! said so) where they cannot be. fapolicyd is not run: it decides every
//! exec of the machine in user space, which a shared machine cannot risk.
use std::{
    io::BufRead as _,
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::exec::{Bench, Pair, ROUNDS};
use crate::cmd;

const BPFTRACE_PROGRAM: &str = "tracepoint:sched:sched_process_exec { @execs[comm] = count(); }";

/// The outside-session loop without and with the bpftrace one-liner, or why not.
pub(super) fn bpftrace(bench: &Bench) -> Result<Pair, String> {
    ensure_installed("bpftrace", "bpftrace").map_err(|err| err.to_string())?;
    let mut pair = Pair::default();
    for round in 0..ROUNDS {
        eprintln!("xtask: bench bpftrace {}/{ROUNDS}", round + 1);
        let measure = || -> anyhow::Result<(f64, f64)> {
            let without = bench.per_exec_us(bench.tiny_loop(None, false))?;
            let mut child = Command::new("bpftrace")
                .args(["-e", BPFTRACE_PROGRAM])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace")?;
            let mut line = String::new();
            let stdout = child.stdout.take().context("bpftrace stdout")?;
            let attached = std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .is_ok_and(|n| n > 0 && line.starts_with("Attaching"));
            let with = if attached {
                sleep(Duration::from_millis(300));
                bench.per_exec_us(bench.tiny_loop(None, false))
            } else {
                Err(anyhow::anyhow!("bpftrace did not attach: {line:?}"))
            };
            // Only the child this started.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
            Ok((without, with?))
        };
        let (without, with) = measure().map_err(|err| err.to_string())?;
        pair.without.push(without);
        pair.with.push(with);
    }
    Ok(pair)
}

/// The outside-session loop without and with an audit rule on execve (only
/// for the loop's program, so other processes' records are not touched,
/// though every execve on the machine evaluates it) and auditd collecting.
pub(super) fn auditd(bench: &Bench) -> Result<Pair, String> {
    ensure_installed("auditctl", "auditd").map_err(|err| err.to_string())?;
    let daemon = start_auditd().map_err(|err| err.to_string())?;
    let tiny = bench.dir.join("bin/tiny");
    let mut pair = Pair::default();
    let result = (|| -> Result<(), String> {
        for round in 0..ROUNDS {
            eprintln!("xtask: bench auditd {}/{ROUNDS}", round + 1);
            pair.without.push(
                bench
                    .per_exec_us(bench.tiny_loop(None, false))
                    .map_err(|e| e.to_string())?,
            );
            audit_rule("-a", &tiny)?;
            let with = bench.per_exec_us(bench.tiny_loop(None, false));
            audit_rule("-d", &tiny)?;
            pair.with.push(with.map_err(|e| e.to_string())?);
        }
        Ok(())
    })();
    if let Some(mut child) = daemon {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    result.map(|()| pair)
}

fn audit_rule(op: &str, exe: &std::path::Path) -> Result<(), String> {
    let output = Command::new("auditctl")
        .args([op, "always,exit", "-F", "arch=b64", "-S", "execve"])
        .arg("-F")
        .arg(format!("exe={}", exe.display()))
        .args(["-k", "agent-guard-bench"])
        .output()
        .map_err(|err| format!("auditctl: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "auditctl {op}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// auditd in the foreground, unless one already receives the records.
fn start_auditd() -> anyhow::Result<Option<std::process::Child>> {
    let status = cmd::output(Command::new("auditctl").arg("-s")).unwrap_or_default();
    let running = status
        .lines()
        .any(|l| l.starts_with("pid ") && l.trim() != "pid 0");
    if running {
        return Ok(None);
    }
    let child = Command::new("auditd")
        .arg("-n")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting auditd")?;
    sleep(Duration::from_secs(1));
    Ok(Some(child))
}

/// apt-get installs `package` when `program` is not on PATH.
fn ensure_installed(program: &str, package: &str) -> anyhow::Result<()> {
    let present = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return Ok(());
    }
    let install = cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if install.is_err() || !present() {
        bail!("{program} is not installed and apt-get could not install {package}");
    }
    Ok(())
}
