//! N simulated hosts on one relay, each a NATS connection of its own that
//! publishes what guardd publishes for a hold (its state, its end and two
//! audit records, all acknowledged by JetStream), and one approver that
//! follows the holds stream as `guardctl --fleet watch` does. Reports the
//! approver's view latency (hold published -> seen) and the publish ack
//! time as JSON on stdout. `cargo xtask bench` starts the nats-server and
//! runs this with `--url`.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt as _;
use guard_daemon::{
    fleet::{
        connect, ensure_streams,
        subjects::{self, HoldState},
        unix_now,
    },
    protocol::HoldView,
};

struct Args {
    url: String,
    hosts: usize,
    seconds: u64,
    /// Mean seconds between two holds of one host.
    every: f64,
}

type Sent = Arc<Mutex<HashMap<String, Instant>>>;

fn main() {
    let args = parse_args();
    // A connection per host: more descriptors than the usual soft limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run(&args));
    println!("{report}");
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        hosts: 500,
        seconds: 30,
        every: 20.0,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().expect("a value after each flag");
        match flag.as_str() {
            "--url" => args.url = value(),
            "--hosts" => args.hosts = value().parse().expect("--hosts N"),
            "--seconds" => args.seconds = value().parse().expect("--seconds S"),
            "--every" => args.every = value().parse().expect("--every S"),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    assert!(!args.url.is_empty(), "--url nats://... is needed");
    args
}

async fn run(args: &Args) -> serde_json::Value {
    let approver = connect(&args.url, "bench approver", None, None, false)
        .await
        .expect("the relay");
    let js = jetstream::new(approver);
    ensure_streams(&js).await.expect("streams");
    let sent: Sent = Arc::default();
    let seen = tokio::spawn(follow(js.clone(), sent.clone()));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut hosts = Vec::new();
    for n in 0..args.hosts {
        let host = format!("bench-{n:05}");
        let client = connect(&args.url, &host, None, None, false)
            .await
            .expect("a host's connection");
        hosts.push(tokio::spawn(raise_holds(
            jetstream::new(client),
            host,
            n as u64,
            args.every,
            deadline,
            sent.clone(),
        )));
    }
    let connected_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut acks = Vec::new();
    for host in hosts {
        acks.extend(host.await.expect("a host's task"));
    }
    // The last holds' views arrive shortly after.
    tokio::time::sleep(Duration::from_secs(2)).await;
    seen.abort();
    let holds = sent.lock().unwrap().len();
    let latencies = VIEWS.lock().unwrap().clone();
    serde_json::json!({
        "hosts": args.hosts,
        "seconds": args.seconds,
        "mean_seconds_between_holds_per_host": args.every,
        "connect_all_ms": connected_ms,
        "holds": holds,
        "messages": acks.len(),
        "holds_seen": latencies.len(),
        "publish_ack_ms": summary(acks),
        "view_ms": summary(latencies),
    })
}

static VIEWS: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// The approver: each pending hold state, timed from its publication.
async fn follow(js: jetstream::Context, sent: Sent) {
    let stream = js.get_stream(subjects::HOLDS_STREAM).await.expect("holds");
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::ALL_HOLDS.into(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    while let Some(Ok(message)) = messages.next().await {
        let Ok(state) = serde_json::from_slice::<HoldState>(&message.payload) else {
            continue;
        };
        if state.hold.is_none() {
            continue;
        }
        if let Some(at) = sent.lock().unwrap().get(&state.id) {
            VIEWS.lock().unwrap().push(at.elapsed().as_secs_f64() * 1e3);
        }
    }
}

/// One host: a hold every `every` seconds on average (exponential gaps),
/// decided a second later; returns its messages' ack times (ms).
async fn raise_holds(
    js: jetstream::Context,
    host: String,
    seed: u64,
    every: f64,
    deadline: Instant,
    sent: Sent,
) -> Vec<f64> {
    let mut random = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut acks = Vec::new();
    let mut n = 0;
    loop {
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let uniform = ((random >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let gap = Duration::from_secs_f64(-uniform.ln() * every);
        if Instant::now() + gap > deadline {
            // One hold left pending per host, for the approver's listing.
            let id = format!("{:04x}-last", seed & 0xffff);
            let state = pending(&host, &id, &sent);
            acks.push(publish(&js, subjects::hold(&host, &id), &state).await);
            return acks;
        }
        tokio::time::sleep(gap).await;
        n += 1;
        let id = format!("{:04x}-{n}", seed & 0xffff);
        let mut state = pending(&host, &id, &sent);
        let subject = subjects::hold(&host, &id);
        acks.push(publish(&js, subject.clone(), &state).await);
        acks.push(publish(&js, subjects::audit(&host), &audit(&id, "hold")).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        state.hold = None;
        state.ended = Some("approve".into());
        acks.push(publish(&js, subject, &state).await);
        acks.push(publish(&js, subjects::audit(&host), &audit(&id, "approve")).await);
    }
}

/// Hold `id` pending, its publication time noted for the approver.
fn pending(host: &str, id: &str, sent: &Sent) -> HoldState {
    sent.lock().unwrap().insert(id.into(), Instant::now());
    HoldState {
        host: host.into(),
        id: id.into(),
        at: unix_now(),
        hold: Some(hold_view(host, id)),
        ended: None,
    }
}

async fn publish(js: &jetstream::Context, subject: String, value: &impl serde::Serialize) -> f64 {
    let start = Instant::now();
    let payload = serde_json::to_vec(value).expect("serializes");
    js.publish(subject, payload.into())
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    start.elapsed().as_secs_f64() * 1e3
}

fn hold_view(host: &str, id: &str) -> HoldView {
    serde_json::from_value(serde_json::json!({
        "id": id, "host": host, "pid": 4242, "session": 4200, "agent": "claude", "uid": 1000,
        "program": "terraform", "argv": ["terraform", "destroy", "-auto-approve"],
        "cwd": "/home/dev/infra", "exe": "/usr/bin/terraform", "rule": "terraform-destroy",
        "state": "held", "approvals_needed": 1, "protection": "", "approved_by": [],
        "approvers": [], "also_approvers": [], "self_approval": false, "operation": null,
        "ancestry": ["4242:terraform", "4200:claude", "1:systemd"], "context": [], "why": [],
        "held_secs": 0, "expires_in_secs": 600
    }))
    .expect("a hold as guardd shows it")
}

fn audit(id: &str, event: &str) -> serde_json::Value {
    serde_json::json!({
        "time": "2026-12-07T08:00:00Z", "event": event, "request_id": id, "session": 4200,
        "pid": 4242, "uid": 1000, "cwd": "/home/dev/infra", "exe": "/usr/bin/terraform",
        "argv": ["terraform", "destroy", "-auto-approve"], "rule": "terraform-destroy"
    })
}

fn summary(mut values: Vec<f64>) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({
        "n": values.len(), "p50": at(0.5), "p99": at(0.99), "max": at(1.0),
    })
}
