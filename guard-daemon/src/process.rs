//! A handle on one process that cannot be confused with a later process that
//! reuses its pid: signals go through a pidfd opened while the process was
//! known to be the stopped one, and its start time is kept for checks.
use std::os::fd::{AsFd as _, OwnedFd};

use rustix::process::{
    pidfd_getfd, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, PidfdGetfdFlags, Signal,
};

use crate::{kernel::Continuation, procfs};

#[derive(Debug)]
pub struct ProcessHandle {
    pub pid: u32,
    pub start_time: u64,
    pidfd: OwnedFd,
}

/// A pidfd on a process whose start time is not read yet: enough to let a
/// stopped process run on (the common case, one /proc read fewer), not to
/// keep it in a hold.
#[derive(Debug)]
pub struct Pidfd {
    pid: u32,
    fd: OwnedFd,
}

impl Pidfd {
    /// Fails when the process is gone.
    pub fn open(pid: u32) -> std::io::Result<Self> {
        let raw = Pid::from_raw(pid as i32)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid 0"))?;
        Ok(Self {
            pid,
            fd: pidfd_open(raw, PidfdFlags::empty())?,
        })
    }

    /// Lets a stopped process run on.
    pub fn resume(&self) -> std::io::Result<()> {
        send(&self.fd, Signal::CONT)
    }

    pub fn kill(&self) -> std::io::Result<()> {
        send(&self.fd, Signal::KILL)
    }

    /// A handle with the start time, read after the pidfd was opened: if the
    /// pid was reused in between, this is the new process's and the pidfd
    /// refers to it too.
    pub fn identify(self) -> std::io::Result<ProcessHandle> {
        let start_time = procfs::stat(self.pid)?.start_time;
        Ok(ProcessHandle {
            pid: self.pid,
            start_time,
            pidfd: self.fd,
        })
    }
}

impl ProcessHandle {
    /// Opens a handle; fails when the process is gone.
    pub fn open(pid: u32) -> std::io::Result<Self> {
        Pidfd::open(pid)?.identify()
    }

    /// Lets a stopped process run on.
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal(Signal::CONT)
    }

    /// Stops the process (again): a SIGCONT that came while it was in
    /// ptrace-stop would let it run once its tracer lets go.
    pub fn stop(&self) -> std::io::Result<()> {
        self.signal(Signal::STOP)
    }

    /// Ends the process. A process killed while stopped at its first
    /// instruction never ran any of its own code.
    pub fn kill(&self) -> std::io::Result<()> {
        self.signal(Signal::KILL)
    }

    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        send(&self.pidfd, signal)
    }

    /// Whether the process still runs (or is stopped) as the same process.
    pub fn is_alive(&self) -> bool {
        matches!(procfs::stat(self.pid), Ok(stat) if stat.start_time == self.start_time && stat.state != 'Z' && stat.state != 'X')
    }

    /// A duplicate of one of the process's file descriptors (the same open file,
    /// without reopening its path).
    pub fn dup_fd(&self, fd: i32) -> std::io::Result<OwnedFd> {
        Ok(pidfd_getfd(
            self.pidfd.as_fd(),
            fd,
            PidfdGetfdFlags::empty(),
        )?)
    }
}

fn send(pidfd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
    match pidfd_send_signal(pidfd.as_fd(), signal) {
        // ESRCH: already gone, which is what a kill wants and moot for a resume.
        Err(rustix::io::Errno::SRCH) => Ok(()),
        other => other.map_err(Into::into),
    }
}

/// A process the kernel recorded as stopped at exec, looked at again after a
/// gap (guardd's restart, a lost event, a teardown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Still stopped, and nobody else sent it SIGCONT: still held.
    Held,
    /// Running, and nobody else sent it SIGCONT: guardd let it go and ended
    /// before it forgot the stop. Neither to be held nor ended again.
    LetGo,
    /// Another process (or the kernel) sent it SIGCONT: it ran without a
    /// decision, even if something stopped it again since. (A SIGCONT that
    /// came while guardd held it in ptrace-stop took effect when guardd
    /// ended; a guardd that stops cleanly stops it again and drops the mark.)
    Continued(Continuation),
}

impl Recorded {
    pub fn of(stat: &procfs::Stat, continued: Option<Continuation>) -> Self {
        match (continued, stat.is_stopped()) {
            (Some(continuation), _) => Self::Continued(continuation),
            (None, true) => Self::Held,
            (None, false) => Self::LetGo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(state: char) -> procfs::Stat {
        procfs::Stat {
            comm: "terraform".into(),
            state,
            ppid: 1,
            tty_nr: 0,
            start_time: 7,
        }
    }

    #[test]
    fn a_recorded_stop_is_held_only_while_stopped_and_never_continued_by_another() {
        let other = Continuation {
            by: 42,
            from_kernel: false,
        };
        for state in ['T', 't'] {
            assert_eq!(Recorded::of(&stat(state), None), Recorded::Held);
            assert_eq!(
                Recorded::of(&stat(state), Some(other)),
                Recorded::Continued(other)
            );
        }
        for state in ['R', 'S', 'D'] {
            assert_eq!(Recorded::of(&stat(state), None), Recorded::LetGo);
            assert_eq!(
                Recorded::of(&stat(state), Some(other)),
                Recorded::Continued(other)
            );
        }
    }
}
