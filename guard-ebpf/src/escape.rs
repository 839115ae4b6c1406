//! The escape check on connects, for sessions whose launcher filter does not
//! carry it (detected sessions, chiefly): a session process's connect to a
//! unix stream socket whose listener is outside its session is held like a
//! gated call (`gate::hold`), keyed by the socket's file. guardd reads the
//! stopped call's address, and lets it through at once unless the socket is
//! a terminal multiplexer's, a service manager's or a D-Bus session bus
//! (`guard-daemon/src/gate/outside.rs`); its decision in `GATE_DECIDED`
//! answers the restarted call and that process's later connects there.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};
use guard_common::{FileKey, ESCAPE_CONNECT, SESSION_ESCAPE_FILTER, SETTING_ESCAPE_DENY};

use crate::{
    gate::{dentry_key, hold, peek},
    maps::{SESSIONS, SETTINGS},
    self_protect::off,
};

/// `unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk)`
#[lsm(hook = "unix_stream_connect")]
pub fn escape_unix_stream_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(session) = SESSIONS.get_ptr(tid) else {
        return 0;
    };
    let session = unsafe { *session };
    if session.flags & SESSION_ESCAPE_FILTER != 0 {
        return 0;
    }
    if !SETTINGS
        .get(0)
        .is_some_and(|s| s & SETTING_ESCAPE_DENY != 0)
    {
        return 0;
    }
    let o = off();
    let other: *const u8 = ctx.arg(1);
    // The listener's process (set by listen(2)); zero when unreadable, which
    // no session has: such a server is judged by guardd.
    let peer_pid: *const u8 = peek(other, o.sock_peer_pid);
    let server: u32 = if peer_pid.is_null() {
        0
    } else {
        peek(peer_pid, o.pid_nr)
    };
    if server != 0 {
        if let Some(theirs) = SESSIONS.get_ptr(server) {
            if unsafe { (*theirs).session_id } == session.session_id {
                return 0;
            }
        }
    }
    let dentry: *const u8 = peek(other, o.unix_dentry);
    let key = if dentry.is_null() {
        // An abstract name has no file: the socket itself stands for it.
        FileKey {
            dev: 0,
            _pad: 0,
            ino: other as u64,
        }
    } else {
        dentry_key(dentry, &o)
    };
    let pid = (pid_tgid >> 32) as u32;
    hold(pid, tid, session.session_id, ESCAPE_CONNECT, key)
}
