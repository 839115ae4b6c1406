//! How an API stop ends: the call goes on, or returns its error unsent,
//! and the process runs on. SIGSTOP and SIGCONT act on a whole process, so
//! the other threads stopped at their own calls are kept stopped first, and
//! a held thread that is no longer at its call's start ends its process.
use std::time::{Duration, Instant};

use guard_common::{ApiHeldEntry, ApiHook};

use super::{hook_of, Guard};
use crate::{
    api::memory::mark_closed, holds::ApiStopped, process::ProcessHandle, procfs, tracer::FailCall,
};

impl Guard {
    /// A denied call that cannot be kept from running: its process goes.
    fn kill_denied(&mut self, process: &ProcessHandle, stopped: &ApiStopped, why: &str) {
        tracing::error!(
            tid = stopped.tid,
            "a denied API call: {why}: killing its process"
        );
        let _ = process.kill();
        self.kernel
            .forget_api_held(stopped.tid, stopped.entry.ktime_ns);
    }

    /// Lets the call go on, or makes it return its error value unsent; then
    /// the process runs on either way. Without ptrace the thread cannot be
    /// made to return: a refused call's process is killed (and said so).
    pub(in crate::guard) fn answer_api_call(
        &mut self,
        process: &ProcessHandle,
        stopped: &ApiStopped,
        allowed: bool,
    ) {
        let tid = stopped.tid;
        // Seized before it is refused: a denial by the policy (no hold, so
        // not traced yet) is checked for the thread's place as a hold is.
        let traced = stopped.traced || (!allowed && self.tracer.seize(tid).is_ok());
        if !allowed && self.at_call_start(stopped, traced).is_err() {
            return self.kill_denied(process, stopped, "its thread left its call's start");
        }
        if !allowed {
            // OpenSSL and Go refuse the write themselves once their
            // connection is marked closed; elsewhere the thread returns the
            // function's error. A Go function cannot be made to return one.
            let hook = hook_of(&stopped.entry);
            let go = hook == Some(ApiHook::GoTlsWrite);
            let marks_closed = go
                || matches!(
                    hook,
                    Some(ApiHook::SslWrite | ApiHook::SslWriteEx | ApiHook::SslWriteInternal)
                );
            let shut = marks_closed
                && mark_closed(&stopped.entry)
                    .inspect_err(|err| tracing::warn!(tid, "connection not marked closed: {err}"))
                    .is_ok();
            let failed = shut
                || (traced
                    && !go
                    && self
                        .tracer
                        .fail_call(tid, fail_call(&stopped.entry))
                        .inspect_err(|err| tracing::error!(tid, "failing the call: {err}"))
                        .is_ok());
            if !failed {
                return self.kill_denied(process, stopped, "it could not be failed");
            }
            if traced {
                let _ = self.tracer.detach(tid);
            }
        } else if stopped.traced {
            if let Err(err) = self.tracer.detach(tid) {
                tracing::error!(tid, "ptrace detach failed: {err}");
            }
        }
        self.kernel.forget_api_held(tid, stopped.entry.ktime_ns);
        if stopped.held || !allowed {
            self.api
                .decided
                .insert(stopped.retry_key.clone(), (allowed, Instant::now()));
        }
        self.keep_other_stops(process.pid, tid);
        if let Err(err) = process.resume() {
            tracing::error!(pid = process.pid, "resume failed: {err}");
        }
    }

    /// A thread held in ptrace-stop must still be at its call's start: on
    /// the probed instruction or the one after it (x86 instructions are
    /// at most 15 bytes). Anywhere else its call may be under way.
    pub(super) fn at_call_start(&self, stopped: &ApiStopped, traced: bool) -> Result<(), String> {
        if !traced || stopped.entry.ip == 0 {
            return Ok(());
        }
        let ip = self.tracer.ip(stopped.tid).map_err(|err| {
            format!(
                "the registers of thread {} are not readable: {err}",
                stopped.tid
            )
        })?;
        let start = stopped.entry.ip;
        if (start..=start + 15).contains(&ip) {
            return Ok(());
        }
        Err(format!(
            "thread {} stopped at {ip:#x}, past the start of its call at {start:#x}: the call may \
             be under way",
            stopped.tid
        ))
    }

    /// SIGSTOP stops a whole process, and SIGCONT continues all of it: a
    /// second thread stopped at its own call, whose event guardd has not
    /// handled yet, would go on unjudged. Each such thread is taken into
    /// ptrace-stop first (SIGCONT does not wake it), and let go by its own
    /// decision. One that cannot be seized ends the process (fail closed).
    pub(super) fn keep_other_stops(&mut self, pid: u32, tid: u32) {
        let others: Vec<u32> = self
            .kernel
            .api_held_all()
            .into_iter()
            .filter(|(other, entry)| {
                entry.pid == pid
                    && *other != tid
                    && !self.api.seized.contains(other)
                    && !self.holds.holds_api_stop(*other, entry.ktime_ns)
            })
            .map(|(other, _)| other)
            .collect();
        for other in others {
            // Seized while still on its way into the stop (its own SIGSTOP
            // waits out the probe's single-step), a thread loses that
            // SIGSTOP to the SIGCONT below and runs on past its call's
            // start before the ptrace interrupt lands: measured, the
            // denied write was sent. So it is seized only once stopped.
            let stopped = wait_stopped(other);
            match stopped.and_then(|()| self.tracer.seize(other)) {
                Ok(()) => {
                    tracing::debug!(pid, other, "kept a stopped call's thread in ptrace-stop");
                    self.api.seized.insert(other);
                }
                Err(err) => {
                    tracing::error!(pid, other, "a stopped call's thread cannot be kept: {err}");
                    if let Ok(process) = ProcessHandle::open(pid) {
                        let why = format!(
                            "thread {other} stopped at a client call could not be kept stopped \
                             ({err}) while another thread went on"
                        );
                        let session = self.kernel.api_held(other).map_or(0, |e| e.session_id);
                        self.fail_closed(&process, session, &why, None);
                    }
                }
            }
        }
    }
}

/// Waits (up to 100 ms) for thread `tid` to be stopped.
fn wait_stopped(tid: u32) -> Result<(), nix::errno::Errno> {
    for _ in 0..1000 {
        match procfs::stat(tid) {
            Ok(stat) if stat.is_stopped() => return Ok(()),
            Ok(_) => std::thread::sleep(Duration::from_micros(100)),
            Err(_) => return Err(nix::errno::Errno::ESRCH),
        }
    }
    Err(nix::errno::Errno::ETIMEDOUT)
}

/// Where a denied call returns to, and with what: the function's own error.
fn fail_call(entry: &ApiHeldEntry) -> FailCall {
    let value = match hook_of(entry) {
        Some(ApiHook::SslWrite) => -1i64 as u64,
        // GNUTLS_E_PUSH_ERROR: the transport refused the write.
        Some(ApiHook::GnutlsRecordSend) => -53i64 as u64,
        // SSL_write_ex's and PQsend*'s failure; PQexec's NULL.
        _ => 0,
    };
    FailCall {
        ret: entry.ret,
        sp: entry.sp + 8,
        value,
    }
}
