//! Telling people in time: webhooks that are signed, retried and never in the
//! way of a decision (against HTTP servers on loopback), and desktop
//! notifications on a real D-Bus session bus owned by another user.
mod common;

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use guard_daemon::notify::WebhookBody;
use hmac::{Hmac, Mac as _};

struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    /// The body as guardd's own type, with the record as an `AuditRecord`.
    fn json(&self) -> WebhookBody<AuditRecord> {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP/1.1 server on loopback that answers with `statuses` in turn, then 200.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(statuses: &[u16]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (log, statuses) = (received.clone(), statuses.to_vec());
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut headers = HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let Some((name, value)) = line.trim_end().split_once(':') else {
                        break;
                    };
                    headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
                }
                let length: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = statuses.next().unwrap_or(200);
                log.lock().unwrap().push(Received {
                    headers,
                    body,
                    status,
                });
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self { port, received }
    }

    /// Waits for a request the server answered with 200 whose body's record matches.
    fn wait_for(
        &self,
        what: &str,
        matches: impl Fn(&AuditRecord) -> bool,
    ) -> WebhookBody<AuditRecord> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self
                .received
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.status == 200 && matches(&r.json().record))
            {
                return found.json();
            }
            assert!(Instant::now() < deadline, "no webhook delivery of {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn webhooks_are_signed_retried_and_never_hold_up_a_decision() {
    require_root();
    let stubs = Stubs::new();
    let receiver = Receiver::start(&[500, 503]);
    // Accepts connections (the kernel's backlog) and never answers.
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let secret_file = stubs.dir.path().join("webhook.secret");
    std::fs::write(&secret_file, "s3cret-key\n").unwrap();
    let guard = Daemon::start(&format!(
        r#"{HOLD_TERRAFORM_DESTROY}
[[notify.webhook]]
url = "http://127.0.0.1:{}/hook"
secret_file = "{}"
retries = 4
backoff = "100ms"

[[notify.webhook]]
url = "http://127.0.0.1:{}/hook"
timeout = "60s"
"#,
        receiver.port,
        secret_file.display(),
        black_hole.local_addr().unwrap().port(),
    ));
    let run = guard.session(&stubs, &["terraform", "destroy", "-auto-approve"]);
    let hold = guard.wait_hold("destroy");
    let id = hold.id.clone();

    let delivered = receiver.wait_for("the hold", |r| r.event == Some(AuditEvent::Hold));
    assert_eq!(delivered.event, "hold");
    assert_eq!(delivered.record.request_id.as_deref(), Some(id.as_str()));
    // argv[0] is the script the shebang ran.
    assert_eq!(delivered.record.argv[1..], ["destroy", "-auto-approve"]);
    assert_eq!(delivered.record.rule.as_deref(), Some("tf-destroy"));
    assert!(delivered.record.cwd.is_some());
    let text = &delivered.text;
    assert!(
        text.contains(&format!("held request {id}")) && text.contains("terraform destroy"),
        "{text}"
    );
    // Two failures, then the same delivery again, each attempt signed.
    {
        let received = receiver.received.lock().unwrap();
        let attempts: Vec<&Received> = received
            .iter()
            .filter(|r| r.headers["x-agent-guard-event"] == "hold")
            .collect();
        assert_eq!(
            attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
            [500, 503, 200]
        );
        for attempt in &attempts {
            assert_eq!(
                attempt.headers["x-agent-guard-delivery"],
                attempts[0].headers["x-agent-guard-delivery"]
            );
            assert_eq!(
                attempt.headers["x-agent-guard-signature"],
                format!("sha256={}", hmac_hex(b"s3cret-key", &attempt.body)),
                "the HMAC covers the exact body"
            );
            assert_eq!(attempt.headers["content-type"], "application/json");
        }
    }
    assert!(guard.log().contains("HTTP 500"), "{}", guard.log());

    // The black hole has the hold's delivery in flight for a minute; the
    // decision does not wait for it.
    let started = Instant::now();
    let out = guard.ctl(&["approve", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(run.wait().0.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a webhook held up the decision: {:?}",
        started.elapsed()
    );
    assert_eq!(stubs.marker_text(), "destroy -auto-approve\n");
    let approved = receiver.wait_for("the approval", |r| {
        r.event == Some(AuditEvent::Approve) && r.request_id.as_deref() == Some(id.as_str())
    });
    assert_eq!(approved.record.decision, Some(AuditDecision::Allow));
    assert_eq!(approved.record.channel, Some(Channel::Socket));
    assert!(approved
        .record
        .approver
        .as_deref()
        .unwrap()
        .contains("uid 0"));
    drop(black_hole);
    guard.stop();
}

/// A session bus run by `nobody` at `dir/bus-65534`, and a monitor on it.
struct NobodysBus {
    daemon: std::process::Child,
    monitor: std::process::Child,
    seen: Arc<Mutex<String>>,
}

impl NobodysBus {
    fn start(dir: &Path) -> Self {
        let address = format!("unix:path={}/bus-65534", dir.display());
        let as_nobody = |program: &str| {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
                .stdin(Stdio::null());
            command
        };
        let daemon = as_nobody("dbus-daemon")
            .args(["--session", "--nofork", "--address", &address])
            .spawn()
            .unwrap();
        let socket = dir.join("bus-65534");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut monitor = as_nobody("dbus-monitor")
            .args([
                "--address",
                &address,
                "interface='org.freedesktop.Notifications'",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let (out, log) = (monitor.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            daemon,
            monitor,
            seen,
        }
    }

    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.contains(text) {
                return seen;
            }
            assert!(Instant::now() < deadline, "no {text:?} on the bus: {seen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NobodysBus {
    fn drop(&mut self) {
        for child in [&mut self.monitor, &mut self.daemon] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_hold_is_shown_on_the_desktop_of_the_user_it_belongs_to() {
    require_root();
    let stubs = Stubs::new();
    std::fs::set_permissions(stubs.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(stubs.marker(), "").unwrap();
    std::fs::set_permissions(stubs.marker(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let bus_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bus_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bus = NobodysBus::start(bus_dir.path());
    let guard = Daemon::start(&format!(
        "{HOLD_TERRAFORM_DESTROY}\n[notify]\ndesktop = true\ndesktop_bus = \"unix:path={}/bus-{{uid}}\"\n",
        bus_dir.path().display()
    ));
    std::fs::set_permissions(guard.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut session = Command::new("setpriv");
    session
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(guardctl_bin())
        .arg("--socket")
        .arg(&guard.socket)
        .args(["run", "--", "terraform", "destroy", "desk"])
        .env("PATH", stubs.path_env())
        .current_dir(stubs.dir.path());
    let run = Proc::spawn(session);
    let hold = guard.wait_hold("desk");
    let id = hold.id.as_str();

    // guardd (root) cannot use nobody's bus itself: the call arriving there
    // was made as nobody, with the hold in its text.
    bus.wait_for("member=Notify");
    let seen = bus.wait_for("terraform destroy desk");
    assert!(
        seen.contains(&format!("agent-guard held request {id}")),
        "{seen}"
    );
    assert!(seen.contains("guardctl approve"), "{seen}");
    assert!(guard.ctl(&["deny", id]).status.success());
    assert!(!run.wait().0.success());
    assert_eq!(stubs.marker_text(), "");
    drop(bus);
    guard.stop();
}
