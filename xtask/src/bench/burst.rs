//! Sustained exec rate and bursts, in a session with a watched program the
//! policy allows (every exec is a stop, an event and a decision):
//! - sustained: two loops in parallel, execs per second, and whether guardd
//!   saw every stop through its event (none raised from the kernel map);
//! - bursts: guardd frozen (SIGSTOP to the pid this started) while a shell
//!   starts N execs at once, then thawed: how many events the ring buffer
//!   held and how many stops were raised from the map instead, and that
//!   every process ran (none stranded).
use std::{
    path::Path,
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use super::exec::{Bench, Guardd};

const BURSTS: [u32; 3] = [1_000, 3_000, 5_000];
/// A burst that has not finished by then has stranded processes.
const BURST_DEADLINE: Duration = Duration::from_secs(180);

pub(super) fn run(bench: &Bench) -> anyhow::Result<Value> {
    let guard = Guardd::start(bench)?;
    let result = measure(bench, &guard);
    guard.stop(bench)?;
    result
}

fn measure(bench: &Bench, guard: &Guardd) -> anyhow::Result<Value> {
    let tfbench = bench.dir.join("bin/tfbench");
    let per_loop = bench.execs / 4;
    let before = stats(guard)?;
    let started = Instant::now();
    let script = format!(
        "l() {{ i=0; while [ $i -lt {per_loop} ]; do {} plan; i=$((i+1)); done; }}; l & l & wait",
        tfbench.display()
    );
    run_session(bench, guard, &script)?;
    let seconds = started.elapsed().as_secs_f64();
    let after = stats(guard)?;
    let sustained = json!({
        "execs": 2 * per_loop,
        "execs_per_second": f64::from(2 * per_loop) / seconds,
        "stops_seen": after.0 - before.0,
        "raised_from_map": after.1 - before.1,
    });

    let mut bursts = Vec::new();
    for size in BURSTS {
        eprintln!("xtask: bench burst of {size}");
        let spawned = bench.dir.join("burst-spawned");
        let _ = std::fs::remove_file(&spawned);
        let script = format!(
            "sleep 0.3; i=0; while [ $i -lt {size} ]; do {} plan & i=$((i+1)); done; touch {}; wait",
            tfbench.display(),
            spawned.display()
        );
        let before = stats(guard)?;
        let mut session = session_command(bench, guard, &script)
            .spawn()
            .context("starting the burst")?;
        sleep(Duration::from_millis(100));
        let pid = guard.child.id() as i32;
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let frozen = wait_for(&spawned, BURST_DEADLINE);
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let deadline = Instant::now() + BURST_DEADLINE;
        let status = loop {
            if let Some(status) = session.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = session.kill();
                let _ = session.wait();
                break None;
            }
            sleep(Duration::from_millis(50));
        };
        let after = stats(guard)?;
        bursts.push(json!({
            "size": size,
            "all_spawned_while_frozen": frozen,
            "completed": status.is_some_and(|s| s.success()),
            "stops_seen": after.0 - before.0,
            "raised_from_map": after.1 - before.1,
        }));
    }
    Ok(json!({ "sustained": sustained, "bursts": bursts }))
}

/// (stops, stops raised from the kernel map) so far.
fn stats(guard: &Guardd) -> anyhow::Result<(u64, u64)> {
    let status = guard.status()?;
    let stats = &status["stats"];
    Ok((
        stats["stops"].as_u64().unwrap_or(0),
        stats["recovered_from_map"].as_u64().unwrap_or(0),
    ))
}

fn session_command(bench: &Bench, guard: &Guardd, script: &str) -> Command {
    let mut command = Command::new(bench.release.join("guardctl"));
    command
        .arg("--socket")
        .arg(&guard.socket)
        .args(["run", "--", "sh", "-c", script]);
    command
}

fn run_session(bench: &Bench, guard: &Guardd, script: &str) -> anyhow::Result<()> {
    let output = session_command(bench, guard, script).output()?;
    if !output.status.success() {
        bail!(
            "session failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn wait_for(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
    true
}
