//! The fleet relay, with a real nats-server (JetStream) on loopback: two
//! guardds join it as two hosts, and an approver's guardctl sees and
//! decides their holds through it alone. The relay is not trusted: a
//! decision counts only with a signature the host checks itself, and a
//! hold never needs the relay. nats-server is Debian's, unpacked into
//! target/ by `cargo xtask setup`.
mod common;

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;
use guard_daemon::fleet::subjects::{self, HoldState};

struct Nats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn_nats(dir.path(), None);
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (by its pid); its store stays for `restart`.
    fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// The same port and store again.
    fn restart(&mut self) {
        self.stop();
        let (child, _) = spawn_nats(self.dir.path(), Some(self.port));
        self.child = child;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A nats-server with JetStream on loopback, its store in `dir`, on `port`
/// (None: a free one, read from the ports file it writes). The caller
/// waits for it (`Nats::stop`).
#[allow(clippy::zombie_processes)]
fn spawn_nats(dir: &Path, port: Option<u16>) -> (Child, u16) {
    let binary =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nats-server/usr/sbin/nats-server");
    assert!(
        binary.exists(),
        "{}: run `cargo xtask setup`",
        binary.display()
    );
    let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
    let mut child = Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ports = dir.join(format!("nats-server_{}.ports", child.id()));
    let deadline = Instant::now() + WAIT;
    loop {
        let found = std::fs::read_to_string(&ports)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|ports| ports["nats"][0].as_str().map(str::to_string))
            .and_then(|url| url.rsplit(':').next()?.parse().ok());
        if let Some(port) = found {
            return (child, port);
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            panic!("nats-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A host `host` on the relay, whose allowed_signers lists alice's key.
fn host(nats: &Nats, name: &str, alice: &Path) -> Daemon {
    host_with(nats, name, alice, "")
}

/// As `host`, with more `[fleet]` keys.
fn host_with(nats: &Nats, name: &str, alice: &Path, fleet_keys: &str) -> Daemon {
    let signers = alice.with_file_name(format!("allowed_signers_{name}"));
    let public = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    std::fs::write(
        &signers,
        format!("alice@example namespaces=\"agent-guard\" {public}"),
    )
    .unwrap();
    Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[approvals]\nallowed_signers = \"{}\"\n[fleet]\nurl = \"{}\"\nhost = \"{name}\"\n{fleet_keys}",
        signers.display(),
        nats.url()
    ))
}

/// `guardctl --fleet URL ARGS` (no guardd socket involved).
fn fleet(nats: &Nats, args: &[&str]) -> Output {
    Command::new(guardctl_bin())
        .arg("--socket")
        .arg("/nonexistent/guardd.sock")
        .arg("--fleet")
        .arg(nats.url())
        .args(args)
        .output()
        .unwrap()
}

fn relay_pending(nats: &Nats) -> Vec<HoldState> {
    let out = fleet(nats, &["pending", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until the relay's pending list satisfies `ready`.
fn wait_relay(nats: &Nats, what: &str, ready: impl Fn(&[HoldState]) -> bool) -> Vec<HoldState> {
    let deadline = Instant::now() + WAIT;
    loop {
        let pending = relay_pending(nats);
        if ready(&pending) {
            return pending;
        }
        assert!(Instant::now() < deadline, "{what}: {pending:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `work` with a client of the relay, as a relay (or anyone on it) could act.
fn on_relay<F: std::future::Future<Output = ()>>(
    nats: &Nats,
    work: impl FnOnce(async_nats::Client) -> F,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = guard_daemon::fleet::connect(&nats.url(), "test", None, None, false)
            .await
            .unwrap();
        work(client).await;
    });
}

/// Publishes `decision` raw on `host`'s subject.
fn publish_decision(nats: &Nats, host: &str, decision: &subjects::Decision) {
    let payload = serde_json::to_vec(decision).unwrap();
    on_relay(nats, |client| async move {
        client
            .publish(subjects::decisions(host), payload.into())
            .await
            .unwrap();
        client.flush().await.unwrap();
    });
}

/// `guardctl --fleet URL watch --json`, its lines read as they come.
struct Watch {
    child: Child,
    lines: std::sync::mpsc::Receiver<HoldState>,
}

impl Watch {
    fn start(nats: &Nats) -> Self {
        let mut child = Command::new(guardctl_bin())
            .args(["--fleet", &nats.url(), "watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next state that satisfies `wanted` (states before it are skipped).
    fn wait(&self, what: &str, wanted: impl Fn(&HoldState) -> bool) -> HoldState {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(state) if wanted(&state) => return state,
                Ok(_) => {}
                Err(err) => panic!("watch: {what}: {err}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn holds_of_two_hosts_are_seen_and_decided_through_the_relay_only_with_valid_signatures() {
    require_root();
    let nats = Nats::start();
    let watch = Watch::start(&nats);
    let keys = tempfile::tempdir().unwrap();
    let alice = keygen(keys.path(), "alice");
    let (stubs_a, stubs_b) = (Stubs::new(), Stubs::new());
    let a = host(&nats, "host-a", &alice);
    let b = host(&nats, "host-b", &alice);
    let held_a = a.session(&stubs_a, &["terraform", "destroy", "on-a"]);
    let hold_a = a.wait_hold("on-a");
    let held_b = b.session(&stubs_b, &["terraform", "destroy", "on-b"]);
    let hold_b = b.wait_hold("on-b");
    let both = wait_relay(&nats, "both hosts' holds on the relay", |p| p.len() == 2);
    let on = |host: &str| both.iter().find(|s| s.host == host).unwrap().clone();
    assert_eq!(on("host-a").id, hold_a.id);
    assert_eq!(on("host-b").id, hold_b.id);
    assert_eq!(on("host-a").hold.as_ref().unwrap().argv, hold_a.argv);
    for hold in [&hold_a, &hold_b] {
        watch.wait("a hold as it comes", |s| {
            s.id == hold.id && s.hold.is_some()
        });
    }

    // A token signed for A's request, sent for B's: B checks it against its
    // own request and refuses it. A tampered token is refused too.
    let signed = a.ctl(&["sign", &hold_a.id, "--key", alice.to_str().unwrap()]);
    assert!(signed.status.success(), "{signed:?}");
    let token_a = String::from_utf8(signed.stdout).unwrap().trim().to_string();
    let forged = [
        subjects::Decision {
            id: hold_b.id.clone(),
            token: token_a.clone(),
            deny: false,
            reason: None,
        },
        subjects::Decision {
            id: hold_a.id.clone(),
            token: format!("{}x", &token_a[..token_a.len() - 1]),
            deny: false,
            reason: None,
        },
    ];
    publish_decision(&nats, "host-b", &forged[0]);
    publish_decision(&nats, "host-a", &forged[1]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.pending().len(), 1, "a tampered token released A's hold");
    assert_eq!(b.pending().len(), 1, "A's token released B's hold");
    assert_eq!(stubs_a.marker_text(), "");
    assert!(
        b.log().contains("fleet relay: a decision refused"),
        "{}",
        b.log()
    );

    // Decided from here, through the relay only: approve A, deny B.
    let approved = fleet(
        &nats,
        &["approve", &hold_a.id, "--sign", alice.to_str().unwrap()],
    );
    assert!(approved.status.success(), "{approved:?}");
    assert!(
        String::from_utf8_lossy(&approved.stdout).contains(": ended"),
        "{approved:?}"
    );
    let (status, _, _) = held_a.wait();
    assert!(status.success());
    assert_eq!(stubs_a.marker_text(), "destroy on-a\n");
    let denied = fleet(
        &nats,
        &["deny", &hold_b.id, "--sign", alice.to_str().unwrap()],
    );
    assert!(denied.status.success(), "{denied:?}");
    assert!(!held_b.wait().0.success());
    assert_eq!(stubs_b.marker_text(), "");
    wait_relay(&nats, "no pending holds left", <[HoldState]>::is_empty);
    let ended = watch.wait("A's end", |s| s.id == hold_a.id && s.hold.is_none());
    assert!(ended.ended.is_some(), "{ended:?}");
    // A watch started now shows what is pending only: nothing.
    let late = Watch::start(&nats);
    assert!(late.lines.recv_timeout(Duration::from_secs(2)).is_err());
    let approvals = a.audit_events(guard_daemon::audit::AuditEvent::Approve);
    assert!(
        approvals[0]
            .approver
            .as_deref()
            .is_some_and(|by| by.contains("key:alice@example") && by.contains("fleet relay")),
        "{approvals:?}"
    );
}

#[test]
fn a_hold_outlives_the_relay_and_its_return_gets_what_was_queued() {
    require_root();
    let nats = Nats::start();
    let keys = tempfile::tempdir().unwrap();
    let alice = keygen(keys.path(), "alice");
    let stubs = Stubs::new();
    let a = host(&nats, "host-a", &alice);
    let held = a.session(&stubs, &["terraform", "destroy", "kept"]);
    let hold = a.wait_hold("kept");
    wait_relay(&nats, "the hold on the relay", |p| p.len() == 1);
    // The relay goes away mid-hold: the hold stays, and the host's own
    // approval still works.
    let mut nats = nats;
    nats.stop();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.pending().len(), 1);
    assert_eq!(stubs.marker_text(), "");
    a.decide("approve", &hold);
    assert!(held.wait().0.success());
    assert_eq!(stubs.marker_text(), "destroy kept\n");
    // Back on the same port and store: guardd reconnects and publishes
    // what it queued, so the relay learns the hold ended.
    nats.restart();
    wait_relay(
        &nats,
        "the hold's end from the queue",
        <[HoldState]>::is_empty,
    );
}

/// Version 1 of the test's bundle: `helm uninstall` is held too.
const BUNDLE_V1: &str = r#"
version = 1
[[rule]]
id = "helm-uninstall"
programs = ["helm"]
subcommand = ["uninstall"]
action = "hold"
examples.match = ["helm uninstall web"]
examples.no_match = ["helm list"]
"#;

/// `guardctl --fleet URL status --json`, until `ready` holds for it.
fn wait_hosts(nats: &Nats, what: &str, ready: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = fleet(nats, &["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if ready(&status) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {status:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn host_status<'a>(status: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    status["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == host))
        .unwrap_or(&serde_json::Value::Null)
}

/// Puts `bundle` as it is into the policy bucket.
fn put_bundle(nats: &Nats, name: &str, bundle: &serde_json::Value) {
    let payload = serde_json::to_vec(bundle).unwrap();
    on_relay(nats, |client| async move {
        let js = async_nats::jetstream::new(client);
        let store = guard_daemon::fleet::bucket(&js, subjects::POLICY_BUCKET)
            .await
            .unwrap();
        store.put(name, payload.into()).await.unwrap();
    });
}

fn refused_on(nats: &Nats, host: &str, why: &str) {
    wait_hosts(nats, &format!("{host} refuses ({why})"), |status| {
        let host = host_status(status, host);
        host["refused"].as_str().is_some_and(|r| r.contains(why)) && host["bundle"]["version"] == 1
    });
}

#[test]
fn a_signed_policy_bundle_reaches_every_host_and_nothing_else_changes_a_policy() {
    require_root();
    let nats = Nats::start();
    let keys = tempfile::tempdir().unwrap();
    let alice = keygen(keys.path(), "alice");
    let sec = keygen(keys.path(), "sec");
    let mallory = keygen(keys.path(), "mallory");
    let signers = keys.path().join("policy_signers");
    let public = std::fs::read_to_string(sec.with_extension("pub")).unwrap();
    std::fs::write(
        &signers,
        format!("sec@example namespaces=\"agent-guard-policy\" {public}"),
    )
    .unwrap();
    let follow = format!(
        "policy_signers = \"{}\"\npolicy_name = \"build\"\n",
        signers.display()
    );
    let mut a = host_with(&nats, "host-a", &alice, &follow);
    let b = host_with(&nats, "host-b", &alice, &follow);
    let stubs = Stubs::new();
    stubs.script(
        "helm",
        &format!("echo \"$*\" >> {}", stubs.marker().display()),
    );
    let (status, _, _) = a.session(&stubs, &["helm", "uninstall", "before"]).wait();
    assert!(status.success());

    // Published and signed here; both hosts take it.
    let bundle = keys.path().join("bundle.toml");
    std::fs::write(&bundle, BUNDLE_V1).unwrap();
    let sec_arg = sec.to_str().unwrap();
    let file_arg = bundle.to_str().unwrap();
    let published = fleet(
        &nats,
        &[
            "policy", "publish", file_arg, "--sign", sec_arg, "--name", "build",
        ],
    );
    assert!(published.status.success(), "{published:?}");
    wait_hosts(&nats, "both hosts run bundle build v1", |status| {
        ["host-a", "host-b"].iter().all(|h| {
            let host = host_status(status, h);
            host["bundle"]["version"] == 1 && host["bundle"]["signer"] == "sec@example"
        })
    });
    let held = a.session(&stubs, &["helm", "uninstall", "after"]);
    let hold = a.wait_hold("after");
    assert_eq!(hold.rule, "helm-uninstall");
    a.decide("deny", &hold);
    assert!(!held.wait().0.success());
    assert_eq!(stubs.marker_text(), "uninstall before\n");
    assert!(b.status().policy.source.contains("fleet policy build v1"));

    // What guardctl refuses to publish: a layer whose example fails.
    let broken = keys.path().join("broken.toml");
    std::fs::write(
        &broken,
        BUNDLE_V1.replace(
            r#"match = ["helm uninstall web"]"#,
            r#"match = ["helm list"]"#,
        ),
    )
    .unwrap();
    let refused = fleet(
        &nats,
        &[
            "policy",
            "publish",
            broken.to_str().unwrap(),
            "--sign",
            sec_arg,
            "--name",
            "build",
        ],
    );
    assert!(!refused.status.success(), "{refused:?}");

    // What the hosts refuse, keeping v1: a key not in policy_signers...
    let by_mallory = fleet(
        &nats,
        &[
            "policy",
            "publish",
            file_arg,
            "--sign",
            mallory.to_str().unwrap(),
            "--name",
            "build",
        ],
    );
    assert!(by_mallory.status.success(), "{by_mallory:?}");
    refused_on(&nats, "host-a", "not in policy_signers");
    // ...v1's signature over a changed policy, an unsigned one, and one
    // signed by sec that does not load on the host (its example fails)...
    let v1: serde_json::Value = {
        let key = ssh_key::PrivateKey::read_openssh_file(&sec).unwrap();
        let signed =
            guard_daemon::fleet::bundle::PolicyBundle::sign(&key, "build", 1, BUNDLE_V1.into())
                .unwrap();
        serde_json::to_value(signed).unwrap()
    };
    let mut tampered = v1.clone();
    tampered["version"] = 3.into();
    tampered["policy"] = BUNDLE_V1.replace("\"hold\"", "\"allow\"").into();
    put_bundle(&nats, "build", &tampered);
    refused_on(&nats, "host-a", "bad signature");
    let mut unsigned = v1.clone();
    unsigned["version"] = 4.into();
    unsigned["signature"] = "".into();
    put_bundle(&nats, "build", &unsigned);
    refused_on(&nats, "host-a", "signature:");
    let not_loading = {
        let key = ssh_key::PrivateKey::read_openssh_file(&sec).unwrap();
        let text = std::fs::read_to_string(&broken).unwrap();
        let signed =
            guard_daemon::fleet::bundle::PolicyBundle::sign(&key, "build", 5, text).unwrap();
        serde_json::to_value(signed).unwrap()
    };
    put_bundle(&nats, "build", &not_loading);
    refused_on(&nats, "host-a", "should match but does not");
    // ...and, once v6 is in force, v1 replayed.
    let v6 = fleet(
        &nats,
        &[
            "policy",
            "publish",
            file_arg,
            "--sign",
            sec_arg,
            "--name",
            "build",
            "--version",
            "6",
        ],
    );
    assert!(v6.status.success(), "{v6:?}");
    wait_hosts(&nats, "host-a runs v6", |status| {
        host_status(status, "host-a")["bundle"]["version"] == 6
    });
    put_bundle(&nats, "build", &v1);
    wait_hosts(&nats, "host-a refuses v1 again", |status| {
        let host = host_status(status, "host-a");
        host["refused"]
            .as_str()
            .is_some_and(|r| r.contains("version 1 is not newer than version 6"))
            && host["bundle"]["version"] == 6
    });
    assert!(a
        .status()
        .policy
        .fleet_refused
        .is_some_and(|r| r.contains("not newer")));

    // B's files stop trusting sec: the bundle is dropped, and its saved v6
    // stays the floor: v1 is refused when B trusts sec again, v6 itself is
    // taken back.
    let b_policy = b.dir.path().join("policy.toml");
    let trusting = std::fs::read_to_string(&b_policy).unwrap();
    std::fs::write(&b_policy, trusting.replace(&follow, "")).unwrap();
    wait_hosts(&nats, "host-b drops the bundle", |status| {
        let host = host_status(status, "host-b");
        host["bundle"].is_null() && host["follows"].is_null()
    });
    assert!(!b.status().policy.source.contains("fleet policy"));
    put_bundle(&nats, "build", &v1);
    std::fs::write(&b_policy, &trusting).unwrap();
    wait_hosts(&nats, "host-b refuses v1 after the drop", |status| {
        let host = host_status(status, "host-b");
        host["refused"]
            .as_str()
            .is_some_and(|r| r.contains("version 1 is not newer than version 6"))
            && host["bundle"].is_null()
    });
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(b.dir.path().join("state/fleet-policy.json")).unwrap(),
    )
    .unwrap();
    put_bundle(&nats, "build", &saved);
    wait_hosts(&nats, "host-b takes its v6 back", |status| {
        host_status(status, "host-b")["bundle"]["version"] == 6
    });

    // The bundle in force outlives the relay and a restart.
    let mut nats = nats;
    nats.stop();
    a.restart();
    assert!(
        a.status().policy.source.contains("fleet policy build v6"),
        "{}",
        a.log()
    );
    let held = a.session(&stubs, &["helm", "uninstall", "restarted"]);
    let hold = a.wait_hold("restarted");
    a.decide("deny", &hold);
    assert!(!held.wait().0.success());
}
