//! The API-client gate on Go programs: HTTPS GETs on one keep-alive
//! connection (xtask/bench/go_gets.go, Debian's Go) in a session against a
//! run without guardd, and the extra time of a session's first exec of a
//! Go binary guardd has not seen (finding its write, attaching the probe)
//! against an exec of one it has.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _};

use super::{
    exec::{summary, Bench, Guardd, Pair, ROUNDS},
    results::GoApiCost,
};
use crate::cmd;

/// GETs per run: 10,000 at ~90 us, about a second (3,000 left the
/// rounds spread 0.98 - 1.19).
const GETS: u32 = 10_000;
/// Fresh copies of the client run per round for the first-exec figure.
const COPIES: usize = 5;

pub(super) fn run(bench: &Bench) -> anyhow::Result<GoApiCost> {
    // Two builds, two files: the probe goes on the client's only, so the
    // server outside the session does not trap on its writes.
    let client = build(bench, "go_gets_client")?;
    let server = Server::start(bench, &build(bench, "go_gets_server")?)?;
    let gets = |guard: Option<&Guardd>, verb: &str| -> anyhow::Result<f64> {
        let mut command = in_session(bench, guard, &client);
        let out = command
            .args([verb, &server.port, &server.cert.to_string_lossy()])
            .arg(GETS.to_string())
            .stderr(Stdio::null())
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("go_gets get: {out:?}"))
    };
    let (mut loop_pair, mut http2_pair) = (Pair::default(), Pair::default());
    let mut first_exec = Vec::new();
    for round in 0..ROUNDS {
        eprintln!("xtask: bench API gate, Go {}/{ROUNDS}", round + 1);
        loop_pair.without.push(gets(None, "get")?);
        http2_pair.without.push(gets(None, "get2")?);
        let guard = Guardd::start(bench)?;
        loop_pair.with.push(gets(Some(&guard), "get")?);
        http2_pair.with.push(gets(Some(&guard), "get2")?);
        for copy in 0..COPIES {
            let fresh = bench.dir.join(format!("bin/go_gets_copy{copy}"));
            let _ = fs::remove_file(&fresh);
            fs::copy(&client, &fresh)?;
            let first = timed(in_session(bench, Some(&guard), &fresh).arg("noop"))?;
            let again = timed(in_session(bench, Some(&guard), &fresh).arg("noop"))?;
            first_exec.push((first - again) * 1000.0);
            fs::remove_file(&fresh)?;
        }
        guard.stop(bench)?;
    }
    Ok(GoApiCost {
        get_loop: loop_pair.summary(),
        get_loop_http2: Some(http2_pair.summary()),
        first_exec_extra_ms: summary(&first_exec),
    })
}

/// The section's rows of BENCHMARKS.md; `row` as the table's other rows.
pub(super) fn report(
    go: &GoApiCost,
    row: &dyn Fn(&str, &str, &super::results::Summary) -> String,
) -> String {
    let mut out = String::from(
        "\n### Go programs\n\nA Go client built with Debian's Go makes 10,000 HTTPS GETs on one keep-alive \
         HTTP/1.1 connection (and again over HTTP/2) to a Go server on loopback; ratio of microseconds per GET in a \
         session with guardd / without guardd in the same round. The first exec of a Go binary \
         in a session: wall-clock time of `guardctl run` on a fresh copy minus the same again \
         on that copy (then known).\n\n| figure | goal | median | min – max |\n|---|---|---|---|\n",
    );
    out += &row(
        "in a session, GETs (never stopped): ratio",
        "<= 1.05",
        &go.get_loop.ratio,
    );
    out += &row("without guardd: us per GET", "", &go.get_loop.no_guard_us);
    if let Some(http2) = &go.get_loop_http2 {
        out += &row("in a session, GETs over HTTP/2: ratio", "", &http2.ratio);
        out += &row("without guardd: us per HTTP/2 GET", "", &http2.no_guard_us);
    }
    out += &row(
        "first exec of a new Go binary in a session: extra ms",
        "",
        &go.first_exec_extra_ms,
    );
    out
}

fn build(bench: &Bench, name: &str) -> anyhow::Result<PathBuf> {
    let program = bench.dir.join("bin").join(name);
    let cache = cmd::workspace_root().join("target/go-cache");
    cmd::run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&program)
            .arg(cmd::workspace_root().join("xtask/bench/go_gets.go"))
            .env("GOCACHE", &cache)
            .env("GOPATH", cache.join("path"))
            .env("GO111MODULE", "off")
            .env("CGO_ENABLED", "0"),
    )?;
    Ok(program)
}

fn in_session(bench: &Bench, guard: Option<&Guardd>, program: &Path) -> Command {
    match guard {
        Some(guard) => {
            let mut run = Command::new(bench.release.join("guardctl"));
            run.arg("--socket").arg(&guard.socket).args(["run", "--"]);
            run.arg(program);
            run
        }
        None => Command::new(program),
    }
}

/// Seconds from spawn to exit; the command must succeed.
fn timed(command: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The Go HTTPS server, killed on drop (by the pid started here).
struct Server {
    child: Child,
    port: String,
    cert: PathBuf,
}

impl Server {
    fn start(bench: &Bench, program: &Path) -> anyhow::Result<Self> {
        let (cert, key) = super::api::self_signed(bench, "go")?;
        let port_file = bench.dir.join("go-port");
        let _ = fs::remove_file(&port_file);
        let child = Command::new(program)
            .arg("serve")
            .arg(&port_file)
            .args([&cert, &key])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let port = super::api::port_written(&port_file)?;
        Ok(Self { child, port, cert })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
