//! The syscall gate for sessions started by `guardctl run`: the launcher's
//! seccomp filter sends unlink, rename, truncate, writing opens, chmod and
//! chown to guardd, which reads the paths from the stopped thread, resolves
//! them as the kernel would, and answers continue, an errno, or (for a
//! protected path) nothing until a person decides. See docs/syscall-gate.md
//! for what this can and cannot stop.
mod fast;
pub mod filter;
pub mod outside;
mod resolve;
pub mod syscalls;

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    path::PathBuf,
    sync::{Arc, Mutex},
};

pub use fast::{publish, FastPath, SharedProtections};
use libseccomp::{notify_id_valid, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};

use crate::{guard::Guard, policy::protect::Operation};

/// One session's notification listener.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    pub session: u32,
}

/// A gated call, decoded.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: u64,
    /// The thread that made it.
    pub tid: u32,
    pub syscall: &'static str,
    pub operation: Operation,
    /// What else the call does, judged too (an open with O_TRUNC of a file
    /// that exists is a truncate, and still a write).
    pub also: Option<Operation>,
    /// Resolved absolute paths (two for a rename).
    pub paths: Vec<PathBuf>,
}

/// What guardd answers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Errno(i32),
    /// Held: the answer comes with the decision.
    Held,
}

impl Listener {
    /// Whether `fd` is a seccomp notification listener (and not some other
    /// file a caller passed).
    pub fn check(fd: &OwnedFd) -> Result<(), String> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|err| format!("cannot inspect the passed fd: {err}"))?;
        if link.to_string_lossy() != "anon_inode:seccomp notify" {
            return Err(format!(
                "the passed fd is {}, not a seccomp notification listener",
                link.display()
            ));
        }
        Ok(())
    }

    /// Lets the call run as the thread made it.
    pub fn allow(&self, id: u64) {
        // Not a security decision by the kernel's rules: see docs/syscall-gate.md.
        self.respond(ScmpNotifResp::new_continue(
            id,
            ScmpNotifRespFlags::CONTINUE,
        ));
    }

    /// Fails the call with `errno` (positive); it never reaches the file system.
    pub fn refuse(&self, id: u64, errno: i32) {
        self.respond(ScmpNotifResp::new_error(
            id,
            -errno,
            ScmpNotifRespFlags::empty(),
        ));
    }

    fn respond(&self, response: ScmpNotifResp) {
        // ENOENT: the thread is gone (killed, or its wait interrupted), nothing to answer.
        if let Err(err) = response.respond(self.fd.as_raw_fd()) {
            tracing::debug!(
                session = self.session,
                "seccomp answer not delivered: {err}"
            );
        }
    }
}

/// Serves one listener, on a thread of its own, until no process uses its
/// filter any more: a call no `[[protect]]` entry covers is answered there
/// (`fast.rs`), the others under guardd's lock.
pub fn serve(fd: OwnedFd, session: u32, guard: Arc<Mutex<Guard>>) {
    let listener = Arc::new(Listener { fd, session });
    let started = std::thread::Builder::new()
        .name(format!("gate-{session}"))
        .spawn(move || {
            let fast = (guard.lock().unwrap_or_else(|e| e.into_inner())).gate_fast_path(session);
            tracing::info!(session, "syscall gate active");
            serve_calls(&listener, &guard, fast);
            tracing::info!(session, "syscall gate closed: no process uses it any more");
        });
    if let Err(err) = started {
        // The launcher's calls wait on a listener nobody reads: it is told
        // so by the error, and its processes block (fail closed).
        tracing::error!(session, "cannot start the syscall gate's thread: {err}");
    }
}

fn serve_calls(listener: &Arc<Listener>, guard: &Mutex<Guard>, mut fast: Option<FastPath>) {
    let session = listener.session;
    loop {
        // RECV blocks on, even once no process uses the filter: poll tells.
        let mut poll = [rustix::event::PollFd::new(
            &listener.fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut poll, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => {
                tracing::error!(session, "cannot poll the seccomp listener: {err}");
                return;
            }
        }
        let revents = poll[0].revents();
        if !revents.contains(rustix::event::PollFlags::IN) {
            if revents.intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR) {
                return;
            }
            continue;
        }
        let request = match ScmpNotifReq::receive(listener.fd.as_raw_fd()) {
            Ok(request) => request,
            // The thread went away between poll and receive.
            Err(_) => continue,
        };
        let lock = || guard.lock().unwrap_or_else(|e| e.into_inner());
        let number = request.data.syscall.as_raw_syscall();
        let answer = match syscalls::escape_by_number(number) {
            Some((name, escape)) => {
                outside::decode(listener, &request, name, escape).map(|call| match call {
                    None => Verdict::Continue,
                    Some(call) => lock().on_escape_call(listener, call),
                })
            }
            None => decode(listener, &request).map(|call| match call {
                None => Verdict::Continue,
                Some(call) if fast.as_mut().is_some_and(|fast| fast.uncovered(&call)) => {
                    Verdict::Continue
                }
                Some(call) => lock().on_gated_call(listener, call),
            }),
        };
        match answer {
            Ok(Verdict::Continue) => listener.allow(request.id),
            Ok(Verdict::Errno(errno)) => listener.refuse(request.id, errno),
            Ok(Verdict::Held) => {}
            Err(Undecodable::Gone) => {}
            Err(Undecodable::Unreadable(why)) => {
                // Fail closed: a call we cannot read is not let through.
                tracing::warn!(session, pid = request.pid, "gated call refused: {why}");
                listener.refuse(request.id, libc::EPERM);
            }
        }
    }
}

/// The resolved paths of the gated call a stopped thread is in, read from
/// `/proc/TID/syscall` (for the BPF LSM gate, which stops the process inside
/// the call). None when the thread is not stopped in a known gated call.
pub fn describe_stopped(tid: u32) -> Option<Vec<PathBuf>> {
    let (number, args) = stopped_call(tid)?;
    let gated = syscalls::by_number(number)?;
    let follows = match gated.open_flags {
        Some(arg) => args.get(arg)? & libc::O_NOFOLLOW as u64 == 0,
        None => gated.follows,
    };
    gated
        .paths
        .iter()
        .map(|(dirfd_arg, path_arg)| {
            let raw = resolve::read_path(tid, *args.get(*path_arg)?).ok()?;
            let dirfd = dirfd_arg.map_or(syscalls::AT_FDCWD, |arg| args[arg] as i32);
            Some(resolve::resolve(tid, dirfd, &raw, follows))
        })
        .collect()
}

/// The system call number and arguments of a thread the BPF LSM stopped in
/// a call (`/proc/TID/syscall`: the registers still hold them until the
/// call restarts).
pub(crate) fn stopped_call(tid: u32) -> Option<(i32, Vec<u64>)> {
    // The stop lands as the call returns to user mode: wait for it briefly.
    for _ in 0..1000 {
        if crate::procfs::stat(tid).is_ok_and(|s| s.is_stopped()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    let text = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    let mut fields = text.split_whitespace();
    let number: i32 = fields.next()?.parse().ok()?;
    let args: Vec<u64> = fields
        .take(6)
        .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16))
        .collect::<Result<_, _>>()
        .ok()?;
    Some((number, args))
}

/// A path a thread passed to a gated call, resolved as the kernel would
/// (the last component followed for the calls that follow it). For a thread
/// that has ended, an absolute path is taken as written (`..` folded); a
/// relative one cannot be placed any more.
/// `open_flags`: the call's, for an open.
pub fn resolve_path(
    tid: u32,
    dirfd: i32,
    raw: &[u8],
    operation: Operation,
    open_flags: Option<u64>,
) -> PathBuf {
    let follows = !matches!(
        operation,
        Operation::Unlink | Operation::Rmdir | Operation::Rename
    ) && open_flags.is_none_or(syscalls::open_follows);
    resolve::resolve(tid, dirfd, raw, follows)
}

enum Undecodable {
    /// The thread is gone; there is no one to answer.
    Gone,
    Unreadable(String),
}

/// The call, or None for one that touches nothing the gate guards.
fn decode(listener: &Listener, request: &ScmpNotifReq) -> Result<Option<Call>, Undecodable> {
    let number = request.data.syscall.as_raw_syscall();
    let gated = syscalls::by_number(number).ok_or_else(|| {
        Undecodable::Unreadable(format!("system call {number} is not a gated call"))
    })?;
    let args = request.data.args;
    let tid = request.pid;
    let mut operation = gated.operation;
    if gated.name == "unlinkat" && args[2] & syscalls::AT_REMOVEDIR != 0 {
        operation = Operation::Rmdir;
    }
    let mut follows = gated.follows;
    let flags = match gated.open_flags {
        Some(arg) => Some(args[arg]),
        None if gated.name == syscalls::OPENAT2 => Some(
            resolve::read_u64(tid, args[2]).map_err(|e| Undecodable::Unreadable(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(flags) = flags {
        if !syscalls::writes(flags) {
            // openat2 only (the filter checks the others): a read-only open.
            return Ok(None);
        }
        follows = syscalls::open_follows(flags);
    }
    let mut paths = Vec::with_capacity(gated.paths.len());
    for (dirfd_arg, path_arg) in gated.paths {
        let raw = resolve::read_path(tid, args[*path_arg])
            .map_err(|e| Undecodable::Unreadable(format!("reading the path: {e}")))?;
        let dirfd = dirfd_arg.map_or(syscalls::AT_FDCWD, |arg| args[arg] as i32);
        paths.push(resolve::resolve(tid, dirfd, &raw, follows));
    }
    // The call waits, so the file is as the open will find it: emptying one
    // that exists is a truncate (`: > file`), and still a write.
    let mut also = None;
    if flags.is_some_and(|f| f & libc::O_TRUNC as u64 != 0)
        && paths.first().is_some_and(|p| p.is_file())
    {
        (operation, also) = (Operation::Truncate, Some(Operation::Write));
    }
    // The reads above came from the thread that is still waiting in this call.
    if notify_id_valid(listener.fd.as_raw_fd(), request.id).is_err() {
        return Err(Undecodable::Gone);
    }
    Ok(Some(Call {
        id: request.id,
        tid,
        syscall: gated.name,
        operation,
        also,
        paths,
    }))
}
