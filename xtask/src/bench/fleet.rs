//! The fleet relay (docs/fleet.md), on a nats-server with JetStream on loopback:
//! 1. N simulated hosts (guard-daemon's `fleet_hosts` bench: one connection
//!    each, publishing what guardd publishes for a hold) at two rates, and
//!    one approver following the holds stream: its view latency, and the
//!    relay's acknowledgement time;
//! 2. `guardctl --fleet pending` over one pending hold per host;
//! 3. guardd's cost of the relay: a watched program whose every exec is
//!    audited, in a session of a guardd without and with `[fleet]`: time per
//!    exec, guardd's CPU per audit record, and how long after the loop the
//!    relay had every record.
use std::{
    fmt::Write as _,
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::{
    exec::{summary, Bench, Guardd, Pair, Usage, ROUNDS},
    results::{PairSummary, Summary},
};
use crate::cmd;

const HOSTS: usize = 500;
const SECONDS: u64 = 20;
/// Mean seconds between two holds of one host: a busy fleet, and a stress.
const RATES: [f64; 2] = [20.0, 2.0];
/// The audit rule the guardd runs add to the bench policy.
const AUDIT_RULE: &str = "[[rule]]\nid = \"bench-audit\"\nprograms = [\"tfbench\"]\nsubcommand = [\"audit\"]\naction = \"audit\"\n";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct FleetCost {
    /// `fleet_hosts`'s report for each rate.
    pub simulated: Vec<serde_json::Value>,
    /// `guardctl --fleet pending --json` with one pending hold per host: ms.
    pub pending_list_ms: Summary,
    pub pending_listed: usize,
    /// us per audited exec in a session: without / with `[fleet]`.
    pub audited_exec: PairSummary,
    /// guardd's CPU (user + system) per audit record, us: without / with.
    pub guardd_cpu_us_per_record: PairSummary,
    /// From the loop's end until the relay held every record: ms.
    pub relay_drain_ms: Summary,
    pub records_per_run: u32,
    /// The commit measured (`--fleet` runs after the rest of the report's).
    #[serde(default)]
    pub commit: String,
}

struct Nats {
    child: Child,
    port: u16,
    monitor: u16,
}

impl Nats {
    fn start(bench: &Bench) -> anyhow::Result<Self> {
        let binary = cmd::workspace_root().join("target/nats-server/usr/sbin/nats-server");
        if !binary.exists() {
            bail!("{}: run `cargo xtask setup`", binary.display());
        }
        // The last run's store goes: every run starts on an empty relay.
        let dir = bench.dir.join("nats");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-sd"])
            .arg(dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let mut nats = Self {
            child,
            port: 0,
            monitor: 0,
        };
        let port_of = |ports: &serde_json::Value, key: &str| -> Option<u16> {
            ports[key][0].as_str()?.rsplit(':').next()?.parse().ok()
        };
        for _ in 0..200 {
            let found = fs::read_to_string(&ports)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            if let Some(ports) = found {
                if let (Some(port), Some(monitor)) =
                    (port_of(&ports, "nats"), port_of(&ports, "monitoring"))
                {
                    nats.port = port;
                    nats.monitor = monitor;
                    return Ok(nats);
                }
            }
            sleep(Duration::from_millis(25));
        }
        bail!("nats-server did not start")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Messages in stream `name` (0 if it does not exist), from the monitor.
    fn messages(&self, name: &str) -> anyhow::Result<u64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor))?;
        write!(
            stream,
            "GET /jsz?streams=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let body = response.split("\r\n\r\n").nth(1).context("no body")?;
        let jsz: serde_json::Value = serde_json::from_str(body)?;
        let count = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == name)
            .and_then(|s| s["state"]["messages"].as_u64());
        Ok(count.unwrap_or(0))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub(super) fn run(bench: &Bench, policy: &str) -> anyhow::Result<FleetCost> {
    let nats = Nats::start(bench)?;
    let mut simulated = Vec::new();
    for every in RATES {
        eprintln!("xtask: bench fleet: {HOSTS} hosts, a hold each every {every} s on average");
        simulated.push(simulate(&nats, every)?);
    }
    let mut listing = Vec::new();
    let mut pending_listed = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let out = stdout_of(Command::new(bench.release.join("guardctl")).args([
            "--fleet",
            &nats.url(),
            "pending",
            "--json",
        ]))?;
        listing.push(start.elapsed().as_secs_f64() * 1e3);
        pending_listed = serde_json::from_str::<Vec<serde_json::Value>>(&out)?.len();
    }
    if pending_listed < HOSTS {
        bail!("guardctl --fleet pending listed {pending_listed} holds of {HOSTS} hosts");
    }
    let (exec, cpu, drain, records) = relay_cost(bench, policy, &nats)?;
    Ok(FleetCost {
        simulated,
        pending_list_ms: summary(&listing),
        pending_listed,
        audited_exec: exec.summary(),
        guardd_cpu_us_per_record: cpu.summary(),
        relay_drain_ms: summary(&drain),
        records_per_run: records,
        commit: cmd::output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
            .unwrap_or_default()
            .trim()
            .to_string(),
    })
}

/// One run of the `fleet_hosts` bench; its JSON report.
fn simulate(nats: &Nats, every: f64) -> anyhow::Result<serde_json::Value> {
    let out = stdout_of(cmd::cargo().current_dir(cmd::workspace_root()).args([
        "bench",
        "-q",
        "-p",
        "guard-daemon",
        "--bench",
        "fleet_hosts",
        "--",
        "--url",
        &nats.url(),
        "--hosts",
        &HOSTS.to_string(),
        "--seconds",
        &SECONDS.to_string(),
        "--every",
        &every.to_string(),
    ]))?;
    let last = out.lines().last().context("fleet_hosts printed nothing")?;
    let report: serde_json::Value = serde_json::from_str(last)?;
    if report["holds_seen"] != report["holds"] {
        bail!("the approver did not see every hold: {report}");
    }
    Ok(report)
}

/// Audited execs in a session of guardd without and with `[fleet]`,
/// alternating: (us per exec, guardd CPU us per record, drain ms, records).
fn relay_cost(
    bench: &Bench,
    policy: &str,
    nats: &Nats,
) -> anyhow::Result<(Pair, Pair, Vec<f64>, u32)> {
    let plain = bench.dir.join("fleet-off.toml");
    let joined = bench.dir.join("fleet-on.toml");
    fs::write(&plain, format!("{policy}{AUDIT_RULE}"))?;
    fs::write(
        &joined,
        format!(
            "{policy}{AUDIT_RULE}[fleet]\nurl = \"{}\"\nhost = \"bench-guardd\"\n",
            nats.url()
        ),
    )?;
    let (mut exec, mut cpu, mut drain) = (Pair::default(), Pair::default(), Vec::new());
    let mut records = 0;
    for round in 0..ROUNDS {
        eprintln!(
            "xtask: bench fleet: guardd's relay cost, round {}/{ROUNDS}",
            round + 1
        );
        for config in [&plain, &joined] {
            let fleet = config == &joined;
            let guard = Guardd::start_config(bench, config)?;
            // Joined, and what it says at start through, before the clock starts.
            sleep(Duration::from_millis(500));
            let before_count = nats.messages("AGENT_GUARD_AUDIT")?;
            let before = Usage::of(guard.child.id())?.cpu_seconds;
            let (command, count) = bench.watched_loop(Some(&guard), "audit");
            records = count;
            let per_exec = bench.per_exec_us((command, count))?;
            let loop_end = Instant::now();
            if fleet {
                let wanted = before_count + u64::from(count);
                while nats.messages("AGENT_GUARD_AUDIT")? < wanted {
                    if loop_end.elapsed() > Duration::from_secs(120) {
                        bail!("the relay did not get guardd's {count} audit records");
                    }
                    sleep(Duration::from_millis(10));
                }
                drain.push(loop_end.elapsed().as_secs_f64() * 1e3);
            }
            let used = Usage::of(guard.child.id())?.cpu_seconds - before;
            guard.stop(bench)?;
            let (exec_side, cpu_side) = match fleet {
                true => (&mut exec.with, &mut cpu.with),
                false => (&mut exec.without, &mut cpu.without),
            };
            exec_side.push(per_exec);
            cpu_side.push(used * 1e6 / f64::from(count));
        }
    }
    Ok((exec, cpu, drain, records))
}

/// What `command` printed; its errors go to the terminal.
fn stdout_of(command: &mut Command) -> anyhow::Result<String> {
    let out = command.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("{command:?} failed with {}", out.status);
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub(super) fn report(fleet: &FleetCost, row: &dyn Fn(&str, &str, &Summary) -> String) -> String {
    let mut out = format!(
        "\n## Fleet relay\n\nA nats-server 2.9 with JetStream on loopback, on this machine, at commit {} (`cargo xtask bench --fleet` measures only this part).\n\n",
        fleet.commit
    );
    for sim in &fleet.simulated {
        let _ = writeln!(
            out,
                "- {} simulated hosts, each a connection of its own, for {} s; each raises a hold on average {} s (exponential gaps) after its last one ended, which ends a second after it is raised, and leaves one pending at the end ({} holds, {} acknowledged messages: the hold, its end and two audit records each): an approver following the holds stream saw each hold p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms after it was published; JetStream acknowledged a message p50 {:.2} ms, p99 {:.2} ms. All {} connected in {:.0} ms.",
                sim["hosts"], sim["seconds"], sim["mean_seconds_between_holds_per_host"],
                sim["holds"], sim["messages"],
                sim["view_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
                sim["view_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
                sim["view_ms"]["max"].as_f64().unwrap_or(f64::NAN),
                sim["publish_ack_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
                sim["publish_ack_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
                sim["hosts"], sim["connect_all_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    out += "\n| figure | goal | median | min – max |\n|---|---|---|---|\n";
    out += &row(
        &format!(
            "`guardctl --fleet pending --json` listing {} pending holds: ms",
            fleet.pending_listed
        ),
        "",
        &fleet.pending_list_ms,
    );
    out += &row(
        &format!(
            "guardd with `[fleet]` against without: {} audited execs in a session, ratio of us per exec",
            fleet.records_per_run
        ),
        "",
        &fleet.audited_exec.ratio,
    );
    out += &row(
        "the same: guardd's CPU per audit record, us, with `[fleet]`",
        "",
        &fleet.guardd_cpu_us_per_record.guard_us,
    );
    out += &row(
        "the same: guardd's CPU per audit record, us, without (its whole work for an audited exec: the stop, the judgement, the record)",
        "",
        &fleet.guardd_cpu_us_per_record.no_guard_us,
    );
    out += &row(
        "the same: the loop's end until the relay held every record, ms",
        "",
        &fleet.relay_drain_ms,
    );
    out
}
