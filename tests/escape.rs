//! The escape checks in `guardctl run` sessions (on by default): a session
//! process cannot ptrace, write into or take fds from a process outside the
//! session, and its connect to a tmux server or a D-Bus session bus outside
//! the session is held (a denial types nothing, activates nothing); inside
//! the session all of it works as before.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::*;

const DEFAULT: &str = "version = 1\nbase = \"none\"\n";

/// ptrace(ATTACH) and ptrace(SEIZE) on argv[1] (outside), then ATTACH on a
/// child of its own (inside), and process_vm_writev + pidfd_getfd on
/// argv[1] at the address argv[2]. Prints `NAME RESULT ERRNO` lines.
const PROBE: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.syscall.restype = ctypes.c_long
outside, address = int(sys.argv[1]), int(sys.argv[2])
def report(name, result):
    print(name, result, ctypes.get_errno() if result < 0 else 0, flush=True)
    ctypes.set_errno(0)
report("attach", libc.ptrace(16, outside, None, None))
report("seize", libc.ptrace(0x4206, outside, None, None))
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
result = libc.ptrace(16, child, None, None)
report("attach-child", result)
if result == 0:
    os.waitpid(child, 0)
    libc.ptrace(17, child, None, None)
os.kill(child, 9)
os.waitpid(child, 0)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
data = ctypes.create_string_buffer(b"WRITTEN!")
local = iovec(ctypes.addressof(data), 8)
remote = iovec(address, 8)
libc.process_vm_writev.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
report("vm_writev", libc.process_vm_writev(outside, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
pidfd = os.pidfd_open(outside)
report("getfd", libc.syscall(438, pidfd, 1, 0))
"#;

/// Started by the test, outside any session: prints a buffer's address,
/// then waits; on stdin's end prints what the buffer holds.
const TARGET: &str = r#"
import ctypes, sys
data = ctypes.create_string_buffer(b"original")
print(ctypes.addressof(data), flush=True)
sys.stdin.read()
print(data.value.decode(), flush=True)
"#;

struct Outside {
    child: std::process::Child,
    address: u64,
}

impl Outside {
    fn start() -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new("python3")
            .args(["-c", TARGET])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().parse().unwrap();
        Self { child, address }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn tracer(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// What its buffer holds now (it exits).
    fn finish(mut self) -> String {
        use std::io::Read as _;
        drop(self.child.stdin.take());
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child.wait().unwrap();
        out.trim().to_string()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn results(out: &str) -> std::collections::HashMap<String, (i64, i32)> {
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((
                fields.next()?.to_string(),
                (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?),
            ))
        })
        .collect()
}

#[test]
fn ptrace_vm_writes_and_pidfd_getfd_on_outside_processes_fail_and_are_audited() {
    let (stubs, guard) = setup(DEFAULT);
    let outside = Outside::start();
    let run = guard.session(
        &stubs,
        &[
            "python3",
            "-c",
            PROBE,
            &outside.pid().to_string(),
            &outside.address.to_string(),
        ],
    );
    let (status, out, err) = run.wait();
    assert!(status.success(), "{out}{err}");
    let got = results(&out);
    for call in ["attach", "seize", "vm_writev", "getfd"] {
        assert_eq!(got[call], (-1, libc::EPERM), "{call}: {out}{err}");
    }
    assert_eq!(got["attach-child"], (0, 0), "inside the session: {out}");
    assert!(
        err.contains("agent-guard: refused `ptrace attach pid"),
        "{err}"
    );
    assert_eq!(outside.tracer(), "0");
    assert_eq!(
        outside.finish(),
        "original",
        "the outside process was written"
    );
    let refused = guard.audit_events(AuditEvent::Deny);
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused
        .iter()
        .all(|r| r.rule.as_deref() == Some("session-escape")));
    let operation = refused[0].operation.as_deref().unwrap();
    assert!(
        operation.starts_with("ptrace attach pid ") && operation.contains("python3"),
        "{operation}"
    );
    let mechanism = mechanism(&guard.status(), "session_escape");
    assert!(
        mechanism.starts_with("seccomp in `guardctl run`"),
        "{mechanism}"
    );
    guard.stop();
}

#[test]
fn session_escape_allow_lets_ptrace_through() {
    let (stubs, guard) = setup(&format!(
        "{DEFAULT}[defaults]\nsession_escape = \"allow\"\n"
    ));
    assert!(mechanism(&guard.status(), "session_escape").starts_with("off"));
    let outside = Outside::start();
    let run = guard.session(
        &stubs,
        &[
            "python3",
            "-c",
            PROBE,
            &outside.pid().to_string(),
            &outside.address.to_string(),
        ],
    );
    let (status, out, err) = run.wait();
    assert!(status.success(), "{out}{err}");
    let got = results(&out);
    assert_eq!(got["attach"], (0, 0), "{out}{err}");
    assert_eq!(got["vm_writev"].0, 8, "{out}{err}");
    // The tracer exited; its attach's SIGSTOP may leave the process stopped.
    unsafe { libc::kill(outside.pid() as i32, libc::SIGCONT) };
    assert_eq!(outside.finish(), "WRITTEN!");
    assert!(guard.audit_events(AuditEvent::Deny).is_empty());
    guard.stop();
}

/// A tmux server on `socket` (in a `tmux-0` directory), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn command(socket: &Path) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(socket).args(["-f", "/dev/null"]);
        command
    }

    /// Started by the test, outside any session.
    fn outside(socket: &Path) -> Self {
        let status = Self::command(socket)
            .args(["new-session", "-d", "-s", "t", "-x", "80", "-y", "20"])
            .env("SHELL", "/bin/sh")
            .status()
            .unwrap();
        assert!(status.success());
        Self {
            socket: socket.to_path_buf(),
        }
    }

    fn pid(&self) -> String {
        let out = Self::command(&self.socket)
            .args(["display-message", "-p", "#{pid}"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Self::command(&self.socket)
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn socket_in(dir: &Path) -> PathBuf {
    let parent = dir.join("tmux-0");
    std::fs::create_dir(&parent).unwrap();
    parent.join("default")
}

/// A copy of `program` named `name` in the stubs' bin: matching is by the
/// socket a client connects to, never by its name.
fn renamed(stubs: &Stubs, program: &str, name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap()
        .stdout;
    let found = String::from_utf8(found).unwrap();
    std::fs::copy(found.trim(), stubs.bin().join(name)).unwrap();
    name.into()
}

fn renamed_tmux(stubs: &Stubs) -> String {
    renamed(stubs, "tmux", "tx")
}

fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn typing_into_a_tmux_server_outside_the_session_is_held() {
    require_root();
    let stubs = Stubs::new();
    let tx = renamed_tmux(&stubs);
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let marker = dir.path().join("typed");
    let guard = Daemon::start(DEFAULT);
    let tmux = Tmux::outside(&socket);
    let server = tmux.pid();
    let keys = format!("touch {}", marker.display());
    let socket_arg = socket.to_str().unwrap();
    let send = [
        tx.as_str(),
        "-S",
        socket_arg,
        "send-keys",
        "-t",
        "t",
        &keys,
        "Enter",
    ];

    let run = guard.session(&stubs, &send);
    let hold = guard.wait_hold("send-keys");
    let operation = hold.operation.as_deref().unwrap();
    assert_eq!(
        operation,
        format!("connect {socket_arg} (tmux server pid {server}, outside the session)")
    );
    assert_eq!(hold.rule, "session-escape");
    guard.decide("deny", &hold);
    let (status, _, stderr) = run.wait();
    assert!(!status.success(), "{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "a denied client typed into the server");

    let run = guard.session(&stubs, &send);
    let hold = guard.wait_hold("send-keys");
    guard.decide("approve", &hold);
    let (status, _, stderr) = run.wait();
    assert!(status.success(), "{stderr}");
    wait_until(|| marker.exists(), "the approved keys were typed");
    drop(tmux);
    guard.stop();
}

#[test]
fn a_tmux_server_started_inside_the_session_is_used_without_a_hold() {
    require_root();
    let stubs = Stubs::new();
    let tx = renamed_tmux(&stubs);
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let marker = dir.path().join("typed");
    let guard = Daemon::start(DEFAULT);
    // Killed from outside if the script fails half-way.
    let _cleanup = Tmux {
        socket: socket.clone(),
    };
    let script = format!(
        "export SHELL=/bin/sh\n\
         {tx} -S {s} -f /dev/null new-session -d -s in -x 80 -y 20 &&\n\
         {tx} -S {s} send-keys -t in 'touch {m}' Enter &&\n\
         while [ ! -e {m} ]; do sleep 0.02; done &&\n\
         {tx} -S {s} kill-server && echo ok",
        s = socket.display(),
        m = marker.display()
    );
    let run = guard.session(&stubs, &["sh", "-c", &script]);
    let (status, out, err) = run.wait();
    assert!(status.success() && out == "ok\n", "{out}{err}");
    assert!(guard.pending().is_empty());
    assert!(guard.audit_events(AuditEvent::Hold).is_empty());
    guard.stop();
}

/// Input pushed into the shared terminal (TIOCSTI) and io_uring, which no
/// notified call shows, are refused by the filter itself; outside a session
/// the same calls reach the kernel (ENOTTY: stdin is no terminal here).
const SIDE_DOORS: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
TIOCSTI = 0x5412
byte = ctypes.c_char(b"x")
ret = libc.ioctl(0, TIOCSTI, ctypes.byref(byte))
print("tiocsti", ret, ctypes.get_errno())
ret = libc.syscall(425, 1, None)
print("io_uring_setup", ret, ctypes.get_errno())
"#;

#[test]
fn terminal_input_injection_and_io_uring_are_refused_in_a_session() {
    let (stubs, guard) = setup(DEFAULT);
    let (status, out, err) = guard.session(&stubs, &["python3", "-c", SIDE_DOORS]).wait();
    assert!(status.success(), "{out}{err}");
    let got = results(&out);
    assert_eq!(got["tiocsti"], (-1, libc::EPERM), "{out}");
    assert_eq!(got["io_uring_setup"], (-1, libc::ENOSYS), "{out}");
    let outside = std::process::Command::new("python3")
        .args(["-c", SIDE_DOORS])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let got = results(&String::from_utf8_lossy(&outside.stdout));
    assert_eq!(got["tiocsti"], (-1, libc::ENOTTY));
    // EFAULT, or EPERM where the host disables io_uring: not the filter's ENOSYS.
    assert_ne!(got["io_uring_setup"], (-1, libc::ENOSYS));
    guard.stop();
}

/// A private D-Bus session bus started by the test, outside any session,
/// with one activatable service that touches `marker`: the way an agent would
/// have the bus (or `StartTransientUnit` on it) run something outside.
struct SessionBus {
    daemon: std::process::Child,
    address: String,
}

impl SessionBus {
    fn outside(dir: &Path, marker: &Path) -> Self {
        use std::io::BufRead as _;
        let services = dir.join("services");
        std::fs::create_dir(&services).unwrap();
        std::fs::write(
            services.join("org.agentguard.Probe.service"),
            format!(
                "[D-BUS Service]\nName=org.agentguard.Probe\nExec=/bin/touch {}\n",
                marker.display()
            ),
        )
        .unwrap();
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<busconfig><type>session</type>\
                 <listen>unix:path={}</listen>\
                 <servicedir>{}</servicedir>\
                 <auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>",
                dir.join("dbus-test").display(),
                services.display()
            ),
        )
        .unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut address = String::new();
        std::io::BufReader::new(daemon.stdout.as_mut().unwrap())
            .read_line(&mut address)
            .unwrap();
        Self {
            daemon,
            address: address.trim().to_string(),
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn a_call_on_a_session_bus_outside_the_session_is_held() {
    require_root();
    let stubs = Stubs::new();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("activated");
    let bus = SessionBus::outside(dir.path(), &marker);
    renamed(&stubs, "dbus-send", "ds");
    let bus_arg = format!("--bus={}", bus.address);
    let call = [
        "ds",
        bus_arg.as_str(),
        "--print-reply",
        "--reply-timeout=3000",
        "--dest=org.agentguard.Probe",
        "/",
        "org.agentguard.Probe.Ping",
    ];
    let guard = Daemon::start(DEFAULT);

    let run = guard.session(&stubs, &call);
    let hold = guard.wait_hold("org.agentguard.Probe.Ping");
    let operation = hold.operation.as_deref().unwrap();
    let socket = dir.path().join("dbus-test");
    assert_eq!(
        operation,
        format!(
            "connect {} (D-Bus session bus server pid {}, outside the session)",
            socket.display(),
            bus.daemon.id()
        )
    );
    assert_eq!(hold.rule, "session-escape");
    guard.decide("deny", &hold);
    let (status, _, stderr) = run.wait();
    assert!(!status.success(), "{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !marker.exists(),
        "a denied client had the bus start a service"
    );

    let run = guard.session(&stubs, &call);
    let hold = guard.wait_hold("org.agentguard.Probe.Ping");
    guard.decide("approve", &hold);
    // The service never takes its name, so the call itself fails; what
    // counts is that the bus ran it.
    let _ = run.wait();
    wait_until(
        || marker.exists(),
        "the approved call activated the service",
    );
    guard.stop();
}
