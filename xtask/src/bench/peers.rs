//! Peers on the same exec loop: a bpftrace one-liner on the tracepoint the
//! exec gate uses, the cost floor of any tracepoint-based guard, and the
//! floor of a stop/continue round trip (bpftrace stops, a C reader
//! continues). Installed
//! from the distribution's packages when missing; skipped (and said so)
//! where it cannot be.
use std::{
    io::BufRead as _,
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::exec::{Bench, Pair, ROUNDS};
use crate::cmd;

const BPFTRACE_PROGRAM: &str = "tracepoint:sched:sched_process_exec { @execs[comm] = count(); }";
/// Stops the benchmark's watched program at exec and prints its pid.
const FLOOR_PROGRAM: &str =
    "tracepoint:sched:sched_process_exec /comm == \"tfbench\"/ { signal(\"SIGSTOP\"); printf(\"%d\\n\", pid); }";

/// The outside-session loop without and with the bpftrace one-liner, or why not.
pub(super) fn bpftrace(bench: &Bench) -> Result<Pair, String> {
    rounds("bpftrace", || {
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
    })
}

/// The watched loop (the exec stops) without a guard and with the least a
/// tracepoint guard can do: bpftrace stops each `tfbench` exec and a C
/// reader continues it, with no policy work. Or why not.
pub(super) fn stop_continue_floor(bench: &Bench) -> Result<Pair, String> {
    rounds("stop/continue floor", || {
        let without = bench.per_exec_us(bench.tiny_loop(None, true))?;
        let mut stopper = Command::new("bpftrace")
            .args(["--unsafe", "-B", "none", "-e", FLOOR_PROGRAM])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let stopped = stopper.stdout.take().context("bpftrace stdout")?;
        let with = Command::new(bench.bin("cont"))
            .stdin(stopped)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the continuer")
            .and_then(|mut continuer| {
                let mut line = String::new();
                let ready = continuer.stdout.take().context("continuer stdout")?;
                std::io::BufReader::new(ready).read_line(&mut line)?;
                let with = if line == "attached\n" {
                    bench.per_exec_us(bench.tiny_loop(None, true))
                } else {
                    Err(anyhow::anyhow!("bpftrace did not attach"))
                };
                // Only the children this started; the reader ends with bpftrace's output.
                unsafe { libc::kill(stopper.id() as i32, libc::SIGINT) };
                let _ = continuer.wait();
                with
            });
        unsafe { libc::kill(stopper.id() as i32, libc::SIGINT) };
        let _ = stopper.wait();
        Ok((without, with?))
    })
}

/// ROUNDS of `measure` (without, with) once bpftrace is installed, or why not.
fn rounds(what: &str, measure: impl Fn() -> anyhow::Result<(f64, f64)>) -> Result<Pair, String> {
    ensure_installed("bpftrace", "bpftrace").map_err(|err| err.to_string())?;
    alternate(what, measure)
}

/// ROUNDS of `measure` (without, with), or the first error.
pub(super) fn alternate(
    what: &str,
    measure: impl Fn() -> anyhow::Result<(f64, f64)>,
) -> Result<Pair, String> {
    let mut pair = Pair::default();
    for round in 0..ROUNDS {
        eprintln!("xtask: bench {what} {}/{ROUNDS}", round + 1);
        let (without, with) = measure().map_err(|err| err.to_string())?;
        pair.without.push(without);
        pair.with.push(with);
    }
    Ok(pair)
}

/// Like `ensure_installed`, for a package whose installation enables and
/// starts a machine-wide service (auditd; fapolicyd, whose Debian default rule
/// denies every exec): installed only where systemd does not run, as in CI
/// containers; elsewhere the user installs it, or the peer is skipped.
pub(super) fn ensure_installed_without_service(program: &str, package: &str) -> anyhow::Result<()> {
    if Path::new("/run/systemd/system").exists() && !on_path(program) {
        bail!("{package} is not installed; apt would enable and start it as a machine-wide service here, so the benchmark does not install it");
    }
    ensure_installed(program, package)
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// apt-get installs `package` when its `program` is not on PATH.
pub(super) fn ensure_installed(program: &str, package: &str) -> anyhow::Result<()> {
    let present = || on_path(program);
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
