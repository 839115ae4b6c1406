//! Exec load on the exec gate, every exec a stop, an event and a decision
//! (a watched program the policy allows), from `xtask/bench/spawner.c`:
//! - sustained: two sessions fork+exec+wait in a row as fast as they can;
//!   execs per second against the same two loops without the guard, and
//!   whether guardd saw every stop by its event (none lost, none raised
//!   from the kernel map);
//! - bursts: guardd frozen (SIGSTOP to the pid this started) while one
//!   session forks N execs at once, then thawed: the events the ring buffer
//!   refused, the stops raised from the map instead, and whether every
//!   process ran (none stranded) and how long that took.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use super::{
    exec::{Bench, Guardd},
    results::{Burst, ExecLoad, Sustained},
};
use anyhow::{bail, Context as _};

pub const BURSTS: [u32; 3] = [1_000, 3_000, 5_000];
/// A burst not done by then has stranded processes.
const BURST_DEADLINE: Duration = Duration::from_secs(120);

pub(super) fn run(bench: &Bench) -> anyhow::Result<ExecLoad> {
    let per_loop = bench.execs / 4;
    let started = Instant::now();
    wait_all(&mut [
        spawner(bench, None, "serial", per_loop)?,
        spawner(bench, None, "serial", per_loop)?,
    ])?;
    let without = f64::from(2 * per_loop) / started.elapsed().as_secs_f64();

    let guard = Guardd::start(bench)?;
    let result = with_guard(bench, &guard, per_loop, without);
    guard.stop(bench)?;
    result
}

fn with_guard(
    bench: &Bench,
    guard: &Guardd,
    per_loop: u32,
    without: f64,
) -> anyhow::Result<ExecLoad> {
    let before = Counters::of(guard)?;
    let started = Instant::now();
    wait_all(&mut [
        spawner(bench, Some(guard), "serial", per_loop)?,
        spawner(bench, Some(guard), "serial", per_loop)?,
    ])?;
    let with = f64::from(2 * per_loop) / started.elapsed().as_secs_f64();
    let sustained = Counters::of(guard)?.since(&before);
    let sustained = Sustained {
        execs: 2 * per_loop,
        execs_per_second_no_guard: without,
        execs_per_second: with,
        stops: sustained.stops,
        events_lost: sustained.lost,
        raised_from_map: sustained.from_map,
    };

    let mut bursts = Vec::new();
    for size in BURSTS {
        eprintln!("xtask: bench burst of {size} with guardd frozen");
        bursts.push(burst(bench, guard, size)?);
    }
    Ok(ExecLoad { sustained, bursts })
}

fn burst(bench: &Bench, guard: &Guardd, size: u32) -> anyhow::Result<Burst> {
    let before = Counters::of(guard)?;
    let mut session = spawner(bench, Some(guard), "burst", size)?;
    let mut lines = BufReader::new(session.stdout.take().context("spawner stdout")?).lines();
    let mut go = session.stdin.take().context("spawner stdin")?;
    // The session is registered (guardctl run needs guardd) before the freeze.
    expect(&mut lines, "ready")?;
    let pid = guard.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let frozen = Instant::now();
    let spawned = writeln!(go, "go")
        .map_err(anyhow::Error::from)
        .and_then(|()| expect(&mut lines, "spawned"));
    let spawn_ms = frozen.elapsed().as_secs_f64() * 1e3;
    unsafe { libc::kill(pid, libc::SIGCONT) };
    spawned?;
    let thawed = Instant::now();
    let completed = loop {
        if let Some(status) = session.try_wait()? {
            break status.success();
        }
        if thawed.elapsed() > BURST_DEADLINE {
            // Only the session this started; guardd --teardown frees what it left.
            let _ = session.kill();
            let _ = session.wait();
            break false;
        }
        sleep(Duration::from_millis(10));
    };
    let drain_ms = thawed.elapsed().as_secs_f64() * 1e3;
    let counts = Counters::of(guard)?.since(&before);
    Ok(Burst {
        size,
        spawn_ms_while_frozen: spawn_ms,
        completed,
        drain_ms_after_thaw: drain_ms,
        stops: counts.stops,
        events_lost: counts.lost,
        raised_from_map: counts.from_map,
    })
}

/// `spawner MODE tfbench COUNT`, in a `guardctl run` session when guarded.
fn spawner(bench: &Bench, guard: Option<&Guardd>, mode: &str, count: u32) -> anyhow::Result<Child> {
    let mut command = match guard {
        Some(guard) => {
            let mut c = Command::new(bench.release.join("guardctl"));
            c.arg("--socket")
                .arg(&guard.socket)
                .args(["run", "--"])
                .arg(bench.bin("spawner"));
            c
        }
        None => Command::new(bench.bin("spawner")),
    };
    command
        .arg(mode)
        .arg(bench.bin("tfbench"))
        .arg(count.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the spawner")
}

fn wait_all(children: &mut [Child]) -> anyhow::Result<()> {
    for child in children {
        if !child.wait()?.success() {
            bail!("an exec loop failed");
        }
    }
    Ok(())
}

fn expect(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    word: &str,
) -> anyhow::Result<()> {
    match lines.next() {
        Some(Ok(line)) if line == word => Ok(()),
        other => bail!("spawner said {other:?}, not {word:?}"),
    }
}

/// guardd's exec-gate counters.
struct Counters {
    stops: u64,
    lost: u64,
    from_map: u64,
}

impl Counters {
    fn of(guard: &Guardd) -> anyhow::Result<Self> {
        let stats = guard.status()?.stats;
        Ok(Self {
            stops: stats.stops,
            lost: stats.events_lost,
            from_map: stats.recovered_from_map,
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            stops: self.stops - before.stops,
            lost: self.lost - before.lost,
            from_map: self.from_map - before.from_map,
        }
    }
}
