//! The escape checks: calls by which a session process makes a process
//! outside its session do its work. ptrace attach/seize, process_vm_writev
//! and pidfd_getfd name the target process; connect names a socket, and for
//! the sockets of terminal multiplexers and the user's service manager the
//! process that serves it is looked up. guardd judges the target against the
//! kernel's session map (`crate::guard::outside`).
use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use guard_common::FileKey;
use libseccomp::{notify_id_valid, ScmpNotifReq};

use super::{resolve, syscalls, syscalls::Escape, Listener, Undecodable};

/// An escape call, decoded.
#[derive(Debug, Clone)]
pub struct EscapeCall {
    pub id: u64,
    /// The thread that made it.
    pub tid: u32,
    pub syscall: &'static str,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub enum Target {
    /// A process (by its pid in guardd's namespace): ptrace, process_vm_writev, pidfd_getfd.
    Process(u32),
    /// A multiplexer or service-manager socket.
    Socket {
        /// Resolved, in guardd's view.
        path: PathBuf,
        /// `tmux`, `screen`, `systemd manager`.
        kind: &'static str,
        server: Server,
    },
}

/// Who serves a socket, as guardd found by connecting to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The pid that listens (SO_PEERCRED).
    Pid(u32),
    /// guardd's own connect failed with this errno (nobody listens): the
    /// caller's would too.
    Refused(i32),
    /// Not known (a datagram socket, a full backlog): judged as outside.
    Unknown,
}

/// The escape call, or None for one that reaches nothing the checks guard.
pub(super) fn decode(
    listener: &Listener,
    request: &ScmpNotifReq,
    name: &'static str,
    escape: Escape,
) -> Result<Option<EscapeCall>, Undecodable> {
    let args = request.data.args;
    let tid = request.pid;
    let target = match escape {
        Escape::Ptrace | Escape::ProcessVmWritev => {
            // The kernel takes a pid_t: the low 32 bits.
            let pid = args[if escape == Escape::Ptrace { 1 } else { 0 }] as u32 as i32;
            if pid <= 0 {
                // No such process: the kernel fails it (ESRCH).
                return Ok(None);
            }
            same_pid_namespace(tid)?;
            Target::Process(pid as u32)
        }
        Escape::PidfdGetfd => match pidfd_target(tid, args[0] as u32 as i32)? {
            Some(pid) => Target::Process(pid),
            // Not a pidfd, or its process has ended: the kernel fails it.
            None => return Ok(None),
        },
        Escape::Connect => match socket_target(tid, args[1], args[2] as u32, None)? {
            Some(target) => target,
            None => return Ok(None),
        },
    };
    // What was read came from the thread that is still waiting in this call.
    if notify_id_valid(listener.fd.as_raw_fd(), request.id).is_err() {
        return Err(Undecodable::Gone);
    }
    Ok(Some(EscapeCall {
        id: request.id,
        tid,
        syscall: name,
        target,
    }))
}

use std::os::fd::AsRawFd as _;

/// The guarded socket a thread the BPF LSM stopped in `connect` asked for
/// (`escape_unix_stream_connect`), None for any other socket. An error when
/// the call cannot be read, or names another socket than the one the kernel
/// stopped it on (`stopped_on`, by its file; a second thread may rewrite the
/// address): the caller then refuses it.
pub fn stopped_connect(tid: u32, stopped_on: FileKey) -> Result<Option<Target>, String> {
    let (number, args) = super::stopped_call(tid)
        .ok_or_else(|| format!("thread {tid}: its stopped call cannot be read"))?;
    if i64::from(number) != libc::SYS_connect {
        return Err(format!(
            "thread {tid} is stopped in system call {number}, not connect (io_uring?)"
        ));
    }
    socket_target(tid, args[1], args[2] as u32, Some(stopped_on)).map_err(|err| match err {
        Undecodable::Gone => format!("thread {tid} has ended"),
        Undecodable::Unreadable(why) => why,
    })
}

/// A pid the caller passed means the same process to guardd only in the same
/// pid namespace; elsewhere the call is refused (fail closed).
fn same_pid_namespace(tid: u32) -> Result<(), Undecodable> {
    let theirs = std::fs::read_link(format!("/proc/{tid}/ns/pid"))
        .map_err(|e| Undecodable::Unreadable(format!("pid namespace: {e}")))?;
    let ours = std::fs::read_link("/proc/self/ns/pid")
        .map_err(|e| Undecodable::Unreadable(format!("pid namespace: {e}")))?;
    if theirs != ours {
        return Err(Undecodable::Unreadable(
            "the caller is in another pid namespace: its pids cannot be placed".into(),
        ));
    }
    Ok(())
}

/// The process a pidfd of the caller refers to (the `Pid:` line of its
/// fdinfo, in guardd's pid namespace). None when the fd is no pidfd or the
/// process has ended.
fn pidfd_target(tid: u32, fd: i32) -> Result<Option<u32>, Undecodable> {
    if fd < 0 {
        return Ok(None);
    }
    let info = match std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}")) {
        Ok(info) => info,
        // No such fd: EBADF from the kernel.
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(err) => return Err(Undecodable::Unreadable(format!("fdinfo: {err}"))),
    };
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse::<i32>().ok());
    Ok(pid.filter(|pid| *pid > 0).map(|pid| pid as u32))
}

/// sizeof(struct sockaddr_un).
const SOCKADDR_UN: usize = 110;

/// The guarded socket an address names, with its server; None for other
/// addresses (every family but AF_UNIX, other paths, abstract names but
/// D-Bus's).
/// `stopped_on`: the socket file the kernel found (dev 0: an abstract name,
/// which has none); an address naming another one is an error.
fn socket_target(
    tid: u32,
    address: u64,
    length: u32,
    stopped_on: Option<FileKey>,
) -> Result<Option<Target>, Undecodable> {
    let other_socket = || {
        Undecodable::Unreadable(
            "the address names another socket than the one the kernel stopped the call on".into(),
        )
    };
    let length = (length as usize).min(SOCKADDR_UN);
    if length <= 2 || address == 0 {
        return Ok(None);
    }
    let mut bytes = [0u8; SOCKADDR_UN];
    read_memory(tid, address, &mut bytes[..length])
        .map_err(|e| Undecodable::Unreadable(format!("reading the socket address: {e}")))?;
    if u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_UNIX as u16 {
        return Ok(None);
    }
    let name = &bytes[2..length];
    if name[0] == 0 {
        if stopped_on.is_some_and(|key| key.dev != 0) {
            return Err(other_socket());
        }
        // An abstract name is its bytes, NULs included, up to the length.
        let abstract_name = &name[1..];
        let Some(kind) = guarded_abstract(abstract_name) else {
            return Ok(None);
        };
        let mut shown = b"@".to_vec();
        shown.extend_from_slice(abstract_name);
        return Ok(Some(Target::Socket {
            server: server_of_abstract(abstract_name),
            path: PathBuf::from(OsStr::from_bytes(&shown)),
            kind,
        }));
    }
    let raw = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    // connect follows a symlink in the last component too.
    let path = resolve::resolve(tid, syscalls::AT_FDCWD, raw, true);
    if let Some(key) = stopped_on {
        use std::os::unix::fs::MetadataExt as _;
        let found = std::fs::metadata(&path).map(|m| crate::protected::file_key(m.dev(), m.ino()));
        if found.ok() != Some(key) {
            return Err(other_socket());
        }
    }
    let Some(kind) = guarded_socket(&path) else {
        return Ok(None);
    };
    Ok(Some(Target::Socket {
        server: server_of(&path),
        path,
        kind,
    }))
}

/// Reads the caller's memory without opening /proc/TID/mem (connect is
/// frequent: this is one system call).
fn read_memory(tid: u32, address: u64, into: &mut [u8]) -> std::io::Result<()> {
    let local = libc::iovec {
        iov_base: into.as_mut_ptr().cast(),
        iov_len: into.len(),
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: into.len(),
    };
    // SAFETY: the local iovec covers `into`, which outlives the call; the
    // remote one is only read by the kernel, in the other process.
    let read = unsafe { libc::process_vm_readv(tid as i32, &local, 1, &remote, 1, 0) };
    if read < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if read as usize != into.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short read",
        ));
    }
    Ok(())
}

fn digits(text: &[u8]) -> bool {
    !text.is_empty() && text.iter().all(u8::is_ascii_digit)
}

/// Which guarded server a socket path belongs to, by where it is (the
/// resolved path, never the client's name):
/// * tmux: `*/tmux-UID/*` (`/tmp` or any `$TMUX_TMPDIR`);
/// * screen: `*/screen/S-USER/*` (`/run/screen`), `*/.screen/*`;
/// * systemd: `/run/user/UID/systemd/private` (user manager) and
///   `/run/systemd/private` (the system manager);
/// * the D-Bus session bus: `/run/user/UID/bus`, and `dbus-*` sockets (the
///   names `dbus-launch` and `dbus-daemon --address=unix:tmpdir=` make). Any
///   client of it can start a transient unit (`StartTransientUnit`) or have
///   an activatable service run something outside the session.
pub fn guarded_socket(path: &Path) -> Option<&'static str> {
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map_or(&b""[..], OsStr::as_bytes)
            .to_vec()
    };
    let parent = name(path.parent());
    let grandparent = name(path.parent().and_then(Path::parent));
    if parent.strip_prefix(b"tmux-").is_some_and(digits) {
        return Some("tmux");
    }
    if (parent.starts_with(b"S-") && grandparent == b"screen") || parent == b".screen" {
        return Some("screen");
    }
    let bytes = path.as_os_str().as_bytes();
    if bytes == b"/run/systemd/private"
        || bytes
            .strip_prefix(b"/run/user/")
            .and_then(|rest| rest.strip_suffix(b"/systemd/private"))
            .is_some_and(digits)
    {
        return Some("systemd manager");
    }
    if path
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"dbus-"))
        || bytes
            .strip_prefix(b"/run/user/")
            .and_then(|rest| rest.strip_suffix(b"/bus"))
            .is_some_and(digits)
    {
        return Some(SESSION_BUS);
    }
    None
}

const SESSION_BUS: &str = "D-Bus session bus";

/// Which guarded server an abstract socket name belongs to: only D-Bus buses
/// use them (`unix:abstract=` or `unix:tmpdir=` addresses, `DIR/dbus-*`).
pub fn guarded_abstract(name: &[u8]) -> Option<&'static str> {
    let last = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    last.starts_with(b"dbus-").then_some(SESSION_BUS)
}

/// Who listens on `path`: guardd connects (without blocking) and asks the
/// kernel for the peer's credentials, then closes.
pub fn server_of(path: &Path) -> Server {
    match nix::sys::socket::UnixAddr::new(path) {
        Ok(address) => server_at(&address),
        Err(_) => Server::Unknown,
    }
}

/// Who listens on the abstract socket `name`.
fn server_of_abstract(name: &[u8]) -> Server {
    match nix::sys::socket::UnixAddr::new_abstract(name) {
        Ok(address) => server_at(&address),
        Err(_) => Server::Unknown,
    }
}

fn server_at(address: &nix::sys::socket::UnixAddr) -> Server {
    use nix::sys::socket::{
        connect, getsockopt, socket, sockopt::PeerCredentials, AddressFamily, SockFlag, SockType,
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return Server::Unknown;
    };
    match connect(fd.as_raw_fd(), address) {
        Ok(()) => match getsockopt(&fd, PeerCredentials) {
            Ok(credentials) if credentials.pid() > 0 => Server::Pid(credentials.pid() as u32),
            _ => Server::Unknown,
        },
        Err(errno @ (nix::errno::Errno::ECONNREFUSED | nix::errno::Errno::ENOENT)) => {
            Server::Refused(errno as i32)
        }
        Err(_) => Server::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_sockets_are_known_by_their_place() {
        for (path, kind) in [
            ("/tmp/tmux-1000/default", Some("tmux")),
            ("/var/tmp/mine/tmux-0/work", Some("tmux")),
            ("/tmp/tmux-x/default", None),
            ("/run/screen/S-dev/1234.pts-0.host", Some("screen")),
            ("/home/dev/.screen/99.x", Some("screen")),
            ("/run/user/1000/systemd/private", Some("systemd manager")),
            ("/run/systemd/private", Some("systemd manager")),
            ("/run/user/1000/bus", Some("D-Bus session bus")),
            ("/tmp/dbus-Xa1b2C3d4", Some("D-Bus session bus")),
            ("/run/dbus/system_bus_socket", None),
            ("/run/user/x/bus", None),
            ("/run/user/1000/systemd/notify", None),
            ("/var/run/docker.sock", None),
        ] {
            assert_eq!(guarded_socket(Path::new(path)), kind, "{path}");
        }
        for (name, kind) in [
            (&b"/tmp/dbus-Xa1b2C3d4"[..], Some("D-Bus session bus")),
            (b"dbus-1", Some("D-Bus session bus")),
            (b"/tmp/.X11-unix/X0", None),
            (b"", None),
        ] {
            assert_eq!(guarded_abstract(name), kind, "{name:?}");
        }
    }

    #[test]
    fn a_pidfd_names_its_process_and_the_server_of_a_socket_is_found() {
        let me = std::process::id();
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(me as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let fd = pidfd.as_raw_fd();
        assert!(matches!(pidfd_target(me, fd), Ok(Some(pid)) if pid == me));
        assert!(matches!(pidfd_target(me, 0), Ok(None)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tmux-0").join("default");
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        assert_eq!(server_of(&path), Server::Refused(libc::ENOENT));
        let _listening = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(server_of(&path), Server::Pid(me));
    }
}
