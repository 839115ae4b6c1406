//! The API-client gate with real clients and real servers on loopback:
//! boto3, Node.js and gnutls-cli against moto's AWS server over TLS, psql and psycopg2
//! against a throwaway PostgreSQL cluster. A destructive call made in a
//! session is held; denied, it never reaches the server and the client
//! gets an error; approved, it goes through. Reads pass without a hold, and
//! nothing outside a session is stopped. The Python packages come from
//! `cargo xtask setup` (target/api-venv).
mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{kill_group, Daemon, Proc};
use guard_common::ApiHook;
use guard_daemon::audit::AuditEvent;

/// The default pack only (its `[[api]]` rules), and a rule for Node's
/// unsigned requests to the local server.
const POLICY: &str = r#"
version = 1

[[api]]
id = "test-local-delete"
hosts = ["127.0.0.1"]
methods = ["DELETE"]
action = "hold"
examples.match = ["http DELETE 127.0.0.1 /bucket"]
"#;

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/api-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    python
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("api").join(name)
}

/// Runs a client outside any session; its JSON line.
fn outside(command: &mut Command) -> serde_json::Value {
    let out = command.output().expect("run client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|err| panic!("{err}: {text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Runs `command` in a `guardctl run` session of `guard`.
fn in_session(guard: &Daemon, command: &Command) -> Proc {
    let mut run = guard.ctl_command(&["run", "--"]);
    run.arg(command.get_program()).args(command.get_args());
    Proc::spawn(run)
}

fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default()
}

/// Starts a test server outside any session, in its own process group;
/// it and the port it printed first.
fn start_server(command: &mut Command, what: &str) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| panic!("start {what}: {err}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.trim().is_empty(), "{what} did not start");
    (child, line.trim().to_string())
}

/// moto's AWS server over TLS, in its own process group.
struct Moto {
    child: Child,
    port: String,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Command::new(python());
        server.arg(fixture("moto_tls.py")).arg(dir.path());
        let (child, port) = start_server(&mut server, "moto");
        Self {
            child,
            port,
            cert: dir.path().join("cert.pem"),
            _dir: dir,
        }
    }

    /// Whether moto (asked from outside any session) has the bucket.
    fn has_bucket(&self, name: &str) -> bool {
        let buckets = outside(&mut self.aws(&["list_buckets"]))["out"].clone();
        (buckets.as_array().unwrap().iter()).any(|b| b == name)
    }

    fn aws(&self, args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command
            .arg(fixture("aws_client.py"))
            .arg(&self.port)
            .arg(&self.cert)
            .args(args);
        command
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// Waits for a pending API call (a hold with an operation).
fn wait_api_hold(guard: &Daemon) -> guard_daemon::protocol::HoldView {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(hold) = guard.pending().into_iter().find(|h| h.operation.is_some()) {
            return hold;
        }
        assert!(Instant::now() < deadline, "no API hold: {}", guard.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn no_holds_raised(guard: &Daemon) {
    assert!(guard.pending().is_empty());
    assert!(
        guard.audit_events(AuditEvent::Hold).is_empty(),
        "unexpected hold: {:?}",
        guard.audit_events(AuditEvent::Hold)
    );
}

#[test]
fn boto3_terminate_is_held_and_denied_or_approved_while_reads_pass() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    // Outside any session nothing stops, a destructive call neither.
    let first = outside(&mut moto.aws(&["run_instance"]))["out"].clone();
    let second = outside(&mut moto.aws(&["run_instance"]))["out"].clone();
    let (first, second) = (first.as_str().unwrap(), second.as_str().unwrap());
    assert_eq!(
        outside(&mut moto.aws(&["terminate", second]))["out"],
        "shutting-down"
    );
    // Reads in a session: no hold.
    let (status, out, err) = in_session(&guard, &moto.aws(&["describe"])).wait();
    assert!(status.success(), "{out}{err}");
    assert_eq!(json_of(&out)["out"][first], "running");
    no_holds_raised(&guard);

    // Denied: the call fails in the client, the instance runs on.
    let client = in_session(&guard, &moto.aws(&["terminate", first]));
    let hold = guard.wait_hold("terminate");
    assert_eq!(
        hold.operation.as_deref(),
        Some("POST ec2 us-east-1 TerminateInstances")
    );
    assert_eq!(hold.rule, "aws-api-destroy");
    guard.decide("deny", &hold);
    let (status, out, err) = client.wait();
    assert!(!status.success(), "{out}");
    assert!(
        json_of(&out)["error"]
            .as_str()
            .unwrap()
            .contains("SSLError"),
        "{out}"
    );
    assert!(err.contains("was not sent"), "{err}");
    assert_eq!(
        outside(&mut moto.aws(&["describe"]))["out"][first],
        "running"
    );
    let denied = guard.audit_events(AuditEvent::Deny);
    assert_eq!(
        denied[0].operation.as_deref(),
        Some("POST ec2 us-east-1 TerminateInstances")
    );
    // Approved: it goes through.
    let client = in_session(&guard, &moto.aws(&["terminate", first]));
    let hold = guard.wait_hold("terminate");
    guard.decide("approve", &hold);
    let (status, out, err) = client.wait();
    assert!(status.success(), "{out}{err}");
    let state = outside(&mut moto.aws(&["describe"]))["out"][first].clone();
    assert!(state == "shutting-down" || state == "terminated", "{state}");
}

#[test]
fn boto3_delete_bucket_is_held_and_a_denied_retry_is_denied_at_once() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    outside(&mut moto.aws(&["create_bucket", "keep-me"]));
    let (status, out, _) = in_session(&guard, &moto.aws(&["list_buckets"])).wait();
    assert!(status.success());
    assert_eq!(json_of(&out)["out"][0], "keep-me");
    no_holds_raised(&guard);
    // With retries: the SDK sends the refused call again; it is refused again
    // without another hold.
    let mut delete = moto.aws(&["delete_bucket", "keep-me"]);
    delete.env("RETRIES", "3");
    let client = in_session(&guard, &delete);
    let hold = guard.wait_hold("delete_bucket");
    assert_eq!(
        hold.operation.as_deref(),
        Some("DELETE s3 us-east-1 DeleteBucket")
    );
    guard.decide("deny", &hold);
    let (status, out, _) = client.wait();
    assert!(!status.success(), "{out}");
    assert_eq!(guard.audit_events(AuditEvent::Hold).len(), 1);
    assert!(guard.pending().is_empty());
    assert_eq!(
        outside(&mut moto.aws(&["list_buckets"]))["out"][0],
        "keep-me"
    );
}

#[test]
fn node_https_delete_is_held_in_nodes_own_openssl() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    outside(&mut moto.aws(&["create_bucket", "node-bucket"]));
    let node = |method: &str, path: &str| {
        let mut command = Command::new("node");
        command
            .arg(fixture("node_client.js"))
            .arg(&moto.port)
            .arg(&moto.cert)
            .args([method, path]);
        command
    };
    let (status, out, err) = in_session(&guard, &node("GET", "/")).wait();
    assert!(status.success(), "{out}{err}");
    no_holds_raised(&guard);
    let client = in_session(&guard, &node("DELETE", "/node-bucket"));
    let hold = guard.wait_hold("DELETE");
    assert_eq!(
        hold.operation.as_deref(),
        Some("DELETE 127.0.0.1/node-bucket")
    );
    guard.decide("deny", &hold);
    let (_, out, _) = client.wait();
    assert_eq!(json_of(&out)["ok"], false, "{out}");
    assert_eq!(
        outside(&mut moto.aws(&["list_buckets"]))["out"][0],
        "node-bucket"
    );
    // Approved: Node writes it again after the handshake; the retry goes too.
    let client = in_session(&guard, &node("DELETE", "/node-bucket"));
    let hold = guard.wait_hold("DELETE");
    guard.decide("approve", &hold);
    let (status, out, err) = client.wait();
    assert!(status.success(), "{out}{err}");
    assert_eq!(
        outside(&mut moto.aws(&["list_buckets"]))["out"],
        serde_json::json!([])
    );
}

#[test]
fn gnutls_cli_delete_is_held_in_gnutls() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    for (decision, bucket) in [("deny", "gnutls-denied"), ("approve", "gnutls-approved")] {
        outside(&mut moto.aws(&["create_bucket", bucket]));
        let request = format!(
            "DELETE /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            moto.port
        );
        let mut client = Command::new("sh");
        client
            .arg("-c")
            .arg("printf '%s' \"$0\" | gnutls-cli --x509cafile=\"$1\" --port=\"$2\" 127.0.0.1")
            .arg(&request)
            .arg(&moto.cert)
            .arg(&moto.port);
        let client = in_session(&guard, &client);
        let hold = guard.wait_hold("gnutls-cli");
        assert!(
            hold.operation.as_deref().unwrap_or("").contains(bucket),
            "{hold:?}"
        );
        guard.decide(decision, &hold);
        let (_, out, err) = client.wait();
        // moto may answer after gnutls-cli has hung up: wait for its state.
        let deadline = Instant::now() + Duration::from_secs(10);
        let kept = loop {
            let kept = moto.has_bucket(bucket);
            if kept == (decision == "deny") || Instant::now() > deadline {
                break kept;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(kept, decision == "deny", "{decision}: {out}{err}");
    }
}

#[test]
fn a_delete_pipelined_behind_a_get_in_one_write_is_held() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    outside(&mut moto.aws(&["create_bucket", "smuggled"]));
    // A lone GET passes in the kernel; one that hides a second request
    // behind its blank line (a bare LF ends a head for most servers) stops.
    let raw = |bytes: &str| {
        let mut command = Command::new(python());
        command
            .arg(fixture("raw_tls.py"))
            .arg(&moto.port)
            .arg(&moto.cert)
            .arg(bytes);
        command
    };
    let (status, out, err) = in_session(
        &guard,
        &raw("GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"),
    )
    .wait();
    assert!(status.success(), "{out}{err}");
    no_holds_raised(&guard);
    for smuggled in [
        "GET / HTTP/1.1\\r\\nHost: h\\r\\n\\r\\nDELETE /smuggled HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n",
        "GET / HTTP/1.1\\nHost: h\\n\\nDELETE /smuggled HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n",
    ] {
        let client = in_session(&guard, &raw(smuggled));
        let hold = guard.wait_hold(&fixture("raw_tls.py").display().to_string());
        assert_eq!(hold.operation.as_deref(), Some("DELETE 127.0.0.1/smuggled"));
        guard.decide("deny", &hold);
        let _ = client.wait();
        assert_eq!(
            outside(&mut moto.aws(&["list_buckets"]))["out"][0],
            "smuggled"
        );
    }
}

#[test]
fn a_sigcont_before_guardd_holds_a_worker_threads_call_is_caught() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    outside(&mut moto.aws(&["create_bucket", "continued-worker"]));
    let dir = tempfile::tempdir().unwrap();
    let (trigger, pid_file) = (dir.path().join("go"), dir.path().join("pid"));
    let mut client = Command::new(python());
    client
        .arg(fixture("worker_delete.py"))
        .arg(&moto.port)
        .arg(&moto.cert)
        .arg("/continued-worker")
        .arg(&trigger)
        .arg(&pid_file);
    let client = in_session(&guard, &client);
    let pid = pid_in(&pid_file);
    // guardd frozen: the probe stops the worker thread, nobody seizes it.
    let frozen = guard.freeze();
    std::fs::write(&trigger, "").unwrap();
    common::wait_stopped(u64::from(pid));
    let sent = unsafe { libc::kill(pid as i32, libc::SIGCONT) } == 0;
    drop(frozen);
    if sent {
        // No BPF LSM to refuse it: the thread ran on; guardd says who let it.
        let (status, out, err) = client.wait();
        assert!(!status.success(), "{out}{err}");
        guard.assert_sigcont_audited(u64::from(pid));
    } else {
        // The BPF LSM refused the SIGCONT: the call is held as any other.
        let hold = guard.wait_hold("/continued-worker");
        guard.decide("deny", &hold);
        let (_, out, _) = client.wait();
        assert!(out.contains("delete failed"), "{out}");
        assert!(
            moto.has_bucket("continued-worker"),
            "the denied DELETE went through"
        );
    }
}

/// Before the probes sent SIGSTOP to the calling thread (they sent it to
/// the process, which wakes one thread to act on it), about one round in
/// four let the held DELETE out.
#[test]
fn letting_one_threads_call_go_keeps_another_threads_held_call_held() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("two_threads");
    let built = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&program)
        .arg(fixture("two_threads.c"))
        .args(["-lssl", "-lcrypto", "-lpthread"])
        .status()
        .unwrap();
    assert!(
        built.success(),
        "cc two_threads.c (libssl-dev: cargo xtask setup)"
    );
    // Both threads write at once: the POST is judged and let go (SIGCONT
    // continues the whole process) while the DELETE waits for a person.
    // The race is the scheduler's; ten rounds make it likely.
    for round in 0..10 {
        let bucket = format!("two-threads-{round}");
        outside(&mut moto.aws(&["create_bucket", &bucket]));
        let mut client = Command::new(&program);
        client.arg(&moto.port).arg(format!("/{bucket}"));
        let client = in_session(&guard, &client);
        let hold = guard.wait_hold(&format!("/{bucket}"));
        guard.decide("deny", &hold);
        let (status, out, err) = client.wait();
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("post: HTTP/1.1"), "{out}");
        assert!(!out.contains("delete: HTTP/1.1 2"), "{out}");
        assert!(
            moto.has_bucket(&bucket),
            "round {round}: the held DELETE went through"
        );
    }
}

/// A PostgreSQL cluster of its own, run as nobody (the server refuses
/// root), listening on a unix socket only.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Postgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server: run `cargo xtask setup`")
            .filter_map(Result::ok)
            .map(|v| v.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb: run `cargo xtask setup`");
        let dir = tempfile::tempdir().unwrap();
        let cluster = Self { dir, bin };
        for sub in ["data", "sock"] {
            std::fs::create_dir(cluster.dir.path().join(sub)).unwrap();
        }
        let chown = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(cluster.dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let data = cluster.dir.path().join("data");
        cluster.as_nobody("initdb", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "--no-sync"]);
        });
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync=off",
            cluster.socket().display()
        );
        cluster.as_nobody("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.path().join("data/log"))
                .args(["-w", "-o", &options, "start"]);
        });
        cluster
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn as_nobody(&self, program: &str, args: impl FnOnce(&mut Command)) {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(self.bin.join(program))
            .current_dir("/")
            .stdout(Stdio::null());
        args(&mut command);
        let out = command.output().unwrap();
        assert!(out.status.success(), "{program}: {out:?}");
    }

    fn psql(&self, sql: Option<&str>) -> Command {
        let mut command = Command::new("psql");
        command
            .arg("-h")
            .arg(self.socket())
            .args(["-U", "postgres", "-X", "-q", "-A", "-t"]);
        if let Some(sql) = sql {
            command.args(["-c", sql]);
        }
        command
    }

    fn tables(&self) -> String {
        let out = self
            .psql(Some("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        self.as_nobody("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
        });
    }
}

#[test]
fn destructive_sql_through_libpq_is_held_and_selects_pass() {
    let guard = Daemon::start(POLICY);
    let postgres = Postgres::start();
    let create = postgres
        .psql(Some(
            "CREATE TABLE a (x int); CREATE TABLE b (x int); CREATE TABLE c (x int)",
        ))
        .output()
        .unwrap();
    assert!(create.status.success(), "{create:?}");
    let script = postgres.dir.path().join("drop.sql");
    std::fs::write(&script, "SELECT 1;\nDROP TABLE a;\n").unwrap();
    // psql -f FILE: the DROP is held, denied, the table stays.
    let mut file = postgres.psql(None);
    file.arg("-f").arg(&script);
    let client = in_session(&guard, &file);
    let hold = guard.wait_hold("-f");
    // The database is read from the connection (psql -U postgres: "postgres").
    assert_eq!(
        hold.operation.as_deref(),
        Some("SQL on postgres: DROP TABLE a;")
    );
    assert_eq!(hold.rule, "sql-api-destroy");
    guard.decide("deny", &hold);
    let _ = client.wait();
    assert_eq!(postgres.tables(), "a,b,c");
    // psql < FILE: the same.
    let mut stdin = Command::new("sh");
    stdin.arg("-c").arg(format!(
        "psql -h {} -U postgres -X -q < {}",
        postgres.socket().display(),
        script.display()
    ));
    let client = in_session(&guard, &stdin);
    let hold = guard.wait_hold("-q");
    guard.decide("deny", &hold);
    let _ = client.wait();
    assert_eq!(postgres.tables(), "a,b,c");
    // psycopg2 (PQexec): held; approved, the table goes.
    let mut psycopg = Command::new(python());
    psycopg
        .arg(fixture("pg_client.py"))
        .arg(postgres.socket())
        .arg("DROP TABLE b");
    let client = in_session(&guard, &psycopg);
    let hold = guard.wait_hold("DROP TABLE b");
    guard.decide("approve", &hold);
    let (status, out, err) = client.wait();
    assert!(status.success(), "{out}{err}");
    assert_eq!(postgres.tables(), "a,c");
    // A libpq of the process's own (a wheel's), loaded after guardd started:
    // probed when it is mapped, before the first query.
    let bundled = postgres.dir.path().join("libpq-bundled.so.5");
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libpq.so.5", &bundled).unwrap();
    let mut own = Command::new(python());
    own.arg(fixture("pq_ctypes.py"))
        .arg(&bundled)
        .arg(postgres.socket())
        .arg("DROP TABLE c");
    let client = in_session(&guard, &own);
    let hold = guard.wait_hold("DROP TABLE c");
    assert_eq!(
        hold.operation.as_deref(),
        Some("SQL on postgres: DROP TABLE c")
    );
    guard.decide("deny", &hold);
    let (status, out, _) = client.wait();
    assert!(!status.success(), "{out}");
    assert_eq!(postgres.tables(), "a,c");
    assert!(
        guard.log().contains("libpq-bundled.so.5"),
        "{}",
        guard.log()
    );
    // A SELECT in a session: no new hold.
    let holds = guard.audit_events(AuditEvent::Hold).len();
    let started = Instant::now();
    let (status, out, _) =
        in_session(&guard, &postgres.psql(Some("SELECT count(*) FROM a"))).wait();
    assert!(status.success());
    assert_eq!(out.trim(), "0");
    assert_eq!(guard.audit_events(AuditEvent::Hold).len(), holds);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Python with OpenSSL mapped (`import ssl`), writing its pid to `DIR/NAME`
/// and sleeping: `maps NAME DIR` makes no connection; `connects NAME DIR`
/// makes one first (`SSL_new`, no network: a memory BIO).
const TLS_USER: &str = r#"
import os, ssl, sys, time
mode, name, where = sys.argv[1:4]
if mode == "connects":
    ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x")
open(os.path.join(where, name), "w").write(str(os.getpid()))
time.sleep(120)
"#;

fn pid_in(pid_file: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no pid in {}",
            pid_file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The byte at file offset `offset` of `library` as process `pid` sees it
/// (a uprobe's breakpoint is an int3, 0xcc, written into the process's copy).
fn byte_seen_by(pid: u32, library: &Path, offset: u64) -> u8 {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let address = maps
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 6 && Path::new(fields[5]) == library).then_some(fields)
        })
        .find_map(|fields| {
            let (start, end) = fields[0].split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let from = u64::from_str_radix(fields[2], 16).ok()?;
            (from..from + (end - start))
                .contains(&offset)
                .then(|| start + offset - from)
        })
        .unwrap_or_else(|| panic!("{} not mapped by {pid}", library.display()));
    let mut byte = [0u8];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap()
        .read_exact_at(&mut byte, address)
        .unwrap();
    byte[0]
}

/// A breakpoint's instruction.
const INT3: u8 = 0xcc;

/// The system's libssl and the followed write probe guardd puts on it.
fn libssl_write_probe() -> (PathBuf, guard_daemon::api::libs::ProbePoint) {
    let libssl = guard_daemon::api::libs::system_targets()
        .into_iter()
        .find(|path| path.to_string_lossy().contains("libssl.so"))
        .expect("the system's libssl");
    let probed = guard_daemon::api::libs::probed_in(&libssl);
    let write = (probed.points.iter())
        .find(|point| guard_daemon::kernel::api_hook_followed(point.hook))
        .copied()
        .expect("a write probe on libssl");
    (libssl, write)
}

#[test]
fn tls_write_probes_trap_only_in_session_processes_that_connect_and_follow_them_across_a_crash() {
    let (libssl, write) = libssl_write_probe();
    let mut guard = Daemon::start(POLICY);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tls_user.py");
    std::fs::write(&script, TLS_USER).unwrap();
    let run = |mode: &str, name: &str, session: bool| {
        let mut command = Command::new("sh");
        // A grandchild of the session: a shell forks it.
        command
            .args(["-c", "\"$0\" \"$@\"; true"])
            .arg(python())
            .arg(&script)
            .args([mode, name])
            .arg(dir.path());
        let process = match session {
            true => in_session(&guard, &command),
            false => Proc::spawn(command),
        };
        (process, pid_in(&dir.path().join(name)))
    };
    let trap = |pid: u32| byte_seen_by(pid, &libssl, write.offset) == INT3;
    let follows = || guard.status().stats.tls_follows;
    let (outside, outside_pid) = run("connects", "outside", false);
    let (idle, idle_pid) = run("maps", "idle", true);
    assert!(
        !trap(outside_pid),
        "a process outside the sessions traps on {write:?}"
    );
    assert!(
        !trap(idle_pid),
        "a session process that made no TLS connection traps"
    );
    assert_eq!(follows(), 0);
    let (connected, connected_pid) = run("connects", "connected", true);
    assert!(
        trap(connected_pid),
        "a session process that connected does not trap on {write:?}"
    );
    assert_eq!(follows(), 1);
    // Where the kernel takes `remove_on_exec`, a child's copy goes with its
    // exec (not checked here: perf may have swapped the copies of a parent
    // and its child, which leaves the child's new image followed; a cost,
    // not a gap). The holds after a fork and an exec are tested below.
    let unfollows =
        guard.status().mechanisms.iter().any(|(name, how)| {
            name == "api_client_gate" && how.contains("and again after each exec")
        });
    assert!(
        unfollows,
        "this kernel (5.13 or later) takes remove_on_exec"
    );
    // guardd's events go with it; its next start follows every session
    // task again (connections made while it was down).
    guard.stop_daemon(libc::SIGKILL);
    assert!(!trap(connected_pid));
    guard.spawn();
    assert!(trap(connected_pid));
    assert!(trap(idle_pid));
    assert!(!trap(outside_pid));
    for process in [connected, idle, outside] {
        kill_group(process.pid());
    }
    no_holds_raised(&guard);
}

/// An agent adopted by guardd's scan at start connected before it was in
/// any session, so no `SSL_new` stop saw it: guardd follows it at once.
#[test]
fn an_agent_adopted_with_its_connections_made_traps_at_once() {
    let (libssl, write) = libssl_write_probe();
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("agent-pkg");
    std::fs::create_dir(&package).unwrap();
    let script = package.join("cli.py");
    std::fs::write(&script, TLS_USER).unwrap();
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(&script)
        .args(["connects", "agent"])
        .arg(dir.path());
    let agent = Proc::spawn(command);
    let pid = pid_in(&dir.path().join("agent"));
    assert_ne!(byte_seen_by(pid, &libssl, write.offset), INT3);
    let guard = Daemon::start(&format!(
        "{POLICY}\n[agents]\ninterpreters = [\"python3\"]\npackages = [\"{}/\"]\n",
        package.display()
    ));
    assert!(
        guard.status().sessions.iter().any(|s| s.origin == "scan"),
        "the agent was not adopted"
    );
    assert_eq!(
        byte_seen_by(pid, &libssl, write.offset),
        INT3,
        "an adopted agent's earlier connection would write unseen"
    );
    kill_group(agent.pid());
    no_holds_raised(&guard);
}

/// A child forked after its parent's connection writes on that connection
/// (no `SSL_new` of its own): it carries the parent's followed event. A
/// program run by exec after a connection is followed from its own.
#[test]
fn deletes_after_a_fork_or_an_exec_of_a_connected_process_are_held() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    for then in ["fork", "exec"] {
        let bucket = format!("kept-{then}");
        outside(&mut moto.aws(&["create_bucket", &bucket]));
        let mut delete = moto.aws(&["delete_bucket", &bucket]);
        delete.env("THEN", then);
        let client = in_session(&guard, &delete);
        let hold = guard.wait_hold("delete_bucket");
        guard.decide("deny", &hold);
        let (status, out, err) = client.wait();
        assert!(!status.success(), "{then}: {out}{err}");
        assert!(moto.has_bucket(&bucket), "{then}: the bucket was deleted");
    }
    assert!(guard.status().stats.tls_follows >= 2);
}

#[test]
fn a_held_api_call_survives_a_guardd_crash_under_the_same_id() {
    let mut guard = Daemon::start(POLICY);
    let moto = Moto::start();
    outside(&mut moto.aws(&["create_bucket", "kept-across"]));
    let client = in_session(&guard, &moto.aws(&["delete_bucket", "kept-across"]));
    let hold = guard.wait_hold("delete_bucket");
    guard.stop_daemon(libc::SIGKILL);
    guard.spawn();
    // One hold, the same request, still the API call it was.
    let pending = guard.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].id, hold.id);
    assert_eq!(pending[0].operation, hold.operation);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        guard.pending().len(),
        1,
        "raised again: {:?}",
        guard.pending()
    );
    assert!(moto.has_bucket("kept-across"));
    // Denied after the restart: the call fails, the process goes on, the bucket stays.
    guard.decide("deny", &pending[0]);
    let (status, out, err) = client.wait();
    assert!(!status.success(), "{out}");
    assert!(err.contains("was not sent"), "{err}");
    assert!(json_of(&out)["error"].is_string(), "{out}");
    assert!(moto.has_bucket("kept-across"));
    assert!(guard.pending().is_empty());
}

/// Builds tests/api/go_client.go with the system's Go (`golang-go`) into
/// `dir/NAME` with the build's `flags`.
fn go_client(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    go_build(dir, "go_client.go", name, flags)
}

/// Builds the Go program `source` of tests/api into `dir/NAME`, in GOPATH
/// mode against Debian's Go libraries (the AWS SDK for Go v2 among them).
fn go_build(dir: &Path, source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let program = dir.join(name);
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-cache");
    let mut gopath = cache.join("path").into_os_string();
    gopath.push(":/usr/share/gocode");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&program)
        .args(flags)
        .arg(fixture(source))
        .env("GOCACHE", &cache)
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go");
    assert!(out.status.success(), "go build: {out:?}");
    program
}

/// `program` deletes a new bucket from a session: held, denied, the
/// client fails and the bucket stays.
fn go_delete_is_held_and_denied(guard: &Daemon, moto: &Moto, program: &Path, bucket: &str) {
    outside(&mut moto.aws(&["create_bucket", bucket]));
    let client = in_session(
        guard,
        Command::new(program).arg(&moto.port).arg(&moto.cert).args([
            "h1",
            "DELETE",
            &format!("/{bucket}"),
        ]),
    );
    let hold = guard.wait_hold("DELETE");
    guard.decide("deny", &hold);
    assert_eq!(client.wait().0.code(), Some(1));
    assert!(moto.has_bucket(bucket));
}

/// Where guardd would probe a Go binary's TLS write (a file offset).
fn go_write_offset(program: &Path) -> u64 {
    let probed = guard_daemon::api::libs::probed_in(program);
    let point = probed.points.iter().find(|p| p.hook == ApiHook::GoTlsWrite);
    point.unwrap_or_else(|| panic!("{probed:?}")).offset
}

#[test]
fn go_https_delete_is_held_in_gos_own_tls_symbols_or_stripped() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    for stripped in [false, true] {
        // Stripped (`-s -w`): the write is found in the pclntab alone.
        let program = match stripped {
            false => go_client(dir.path(), "go-client", &[]),
            true => go_client(dir.path(), "go-stripped", &["-ldflags=-s -w"]),
        };
        let bucket = if stripped {
            "go-stripped"
        } else {
            "go-symbols"
        };
        outside(&mut moto.aws(&["create_bucket", bucket]));
        let go = |method: &str, path: &str| {
            let mut command = Command::new(&program);
            command
                .arg(&moto.port)
                .arg(&moto.cert)
                .args(["h1", method, path]);
            command
        };
        let holds = guard.audit_events(AuditEvent::Hold).len();
        let (status, out, err) = in_session(&guard, &go("GET", "/")).wait();
        assert!(status.success(), "{out}{err}{}", guard.log());
        assert_eq!(
            guard.audit_events(AuditEvent::Hold).len(),
            holds,
            "GET held"
        );
        // Denied: Write returns net.ErrClosed, the process goes on.
        let client = in_session(&guard, &go("DELETE", &format!("/{bucket}")));
        let hold = guard.wait_hold("DELETE");
        assert_eq!(
            hold.operation.as_deref(),
            Some(format!("DELETE 127.0.0.1/{bucket}").as_str())
        );
        guard.decide("deny", &hold);
        let (status, out, err) = client.wait();
        assert_eq!(status.code(), Some(1), "{out}{err}");
        assert!(out.contains("closed"), "{out}");
        assert!(err.contains("was not sent"), "{err}");
        // The notice names the program and what started it.
        let name = program.file_name().unwrap().to_string_lossy();
        assert!(err.contains(&format!("made by {name} (pid")), "{err}");
        assert!(err.contains("started by `"), "{err}");
        assert!(moto.has_bucket(bucket));
        // Approved: it goes.
        let client = in_session(&guard, &go("DELETE", &format!("/{bucket}")));
        let hold = guard.wait_hold("DELETE");
        guard.decide("approve", &hold);
        let (status, out, err) = client.wait();
        assert!(status.success(), "{out}{err}");
        assert!(!moto.has_bucket(bucket));
    }
    // Rebuilt under the same path (a new file): probed again; the old
    // file's probes go once nothing runs it.
    use std::os::unix::fs::MetadataExt;
    let path = dir.path().join("go-client");
    let before = std::fs::metadata(&path).unwrap().ino();
    std::fs::remove_file(&path).unwrap();
    go_client(dir.path(), "go-client", &[]);
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), before);
    go_delete_is_held_and_denied(&guard, &moto, &path, "go-rebuilt");
    let probed = |guard: &Daemon| {
        let gate = common::mechanism(&guard.status(), "api_client_gate");
        gate.matches(&path.display().to_string()).count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while probed(&guard) != 1 {
        assert!(Instant::now() < deadline, "the old binary's probes stay");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Rewritten in place by another build (the same inode, its write
    // elsewhere): probed again, at its own place.
    let other = go_client(dir.path(), "go-other", &["-gcflags=all=-l"]);
    assert_ne!(go_write_offset(&other), go_write_offset(&path));
    let inode = std::fs::metadata(&path).unwrap().ino();
    std::fs::copy(&other, &path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    go_delete_is_held_and_denied(&guard, &moto, &path, "go-in-place");
    // Outside a session the same program is never stopped.
    outside(&mut moto.aws(&["create_bucket", "go-outside"]));
    let program = dir.path().join("go-stripped");
    let out = Command::new(&program)
        .arg(&moto.port)
        .arg(&moto.cert)
        .args(["h1", "DELETE", "/go-outside"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!moto.has_bucket("go-outside"));
    assert!(guard.pending().is_empty());
}

/// tests/api/h2_front.go, outside any session: Go's HTTP/2 server in front
/// of moto, and a small Kubernetes API of its own (pods of `default`).
struct H2Front {
    child: Child,
    port: String,
}

impl H2Front {
    fn start(moto: &Moto, dir: &Path) -> Self {
        let mut server = Command::new(go_build(dir, "h2_front.go", "h2-front", &[]));
        server
            .arg(&moto.cert)
            .arg(moto.cert.with_file_name("key.pem"))
            .arg(&moto.port);
        let (child, port) = start_server(&mut server, "the HTTP/2 front");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for H2Front {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

#[test]
fn go_http2_calls_are_read_with_the_connections_hpack_table() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let front = H2Front::start(&moto, dir.path());
    let program = go_client(dir.path(), "go-client", &[]);
    let go = |requests: &[&str]| {
        let mut command = Command::new(&program);
        command
            .arg(&front.port)
            .arg(&moto.cert)
            .arg("h2")
            .args(requests);
        command
    };
    // Reads on one connection: no hold, and HTTP/2 it was. Past the
    // connection's first write (its preface, perhaps with the first
    // request), the kernel lets each GET through and copies it to guardd.
    let gets: Vec<&str> = ["GET", "/"].repeat(20);
    let stops = guard.status().stats.api_stops;
    let (status, out, err) = in_session(&guard, &go(&gets)).wait();
    assert!(status.success(), "{out}{err}{}", guard.log());
    assert_eq!(json_of(&out)["proto"], "HTTP/2.0", "{out}");
    let stopped = guard.status().stats.api_stops - stops;
    assert!(stopped <= 2, "{stopped} stops for 20 GETs");
    no_holds_raised(&guard);
    // A DELETE after a GET on the same connection: its host is sent as an
    // index into the table the GET built.
    for (verdict, bucket) in [("deny", "h2-denied"), ("approve", "h2-approved")] {
        outside(&mut moto.aws(&["create_bucket", bucket]));
        let path = format!("/{bucket}");
        let client = in_session(&guard, &go(&["GET", "/", "DELETE", &path, "GET", "/"]));
        let hold = guard.wait_hold("DELETE");
        let operation = format!("DELETE 127.0.0.1/{bucket}");
        assert_eq!(hold.operation.as_deref(), Some(operation.as_str()));
        guard.decide(verdict, &hold);
        let (status, out, err) = client.wait();
        assert_eq!(status.success(), verdict == "approve", "{out}{err}");
        assert_eq!(moto.has_bucket(bucket), verdict == "deny");
    }
    assert!(guard.pending().is_empty());
    // No request the kernel let through was anything but a GET (and the
    // report-only program followed the short sessions without a failure).
    let errors = guard.audit_events(AuditEvent::Error);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn aws_sdk_for_go_calls_are_held_over_http1_and_http2() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let front = H2Front::start(&moto, dir.path());
    let program = go_build(dir.path(), "go_sdk.go", "go-sdk", &[]);
    let motos_url = format!("https://127.0.0.1:{}", moto.port);
    for (proto, url) in [("h1", motos_url.as_str()), ("h2", &front.url())] {
        let sdk = |args: &[&str]| {
            let mut command = Command::new(&program);
            command.arg(url).arg(&moto.cert).arg(proto).args(args);
            command
        };
        let bucket = format!("sdk-{proto}");
        outside(&mut moto.aws(&["create_bucket", &bucket]));
        let instance = outside(&mut moto.aws(&["run_instance"]))["out"].clone();
        let instance = instance.as_str().unwrap();
        // Reads: no hold.
        let holds = guard.audit_events(AuditEvent::Hold).len();
        for read in [&["list_buckets"][..], &["describe"]] {
            let (status, out, err) = in_session(&guard, &sdk(read)).wait();
            assert!(status.success(), "{proto} {read:?}: {out}{err}");
        }
        assert_eq!(guard.audit_events(AuditEvent::Hold).len(), holds, "{proto}");
        // The call is held as `operation`; decided by `verdict`, the
        // client succeeds only if approved.
        let decide = |args: &[&str], operation: &str, verdict: &str| {
            let client = in_session(&guard, &sdk(args));
            let hold = guard.wait_hold(args[0]);
            assert_eq!(hold.operation.as_deref(), Some(operation), "{proto}");
            guard.decide(verdict, &hold);
            let (status, out, err) = client.wait();
            assert_eq!(
                status.success(),
                verdict == "approve",
                "{proto}: {out}{err}"
            );
        };
        // EC2's query protocol names the action in the body (DATA frames
        // on HTTP/2): denied, the instance runs on.
        let terminate = ["terminate", instance];
        decide(&terminate, "POST ec2 us-east-1 TerminateInstances", "deny");
        let states = outside(&mut moto.aws(&["describe"]))["out"].clone();
        assert_eq!(states[instance], "running", "{proto}");
        // S3's DeleteBucket: approved, it goes.
        let delete = ["delete_bucket", &bucket];
        decide(&delete, "DELETE s3 us-east-1 DeleteBucket", "approve");
        assert!(!moto.has_bucket(&bucket), "{proto}");
    }
    assert!(guard.pending().is_empty());
}

#[test]
fn kubectl_deletes_over_http2_are_held_and_gets_pass() {
    let guard = Daemon::start(POLICY);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let front = H2Front::start(&moto, dir.path());
    let kubectl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kubectl/usr/bin/kubectl");
    assert!(
        kubectl.exists(),
        "run `cargo xtask setup` (Debian's kubectl)"
    );
    let config = dir.path().join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\nusers:\n- name: agent\n  user: {{token: agent}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: agent}}\ncurrent-context: local\n",
            front.url(),
            moto.cert.display()
        ),
    )
    .unwrap();
    let raw = |verb: &str, pod: &str| {
        let mut command = Command::new(&kubectl);
        command.arg("--kubeconfig").arg(&config).args([
            verb,
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}"),
        ]);
        command
    };
    let exists = |pod: &str| raw("get", pod).output().unwrap().status.success();
    let (status, out, err) = in_session(&guard, &raw("get", "web")).wait();
    assert!(status.success(), "{out}{err}{}", guard.log());
    assert!(out.contains("HTTP/2.0"), "{out}");
    no_holds_raised(&guard);
    for (verdict, pod) in [("deny", "keep-me"), ("approve", "db")] {
        let client = in_session(&guard, &raw("delete", pod));
        // The default pack holds `kubectl delete` at its exec; approved
        // there, its API call is held again where it is written.
        let exec = guard.wait_hold("delete");
        assert_eq!(exec.operation, None);
        guard.decide("approve", &exec);
        let hold = wait_api_hold(&guard);
        let operation = format!("DELETE 127.0.0.1/api/v1/namespaces/default/pods/{pod}");
        assert_eq!(hold.operation.as_deref(), Some(operation.as_str()));
        guard.decide(verdict, &hold);
        let (status, out, err) = client.wait();
        assert_eq!(status.success(), verdict == "approve", "{out}{err}");
        if verdict == "deny" {
            assert!(err.contains("was not sent"), "{err}");
            assert!(err.contains("made by kubectl (pid"), "{err}");
        }
        assert_eq!(exists(pod), verdict == "deny", "{pod}");
    }
    assert!(guard.pending().is_empty());
}
