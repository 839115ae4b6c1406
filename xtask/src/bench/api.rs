//! The API-client gate's cost: 1 KiB `SSL_write` calls to a local TLS sink
//! (xtask/bench/tls_writes.c, on the system's OpenSSL) without guardd, with
//! its probes attached (outside any session), and in a session: GET request
//! heads the kernel lets through, POST heads it stops for guardd to judge;
//! a held DELETE from the approval to its first bytes at the server; and
//! a process's first `SSL_new`, where a session process stops to be followed.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use guard_protocol::{Request, Response};

use super::{
    exec::{monotonic_ns, summary, Bench, Guardd, Pair, ROUNDS},
    results::ApiCost,
};
use crate::cmd;

/// Writes per loop; a stopped write costs a round trip to guardd, so
/// the stopped loop is shorter.
const WRITES: u32 = 200_000;
const STOPPED_WRITES: u32 = 2_000;
/// Processes timed at their first `SSL_new`, per round and side.
const STARTS: usize = 5;

pub(super) fn run(bench: &Bench) -> anyhow::Result<ApiCost> {
    let program = bench.dir.join("bin/tls_writes");
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&program)
            .arg(cmd::workspace_root().join("xtask/bench/tls_writes.c"))
            .args(["-lssl", "-lcrypto"]),
    )?;
    let sink = Sink::start(bench, &program)?;
    // One figure printed by tls_writes with `args`, in a session of `guard` or not.
    let tls_writes = |args: &[&str], guard: Option<&Guardd>| -> anyhow::Result<f64> {
        let mut command = match guard {
            Some(guard) => {
                let mut run = Command::new(bench.release.join("guardctl"));
                run.arg("--socket").arg(&guard.socket).args(["run", "--"]);
                run.arg(&program);
                run
            }
            None => Command::new(&program),
        };
        let out = command.args(args).stderr(Stdio::null()).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("tls_writes {args:?}: {out:?}"))
    };
    let writes = |mode: &str, count: u32, guard: Option<&Guardd>| {
        tls_writes(&["write", &sink.port, mode, &count.to_string()], guard)
    };
    let first_start = |guard: Option<&Guardd>| -> anyhow::Result<f64> {
        let mut total = 0.0;
        for _ in 0..STARTS {
            total += tls_writes(&["start"], guard)?;
        }
        Ok(total / STARTS as f64)
    };
    let (mut outside, mut get, mut post) = (Pair::default(), Pair::default(), Pair::default());
    let mut start = Pair::default();
    let mut breakpoint = Pair::default();
    let floor = BareBreakpoint::new(&program)?;
    let mut decision = guard_protocol::Latency::default();
    for round in 0..ROUNDS {
        eprintln!("xtask: bench API gate {}/{ROUNDS}", round + 1);
        let before = writes("raw", WRITES, None)?;
        let get_without = writes("get", WRITES, None)?;
        get.without.push(get_without);
        floor.enable(true)?;
        let with_breakpoint = writes("get", WRITES, None);
        floor.enable(false)?;
        breakpoint.without.push(get_without);
        breakpoint.with.push(with_breakpoint?);
        post.without.push(writes("post", STOPPED_WRITES, None)?);
        start.without.push(first_start(None)?);
        let guard = Guardd::start(bench)?;
        start.with.push(first_start(Some(&guard))?);
        outside.with.push(writes("raw", WRITES, None)?);
        get.with.push(writes("get", WRITES, Some(&guard))?);
        post.with
            .push(writes("post", STOPPED_WRITES, Some(&guard))?);
        decision = guard.status()?.stats.api_decision_latency;
        guard.stop(bench)?;
        let after = writes("raw", WRITES, None)?;
        outside.without.push((before + after) / 2.0);
    }
    let approve = approve_to_wire(bench, &program, &sink)?;
    Ok(ApiCost {
        outside_session_raw: outside.summary(),
        in_session_get: get.summary(),
        bare_breakpoint: breakpoint.summary(),
        in_session_post_added_us: post.added_summary(),
        guardd_stop_to_decision_us: decision,
        approve_to_wire_us: summary(&approve),
        first_connection_added_us: start.added_summary(),
    })
}

/// The section of BENCHMARKS.md; `row` as the table's other rows.
pub(super) fn report(
    api: &ApiCost,
    row: &dyn Fn(&str, &str, &super::results::Summary) -> String,
) -> String {
    let mut out = String::from(
        "\n## API-client gate\n\n1 KiB `SSL_write` calls (the system's OpenSSL 3) to a TLS sink on loopback; \
         microseconds per write, and ratios with / without guardd in the same round.\n\n\
         | figure | goal | median | min – max |\n|---|---|---|---|\n",
    );
    out += &row(
        "outside sessions, probes attached: ratio",
        "<= 1.02",
        &api.outside_session_raw.ratio,
    );
    out += &row(
        "outside sessions, no guard: us per write",
        "",
        &api.outside_session_raw.no_guard_us,
    );
    out += &row(
        "in a session, GET request heads (never stopped): ratio",
        "<= 1.05",
        &api.in_session_get.ratio,
    );
    out += &row(
        "a breakpoint alone on the same instruction, every write (floor of any uprobe): ratio",
        "",
        &api.bare_breakpoint.ratio,
    );
    out += &row(
        "in a session, POST heads (stopped, judged, let go): us added per write",
        "",
        &api.in_session_post_added_us,
    );
    out += &row(
        "held DELETE: approve -> first bytes at the server, us",
        "<= 5000",
        &api.approve_to_wire_us,
    );
    out += &row(
        "a process's first `SSL_new` in a session (stopped until guardd follows the process): us added",
        "",
        &api.first_connection_added_us,
    );
    out += "\nThe floor row is a tracefs uprobe with no program, whose filter drops every hit, \
            on the instruction guardd probes (OpenSSL's `ssl_write_internal`), trapping in every \
            process: what the breakpoint's trap costs before any program runs. A probe that must \
            see every write of a session process cannot cost less than it.\n";
    let d = &api.guardd_stop_to_decision_us;
    out += &format!(
        "\nguardd's API stop-to-decision latency (request read and judged) over the last round's POSTs: \
         p50 {} us, p99 {} us, max {} us ({} samples; goal p50 <= 200 us).\n",
        d.p50_us, d.p99_us, d.max_us, d.samples
    );
    out
}

/// Holds a DELETE 20 times; from the approve request to the sink's first
/// bytes of that connection (it writes CLOCK_MONOTONIC then).
fn approve_to_wire(bench: &Bench, program: &Path, sink: &Sink) -> anyhow::Result<Vec<f64>> {
    let guard = Guardd::start(bench)?;
    let mut samples = Vec::new();
    for _ in 0..20 {
        let _ = fs::remove_file(&sink.stamp);
        let mut client = Command::new(bench.release.join("guardctl"))
            .arg("--socket")
            .arg(&guard.socket)
            .args(["run", "--"])
            .arg(program)
            .args(["write", &sink.port, "delete", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let id = guard.wait_hold()?;
        let before = monotonic_ns();
        guard.request(Request::Approve { id })?;
        client.wait()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let arrived: u64 = loop {
            if let Some(ns) = fs::read_to_string(&sink.stamp)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break ns;
            }
            if Instant::now() > deadline {
                bail!("the approved DELETE never reached the sink");
            }
            sleep(Duration::from_millis(1));
        };
        samples.push(arrived.saturating_sub(before) as f64 / 1000.0);
    }
    guard.stop(bench)?;
    Ok(samples)
}

/// The TLS sink, killed on drop (by the pid started here).
struct Sink {
    child: Child,
    port: String,
    stamp: PathBuf,
}

impl Sink {
    fn start(bench: &Bench, program: &Path) -> anyhow::Result<Self> {
        let (cert, key) = self_signed(bench, "sink")?;
        let port_file = bench.dir.join("sink-port");
        let _ = fs::remove_file(&port_file);
        let stamp = bench.dir.join("sink-stamp");
        let child = Command::new(program)
            .arg("serve")
            .args([&port_file, &cert, &key, &stamp])
            .stdout(Stdio::null())
            .spawn()?;
        let port = port_written(&port_file)?;
        Ok(Self { child, port, stamp })
    }
}

/// A certificate and key for 127.0.0.1 under `bench.dir` (`NAME-cert.pem`,
/// `NAME-key.pem`).
pub(super) fn self_signed(bench: &Bench, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (
        bench.dir.join(format!("{name}-cert.pem")),
        bench.dir.join(format!("{name}-key.pem")),
    );
    cmd::run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()),
    )?;
    Ok((cert, key))
}

/// The port a server started on, once it has written its line to `port_file`.
pub(super) fn port_written(port_file: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(port) = fs::read_to_string(port_file) {
            if port.ends_with('\n') {
                return Ok(port.trim().to_string());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no port in {} (the server did not start)",
                port_file.display()
            );
        }
        sleep(Duration::from_millis(10));
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guardd {
    /// The id of the first pending hold, once there is one.
    fn wait_hold(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Response::Pending { holds } = self.request(Request::Pending)? {
                if let Some(hold) = holds.into_iter().next() {
                    return Ok(hold.id);
                }
            }
            if Instant::now() > deadline {
                bail!("the DELETE was not held");
            }
            sleep(Duration::from_millis(2));
        }
    }
}

/// A tracefs uprobe with no program on the instruction guardd's TLS write
/// probe takes (the first call in OpenSSL's `SSL_write_ex`), its filter
/// dropping every hit: the trap alone. Removed on drop.
struct BareBreakpoint {
    event: PathBuf,
}

const TRACEFS: &str = "/sys/kernel/tracing";
const FLOOR_EVENT: &str = "agent_guard_bench/floor";

impl BareBreakpoint {
    fn new(program: &Path) -> anyhow::Result<Self> {
        let libssl = linked_library(program, "libssl.so")?;
        let write_ex = symbol_offset(&libssl, "SSL_write_ex")?;
        let target = first_call(&libssl, write_ex)?;
        if !Path::new(TRACEFS).join("uprobe_events").exists() {
            cmd::run(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]))?;
        }
        let events = Path::new(TRACEFS).join("uprobe_events");
        let line = format!("p:{FLOOR_EVENT} {}:{target:#x}\n", libssl.display());
        fs::OpenOptions::new()
            .append(true)
            .open(&events)?
            .write_all(line.as_bytes())
            .with_context(|| format!("add {line:?} to {}", events.display()))?;
        let probe = Self {
            event: Path::new(TRACEFS).join("events").join(FLOOR_EVENT),
        };
        fs::write(probe.event.join("filter"), "common_pid == 0\n")?;
        Ok(probe)
    }

    fn enable(&self, on: bool) -> anyhow::Result<()> {
        fs::write(self.event.join("enable"), if on { "1\n" } else { "0\n" })
            .context("enable the floor probe")
    }
}

impl Drop for BareBreakpoint {
    fn drop(&mut self) {
        let _ = self.enable(false);
        let events = Path::new(TRACEFS).join("uprobe_events");
        if let Ok(mut file) = fs::OpenOptions::new().append(true).open(events) {
            let _ = file.write_all(format!("-:{FLOOR_EVENT}\n").as_bytes());
        }
    }
}

/// The file of the library `program` links whose name starts with `name`.
fn linked_library(program: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let out = cmd::output(Command::new("ldd").arg(program)).context("ldd failed")?;
    out.lines()
        .filter(|line| line.trim_start().starts_with(name))
        .find_map(|line| line.split_whitespace().nth(2).map(PathBuf::from))
        .with_context(|| format!("{} links no {name}", program.display()))
}

/// A dynamic symbol's file offset (its value: text is mapped at offset 0).
fn symbol_offset(library: &Path, symbol: &str) -> anyhow::Result<u64> {
    let out = cmd::output(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(library),
    )
    .context("nm failed")?;
    out.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let value = fields.next()?;
            let name = fields.nth(1)?;
            (name.split('@').next() == Some(symbol))
                .then(|| u64::from_str_radix(value, 16).ok())
                .flatten()
        })
        .with_context(|| format!("no {symbol} in {}", library.display()))
}

/// The target of the first `call` within 32 bytes of `start`.
fn first_call(library: &Path, start: u64) -> anyhow::Result<u64> {
    let out = cmd::output(
        Command::new("objdump")
            .arg("-d")
            .arg(format!("--start-address={start:#x}"))
            .arg(format!("--stop-address={:#x}", start + 32))
            .arg(library),
    )
    .context("objdump failed")?;
    out.lines()
        .find_map(|line| {
            let call = line.split('\t').nth(2)?.strip_prefix("call")?;
            u64::from_str_radix(call.split_whitespace().next()?, 16).ok()
        })
        .with_context(|| format!("no call near {start:#x} in {}", library.display()))
}
