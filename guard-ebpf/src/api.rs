//! The API-client gate: uprobes on the client libraries that still hold a
//! request in plaintext (OpenSSL and GnuTLS writes, libpq queries). Outside
//! sessions a probe costs one map lookup. In a session, what cannot be
//! destructive passes (a lone GET, HEAD or OPTIONS request that ends the
//! write; the body bytes guardd said to expect; HTTP/2 frames that carry no
//! header block or one GET's, copied to guardd; a short SELECT or SHOW); all
//! else stops with SIGSTOP before the function runs, recorded in `API_HELD`,
//! for guardd to read the request from the process's memory and judge it.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_send_signal,
        bpf_send_signal_thread, generated as gen,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use guard_common::{
    ApiConnKey, ApiHeldEntry, ApiHook, ApiWriteEvent, EventKind, FileKey, API_COOKIE_HOOK,
    API_COOKIE_POINTS, API_HTTP2, API_HTTP2_COPY, API_HTTP2_FIELDS, API_HTTP2_FRAMES, API_OPAQUE,
    API_PEEK, API_SQL_PEEK, EVENTS_BYTES, OVERFLOW_STOPS_KILLED, SESSION_TLS_FOLLOWED,
};

use crate::maps::{
    count_overflow, current_uid, emit_gate, API_CONNS, API_HELD, API_HELD_PROCS, API_POINTS,
    API_SCRATCH, EVENTS, SESSIONS,
};

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;

/// `SSL_write`, `SSL_write_ex`, `gnutls_record_send`: (connection, buffer,
/// length); Go's `(*tls.Conn).Write` the same in RAX, RBX, RCX.
#[uprobe]
pub fn api_tls_write(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, session_id)) = in_session() else {
        return 0;
    };
    let regs = unsafe { &*ctx.regs };
    let hook = hook_of(&ctx);
    // Read as they are, chosen after (see `api_sql_query`).
    let (c_abi, go_abi) = unsafe {
        (
            (
                core::ptr::read_volatile(&regs.rdi),
                core::ptr::read_volatile(&regs.rsi),
                core::ptr::read_volatile(&regs.rdx),
            ),
            (
                core::ptr::read_volatile(&regs.rax),
                core::ptr::read_volatile(&regs.rbx),
                core::ptr::read_volatile(&regs.rcx),
            ),
        )
    };
    let (conn, buf, mut len) = match hook & API_COOKIE_HOOK == ApiHook::GoTlsWrite as u32 {
        true => go_abi,
        false => c_abi,
    };
    if hook & API_COOKIE_HOOK == ApiHook::SslWrite as u32 {
        // An int: a negative one fails in OpenSSL before anything is sent.
        if len as u32 > i32::MAX as u32 {
            return 0;
        }
        len &= 0xffff_ffff;
    }
    if len == 0 {
        return 0;
    }
    let key = ApiConnKey {
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
        conn,
    };
    if tls_write_passes(&key, buf, len, session_id, hook) {
        return 0;
    }
    stop_call(session_id, hook, conn, buf, len, stack_of(&ctx));
    0
}

/// The libpq calls: the query is the second argument, or the third for the
/// two that prepare a named statement.
#[uprobe]
pub fn api_sql_query(ctx: ProbeContext) -> u32 {
    let Some((_, session_id)) = in_session() else {
        return 0;
    };
    let regs = unsafe { &*ctx.regs };
    let hook = hook_of(&ctx);
    // Both read as they are: a choice between two context fields compiles
    // to a computed context offset, which the verifier refuses.
    let (second, third) = unsafe {
        (
            core::ptr::read_volatile(&regs.rsi),
            core::ptr::read_volatile(&regs.rdx),
        )
    };
    let function = hook & API_COOKIE_HOOK;
    let query =
        if function == ApiHook::PqPrepare as u32 || function == ApiHook::PqSendPrepare as u32 {
            third
        } else {
            second
        };
    if sql_passes(query) {
        return 0;
    }
    stop_call(session_id, hook, regs.rdi, query, 0, stack_of(&ctx));
    0
}

/// glibc's `dlopen` returned a library to a session process: it stops, so
/// that guardd probes a client library the process brought along (a
/// wheel's own libpq or libssl) before any call into it.
#[uretprobe]
pub fn api_dlopen_return(ctx: RetProbeContext) -> u32 {
    let Some((_, session_id)) = in_session() else {
        return 0;
    };
    let handle: u64 = ctx.ret();
    if handle == 0 {
        return 0;
    }
    stop_call(session_id, ApiHook::Dlopen as u32, 0, 0, 0, (0, 0, 0));
    0
}

/// `SSL_new`, `gnutls_init`: a session thread makes a TLS connection. The
/// write probes trap only in the processes guardd follows (an inherited
/// perf event per thread), so one it does not follow yet stops here, before
/// the connection exists, for guardd to follow it. Followed ones pass.
#[uprobe]
pub fn api_tls_start(ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(entry) = SESSIONS.get_ptr(tid) else {
        return 0;
    };
    let (session_id, flags) = unsafe { ((*entry).session_id, (*entry).flags) };
    if flags & SESSION_TLS_FOLLOWED != 0 {
        return 0;
    }
    stop_call(session_id, hook_of(&ctx), 0, 0, 0, (0, 0, 0));
    0
}

/// `SSL_free`, `gnutls_deinit`: a connection guardd keeps state of is gone,
/// and its address may name the next one.
#[uprobe]
pub fn api_tls_free(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, session_id)) = in_session() else {
        return 0;
    };
    let conn = unsafe { (*ctx.regs).rdi };
    let pid = (pid_tgid >> 32) as u32;
    let key = ApiConnKey { pid, _pad: 0, conn };
    if API_CONNS.get_ptr(&key).is_some() && API_CONNS.remove(&key).is_ok() {
        let root = FileKey {
            dev: 0,
            _pad: 0,
            ino: conn,
        };
        emit_gate(
            EventKind::ApiConnClosed,
            pid,
            pid_tgid as u32,
            session_id,
            hook_of(&ctx),
            root,
        );
    }
    0
}

/// The caller's pid_tgid and session, when it is in one: outside sessions
/// the probes cost this one lookup.
#[inline(always)]
fn in_session() -> Option<(u64, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let entry = SESSIONS.get_ptr(pid_tgid as u32)?;
    Some((pid_tgid, unsafe { (*entry).session_id }))
}

#[inline(always)]
fn hook_of(ctx: &ProbeContext) -> u32 {
    let cookie = unsafe { gen::bpf_get_attach_cookie(ctx.regs.cast()) as u32 };
    if cookie & API_COOKIE_POINTS == 0 {
        return cookie;
    }
    // A shared event: the function's own cookie, by where it was hit. A
    // miss (guardd's map out of step) reads the call as SSL_write_ex's.
    let ip = unsafe { (*ctx.regs).rip } as u32;
    let key = (cookie & API_COOKIE_HOOK) << 12 | (ip & 0xfff);
    match unsafe { API_POINTS.get(&key) } {
        Some(own) => *own,
        None => ApiHook::SslWriteEx as u32,
    }
}

/// The stack pointer at a function's entry, the return address it points
/// at, and the probed instruction's address.
#[inline(always)]
fn stack_of(ctx: &ProbeContext) -> (u64, u64, u64) {
    let (sp, ip) = unsafe { ((*ctx.regs).rsp, (*ctx.regs).rip) };
    let ret = unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0);
    (sp, ret, ip)
}

/// Stops the calling process for guardd, the call recorded first in
/// `API_HELD` so that a lost event is still found there.
#[inline(always)]
fn stop_call(
    session_id: u32,
    hook: u32,
    conn: u64,
    buf: u64,
    len: u64,
    (sp, ret, ip): (u64, u64, u64),
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let entry = ApiHeldEntry {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        buf,
        len,
        conn,
        sp,
        ret,
        ip,
        session_id,
        pid,
        uid: current_uid(),
        hook,
    };
    let recorded = API_HELD.insert(&tid, &entry, 0).is_ok();
    // Before the stop: from here on the process is held, not only the thread.
    let _ = API_HELD_PROCS.insert(&pid, &entry.ktime_ns, 0);
    // To this thread, not the process: a process-directed SIGSTOP another
    // thread's probe already queued wakes only one thread to act on it, and
    // this one would run on past its call's start until the group stop
    // reached it (measured: the held DELETE was sent). Directed here, it is
    // taken right after the probe's single-step; it still stops the group.
    let stopped = unsafe { bpf_send_signal_thread(SIGSTOP) } == 0;
    let kind = if stopped {
        EventKind::ApiHeld
    } else {
        EventKind::ApiStopFailed
    };
    let root = FileKey::default();
    if !emit_gate(kind, pid, tid, session_id, hook, root) && !recorded {
        // Neither map nor ring buffer had room: guardd would never learn of
        // this call. It must not go out unjudged, nor stay stopped forever.
        unsafe { bpf_send_signal(SIGKILL) };
        count_overflow(OVERFLOW_STOPS_KILLED);
    }
}

/// Whether a TLS write goes on without guardd. guardd keeps an `API_CONNS`
/// entry for a connection whose request it is in the middle of (or reads
/// as another protocol): then only the body bytes it expects pass, and
/// never a write that starts like a request line; on HTTP/2, writes of
/// frames without header blocks. With no entry the connection is between
/// requests: a lone GET, HEAD or OPTIONS passes.
#[inline(always)]
fn tls_write_passes(key: &ApiConnKey, buf: u64, len: u64, session_id: u32, hook: u32) -> bool {
    let Ok(first) = (unsafe { bpf_probe_read_user(buf as *const u8) }) else {
        return false;
    };
    match API_CONNS.get_ptr_mut(key) {
        Some(left) => {
            if first.is_ascii_uppercase() {
                return false;
            }
            let allowed = unsafe { *left };
            if allowed == API_OPAQUE {
                return true;
            }
            if allowed == API_HTTP2 {
                return http2_write_passes(key, buf, len, session_id, hook);
            }
            if allowed < len {
                return false;
            }
            unsafe { *left = allowed - len };
            true
        }
        None => is_lone_safe_request(buf, len),
    }
}

const HTTP2_HEADERS: u8 = 0x1;
const HTTP2_END_HEADERS: u8 = 0x4;
const HTTP2_PADDED: u8 = 0x8;
const HTTP2_PRIORITY: u8 = 0x20;
const COPY_MASK: u64 = API_HTTP2_COPY as u64 - 1;

/// Whether an HTTP/2 write goes on without guardd: it is whole frames (it
/// starts and ends at a frame's edge, so that the kernel keeps no position
/// in the frame sequence that two threads' writes could put out of step),
/// and the only header block among them, if any, is one whole HEADERS
/// frame of a GET. guardd must read every header block, in order, to keep
/// the connection's HPACK table: such a write is copied to it first.
#[inline(always)]
fn http2_write_passes(key: &ApiConnKey, buf: u64, len: u64, session_id: u32, hook: u32) -> bool {
    let mut at: u64 = 0;
    let mut frames = 0;
    // Where the header block is: (payload offset, length); offset 0: none.
    let (mut block_at, mut block_len) = (0u64, 0u64);
    while frames < API_HTTP2_FRAMES {
        if at == len {
            break;
        }
        if at + 9 > len {
            return false;
        }
        // Length (24 bits, big-endian), type, flags.
        let Ok(head) = (unsafe { bpf_probe_read_user((buf + at) as *const [u8; 5]) }) else {
            return false;
        };
        let length = u64::from(head[0]) << 16 | u64::from(head[1]) << 8 | u64::from(head[2]);
        if matches!(head[3], 0x1 | 0x5 | 0x9) {
            let whole = head[3] == HTTP2_HEADERS
                && head[4] & HTTP2_END_HEADERS != 0
                && head[4] & (HTTP2_PADDED | HTTP2_PRIORITY) == 0;
            if !whole || block_at != 0 {
                return false;
            }
            (block_at, block_len) = (at + 9, length);
        }
        at += 9 + length;
        frames += 1;
    }
    if at != len {
        return false;
    }
    if block_at == 0 {
        return true;
    }
    copied_get(key, buf, len, (block_at, block_len), session_id, hook)
}

/// Copies a write with a header block to guardd if the block is a GET's;
/// whether it did.
#[inline(always)]
fn copied_get(
    key: &ApiConnKey,
    buf: u64,
    len: u64,
    block: (u64, u64),
    session_id: u32,
    hook: u32,
) -> bool {
    if len > API_HTTP2_COPY as u64 {
        return false;
    }
    // No room: it stops instead, and guardd reads it there.
    let Some(mut entry) = EVENTS.reserve::<ApiWriteEvent>(0) else {
        return false;
    };
    let write = entry.as_mut_ptr();
    let bytes = unsafe { &mut (*write).bytes };
    let read = unsafe {
        gen::bpf_probe_read_user(
            bytes.as_mut_ptr().cast(),
            (len & COPY_MASK) as u32,
            buf as *const core::ffi::c_void,
        )
    };
    // `len & COPY_MASK` is the length only below the copy's size.
    if read != 0 || len == API_HTTP2_COPY as u64 || !block_is_a_get(bytes, block) {
        entry.discard(0);
        return false;
    }
    unsafe {
        let event = &mut (*write).event;
        event.ktime_ns = bpf_ktime_get_ns();
        event.kind = EventKind::ApiHttp2Passed as u32;
        event.pid = key.pid;
        event.session_id = session_id;
        event.uid = current_uid();
        event.comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or_default();
        event.tid = bpf_get_current_pid_tgid() as u32;
        event.op = hook;
        event.root = FileKey {
            dev: 0,
            _pad: 0,
            ino: key.conn,
        };
        (*write).buf = buf;
        (*write).len = len;
    }
    // guardd needs it before the connection's next stop, whose event wakes
    // it and is read after this: no wake-up of its own, but while the ring
    // fills, so that it keeps room for stops.
    let filling = EVENTS.query(BPF_RB_AVAIL_DATA as u64) > u64::from(EVENTS_BYTES / 4);
    entry.submit(match filling {
        true => BPF_RB_FORCE_WAKEUP as u64,
        false => BPF_RB_NO_WAKEUP as u64,
    });
    true
}

/// Whether one of the first fields of an HPACK header block is `:method:
/// GET` as the static table's index 2 (all an encoder sends for GET; Go and
/// nghttp2 send the pseudo-header fields first, `:authority` or `:method`
/// leading). A request that names a method twice is malformed (RFC 9113,
/// 8.3) and servers refuse it, so no other `:method` further on (from the
/// connection's dynamic table, which the kernel does not know, or a
/// literal) can make this GET something else.
#[inline(always)]
fn block_is_a_get(bytes: &[u8; API_HTTP2_COPY], (start, len): (u64, u64)) -> bool {
    let end = start + len;
    let mut at = start;
    let mut fields = 0;
    while fields < API_HTTP2_FIELDS {
        if at >= end {
            return false;
        }
        let first = bytes[(at & COPY_MASK) as usize];
        if first == 0x82 {
            return true;
        }
        let next = if first & 0x80 != 0 {
            hpack_integer(bytes, at, 0x7f).map(|(_, next)| next)
        } else if first & 0xe0 == 0x20 {
            // A table size update.
            hpack_integer(bytes, at, 0x1f).map(|(_, next)| next)
        } else {
            // A literal, after its name's index (0: a literal name first).
            let prefix = if first & 0x40 != 0 { 0x3f } else { 0x0f };
            match hpack_integer(bytes, at, prefix) {
                Some((0, next)) => {
                    hpack_skip_string(bytes, next).and_then(|at| hpack_skip_string(bytes, at))
                }
                Some((_, next)) => hpack_skip_string(bytes, next),
                None => None,
            }
        };
        let Some(next) = next else {
            return false;
        };
        at = next;
        fields += 1;
    }
    false
}

/// An HPACK integer with a `prefix`-bit mask at `at`: its value and where
/// what follows it starts. Up to three continuation bytes.
#[inline(always)]
fn hpack_integer(bytes: &[u8; API_HTTP2_COPY], at: u64, prefix: u8) -> Option<(u64, u64)> {
    let mut value = u64::from(bytes[(at & COPY_MASK) as usize] & prefix);
    let mut at = at + 1;
    if value < u64::from(prefix) {
        return Some((value, at));
    }
    let mut shift = 0;
    while shift < 21 {
        let byte = bytes[(at & COPY_MASK) as usize];
        at += 1;
        value += u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
        shift += 7;
    }
    None
}

/// Where an HPACK string at `at` (a Huffman bit and a 7-bit-prefix length,
/// then the bytes) ends.
#[inline(always)]
fn hpack_skip_string(bytes: &[u8; API_HTTP2_COPY], at: u64) -> Option<u64> {
    let (length, next) = hpack_integer(bytes, at, 0x7f)?;
    Some(next + length)
}

/// A write holding exactly one request head whose method cannot change
/// anything (`GET `, `HEAD `, `OPTIONS `) and nothing after its blank line:
/// a second request pipelined behind it, or a body, stops.
#[inline(always)]
fn is_lone_safe_request(buf: u64, len: u64) -> bool {
    if len > API_PEEK as u64 || len < 16 {
        return false;
    }
    let Some(scratch) = API_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let scratch = unsafe { &mut *scratch };
    let size = len as u32;
    if size > API_PEEK as u32 {
        return false;
    }
    let read = unsafe {
        gen::bpf_probe_read_user(
            scratch.as_mut_ptr().cast(),
            size,
            buf as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        return false;
    }
    let head = u64::from_le_bytes([
        scratch[0], scratch[1], scratch[2], scratch[3], scratch[4], scratch[5], scratch[6],
        scratch[7],
    ]);
    let safe_method = head & 0xffff_ffff == u64::from(u32::from_le_bytes(*b"GET "))
        || head & 0xff_ffff_ffff == u64::from_le_bytes(*b"HEAD \0\0\0")
        || head == u64::from_le_bytes(*b"OPTIONS ");
    if !safe_method {
        return false;
    }
    head_ends_at_the_end(scratch, len)
}

/// Whether the first empty line of `scratch[..len]`, which ends a request
/// head, ends exactly at `len`. Servers take a bare LF as a line end, so
/// `\n\n` ends a head as `\n\r\n` does: `GET / HTTP/1.1\n\nDELETE ...` is
/// two requests. Word by word: only a word holding a `\n` is looked into.
#[inline(always)]
fn head_ends_at_the_end(scratch: &[u8; API_PEEK], len: u64) -> bool {
    // The three bytes before the next one, the latest lowest.
    let mut window: u32 = 0;
    let mut at: usize = 0;
    while at + 8 <= API_PEEK {
        if at as u64 >= len {
            return false;
        }
        // Aligned: map values are, and `at` steps by 8.
        let word = unsafe { *(scratch.as_ptr().add(at) as *const u64) };
        let newlines = word ^ 0x0a0a_0a0a_0a0a_0a0a;
        let has_newline =
            newlines.wrapping_sub(0x0101_0101_0101_0101) & !newlines & 0x8080_8080_8080_8080 != 0;
        if has_newline {
            let mut k = 0;
            while k < 8 {
                let byte = (word >> (8 * k)) as u8;
                if byte == b'\n' && (window & 0xff == 0x0a || window & 0xffff == 0x0a0d) {
                    return (at + k) as u64 + 1 == len;
                }
                if (at + k) as u64 + 1 >= len && byte == b'\n' {
                    return false;
                }
                window = (window << 8 | u32::from(byte)) & 0x00ff_ffff;
                k += 1;
            }
        } else {
            window = (word >> 40) as u32;
            window = (window & 0xff) << 16 | (window >> 8 & 0xff) << 8 | window >> 16;
        }
        at += 8;
    }
    false
}

/// A query that is one SELECT or SHOW statement, short enough to be read
/// whole: no `;` but a last one. Anything else stops, for guardd's SQL
/// classifier.
#[inline(always)]
fn sql_passes(query: u64) -> bool {
    let Some(scratch) = API_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let scratch = unsafe { &mut *scratch };
    let read = unsafe {
        gen::bpf_probe_read_user_str(
            scratch.as_mut_ptr().cast(),
            API_SQL_PEEK as u32,
            query as *const core::ffi::c_void,
        )
    };
    // The length with its NUL; a string cut at the peek is not read whole.
    if read <= 1 || read >= API_SQL_PEEK as i64 {
        return false;
    }
    let len = read as usize - 1;
    // One flag of state per step: more (where the last `;` was, where the
    // text ended) multiplies the paths past the verifier's limit.
    let mut start = 0usize;
    while start < 32 {
        if start >= len || !scratch[start].is_ascii_whitespace() {
            break;
        }
        start += 1;
    }
    if start >= 32 {
        return false;
    }
    let mut after_semicolon = false;
    let mut i = 0usize;
    while i < API_SQL_PEEK {
        if i >= len {
            break;
        }
        let byte = scratch[i];
        if after_semicolon && !byte.is_ascii_whitespace() {
            return false;
        }
        if byte == b';' {
            after_semicolon = true;
        }
        i += 1;
    }
    let mut word: u64 = 0;
    let mut shift = 0;
    let mut at = start;
    while shift < 56 {
        let byte = scratch[at & (API_PEEK - 1)] & !0x20;
        word |= u64::from(byte) << shift;
        shift += 8;
        at += 1;
    }
    let after_select = scratch[(start + 6) & (API_PEEK - 1)];
    let after_show = scratch[(start + 4) & (API_PEEK - 1)];
    (word & 0xffff_ffff_ffff == u64::from_le_bytes(*b"SELECT\0\0") && ends_word(after_select))
        || (word & 0xffff_ffff == u64::from(u32::from_le_bytes(*b"SHOW")) && ends_word(after_show))
}

/// Whether `byte` ends an SQL keyword. A function, not a closure: one that is
/// not inlined becomes a BPF function the 6.1 verifier refuses.
#[inline(always)]
fn ends_word(byte: u8) -> bool {
    !byte.is_ascii_alphanumeric() && byte != b'_'
}
