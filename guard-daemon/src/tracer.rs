//! Holds that only guardd can release. A process the exec gate stopped can be
//! resumed by anyone allowed to signal it (the agent runs as the same user).
//! Taken into ptrace-stop (PTRACE_SEIZE + PTRACE_INTERRUPT), it is not woken
//! by a SIGCONT from others, and no one else can attach to it.
//!
//! ptrace requests must come from the thread that attached, so one thread
//! owns every traced process; it also reaps their exits, which the real parent
//! only sees after the tracer has (without that, the agent's shell would wait
//! forever on a denied command).
use std::{
    collections::HashMap,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread,
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::{
        ptrace,
        signal::Signal,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

/// How often the tracer thread looks for exits and signals of its tracees.
const POLL: Duration = Duration::from_millis(20);

enum Command {
    Seize(u32, Sender<Result<(), Errno>>),
    /// Detach (passing on signals others sent meanwhile); the caller then sends SIGCONT.
    Detach(u32, Sender<Result<(), Errno>>),
    /// Kill while still traced, then reap, so the process never runs.
    Kill(u32, Sender<()>),
    /// Make a traced thread return from the function it is stopped in.
    FailCall(u32, FailCall, Sender<Result<(), Errno>>),
    /// Where a traced thread is: its instruction pointer.
    Ip(u32, Sender<Result<u64, Errno>>),
}

/// A return the thread did not make: to `ret`, with the stack pointer the
/// caller had after it (`sp`) and `value` as the function's result.
#[derive(Debug, Clone, Copy)]
pub struct FailCall {
    pub ret: u64,
    pub sp: u64,
    pub value: u64,
}

/// Handle to the tracer thread.
#[derive(Clone)]
pub struct Tracer {
    commands: Sender<Command>,
}

impl Tracer {
    pub fn start() -> std::io::Result<Self> {
        let (commands, receiver) = mpsc::channel();
        thread::Builder::new()
            .name("tracer".into())
            .spawn(move || run(receiver))?;
        Ok(Self { commands })
    }

    /// Takes a stopped process into ptrace-stop. Fails when it is already
    /// traced by someone else, or ptrace is not allowed here.
    pub fn seize(&self, pid: u32) -> Result<(), Errno> {
        self.ask(|reply| Command::Seize(pid, reply))
            .unwrap_or(Err(Errno::ESRCH))
    }

    /// Lets go of a process; it stays stopped until it gets SIGCONT.
    pub fn detach(&self, pid: u32) -> Result<(), Errno> {
        self.ask(|reply| Command::Detach(pid, reply))
            .unwrap_or(Err(Errno::ESRCH))
    }

    /// Makes a thread held in ptrace-stop (seized before) return from the
    /// function it was stopped at the entry of, as `call` says, so that a
    /// denied client call fails without the process being killed.
    pub fn fail_call(&self, tid: u32, call: FailCall) -> Result<(), Errno> {
        self.ask(|reply| Command::FailCall(tid, call, reply))
            .unwrap_or(Err(Errno::ESRCH))
    }

    /// The instruction pointer of a thread held in ptrace-stop.
    pub fn ip(&self, tid: u32) -> Result<u64, Errno> {
        self.ask(|reply| Command::Ip(tid, reply))
            .unwrap_or(Err(Errno::ESRCH))
    }

    /// Kills a traced process and reaps the ptrace side of its exit.
    pub fn kill(&self, pid: u32) {
        let _ = self.ask(|reply| Command::Kill(pid, reply));
    }

    fn ask<T>(&self, command: impl FnOnce(Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = mpsc::channel();
        self.commands.send(command(reply)).ok()?;
        answer.recv().ok()
    }
}

fn run(commands: Receiver<Command>) {
    // Signals others sent to a tracee while it was held, passed on at detach.
    let mut pending: HashMap<Pid, Option<Signal>> = HashMap::new();
    loop {
        match commands.recv_timeout(POLL) {
            Ok(Command::Seize(pid, reply)) => {
                let pid = Pid::from_raw(pid as i32);
                let result = ptrace::seize(pid, ptrace::Options::empty())
                    .and_then(|()| ptrace::interrupt(pid));
                if result.is_ok() {
                    pending.insert(pid, None);
                }
                let _ = reply.send(result);
            }
            Ok(Command::Detach(pid, reply)) => {
                let pid = Pid::from_raw(pid as i32);
                drain(&mut pending);
                let signal = pending.remove(&pid).flatten();
                // PTRACE_DETACH needs the tracee in ptrace-stop; it is, until we resume it.
                let _ = reply.send(ptrace::detach(pid, signal));
            }
            Ok(Command::Kill(pid, reply)) => {
                let raw = Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(raw, Signal::SIGKILL);
                if pending.remove(&raw).is_some() {
                    // Reap our side of the exit so the real parent is told.
                    let _ = waitpid(raw, Some(WaitPidFlag::__WALL));
                }
                let _ = reply.send(());
            }
            Ok(Command::FailCall(tid, call, reply)) => {
                let tid = Pid::from_raw(tid as i32);
                drain(&mut pending);
                let _ = reply.send(set_return(tid, call));
            }
            Ok(Command::Ip(tid, reply)) => {
                let tid = Pid::from_raw(tid as i32);
                drain(&mut pending);
                let _ = reply.send(registers(tid).map(|regs| regs.rip));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        drain(&mut pending);
    }
}

/// Sets the registers of `tid` for `call`. The interrupt after the seize
/// takes a moment to reach ptrace-stop; until then the registers are not
/// ours to read (ESRCH).
fn set_return(tid: Pid, call: FailCall) -> Result<(), Errno> {
    let mut regs = registers(tid)?;
    regs.rip = call.ret;
    regs.rsp = call.sp;
    regs.rax = call.value;
    ptrace::setregs(tid, regs)
}

/// The registers of `tid`, once it is in ptrace-stop.
fn registers(tid: Pid) -> Result<libc::user_regs_struct, Errno> {
    for _ in 0..200 {
        match ptrace::getregs(tid) {
            Err(Errno::ESRCH) => thread::sleep(Duration::from_millis(1)),
            done => return done,
        }
    }
    Err(Errno::ESRCH)
}

/// Handles every waiting tracee event without blocking: exits are reaped,
/// signal-delivery stops are kept (the tracee stays held) and remembered.
fn drain(pending: &mut HashMap<Pid, Option<Signal>>) {
    if pending.is_empty() {
        return;
    }
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => {
                pending.remove(&pid);
            }
            Ok(WaitStatus::Stopped(pid, Signal::SIGSTOP)) if pending.contains_key(&pid) => {
                // The exec gate's own SIGSTOP, taken only after the seize: as a
                // signal-delivery stop it leaves no group-stop behind, and the
                // process would run as soon as the tracer is gone (a crash).
                // Delivered, it becomes a group-stop (reported as
                // PTRACE_EVENT_STOP, and still a ptrace-stop): no user code runs.
                let _ = ptrace::cont(pid, Signal::SIGSTOP);
            }
            Ok(WaitStatus::Stopped(pid, signal)) => {
                // A signal someone sent to the held process: not delivered now
                // (that would resume it); SIGCONT/SIGSTOP are dropped, others kept.
                if !matches!(
                    signal,
                    Signal::SIGCONT
                        | Signal::SIGSTOP
                        | Signal::SIGTSTP
                        | Signal::SIGTTIN
                        | Signal::SIGTTOU
                ) {
                    if let Some(slot) = pending.get_mut(&pid) {
                        *slot = Some(signal);
                    }
                }
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
