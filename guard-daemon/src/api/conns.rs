//! What guardd knows of each TLS connection of a session process, so that a
//! request is read whole however the client splits it across writes: a head
//! over several writes, a body after its head, pipelined requests, the same
//! write retried after OpenSSL asked for it again, HTTP/2 from its preface
//! on (`http2`), and bytes of another protocol. The kernel keeps the
//! matching entry in `API_CONNS`: with none, the connection is between
//! requests; with one, only the body bytes guardd expects pass without a
//! stop, or, on HTTP/2, only whole frames that carry no header block.
use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
};

use super::{
    aws::{self, Aws},
    http::{self, Request, Tail},
    http2::{self, PREFACE},
};
use crate::policy::api::{ApiCall, HttpCall};

/// Bytes of one write guardd reads from the process.
pub const READ_LIMIT: usize = 256 * 1024;
/// An unfinished request kept longer than this is judged unreadable.
const PENDING_LIMIT: usize = 1024 * 1024;

/// What the kernel is to do with the connection's next writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelConn {
    /// Between requests: no entry.
    Forget,
    /// This many body bytes pass; then every write stops.
    Expect(u64),
    /// Every write stops (guardd is in the middle of a request).
    Stop,
    /// Another protocol: writes pass unless they start like a request line.
    Opaque,
    /// HTTP/2: writes of whole frames without a header block pass.
    Http2,
}

/// What one write holds.
#[derive(Debug, Default, Clone)]
pub struct WriteRead {
    /// The calls whose request this write completes (or whose head suffices).
    pub calls: Vec<ApiCall>,
    /// Why part of it could not be read (then it is held, never let through).
    pub unreadable: Option<String>,
    pub kernel: Option<KernelConn>,
}

#[derive(Debug, Clone)]
enum State {
    /// An unfinished request: its bytes so far; `judged` when its call was
    /// judged already (a chunked body read to its end).
    Pending {
        bytes: Vec<u8>,
        judged: bool,
    },
    Opaque,
}

/// The write before, to know it when OpenSSL has it written again.
struct LastWrite {
    buf: u64,
    digest: u64,
    before: Option<State>,
}

/// An HTTP/2 connection and what its last write held, to know that write
/// when OpenSSL has it written again (its header blocks are read once).
struct Http2 {
    connection: http2::Connection,
    last: Option<(u64, u64, WriteRead)>,
}

type Key = (u32, u64);

#[derive(Default)]
pub struct Conns {
    states: HashMap<Key, State>,
    last: HashMap<Key, LastWrite>,
    http2: HashMap<Key, Http2>,
}

impl Conns {
    /// Reads one stopped write of `bytes` at `buf` (`unread`: bytes of it
    /// past what was read) on connection `conn` of process `pid`.
    pub fn read_write(
        &mut self,
        pid: u32,
        conn: u64,
        buf: u64,
        bytes: &[u8],
        unread: u64,
    ) -> WriteRead {
        let key = (pid, conn);
        let digest = digest(bytes, unread);
        if bytes.starts_with(PREFACE) {
            // A new connection at the address of one gone (Go's have no
            // free to tell): mid-connection, a server takes these bytes
            // for a broken frame and closes.
            self.http2.remove(&key);
        }
        if let Some(http2) = self.http2.get_mut(&key) {
            return http2.read_write(buf, digest, bytes, unread);
        }
        let mut before = self.states.remove(&key);
        // A write that failed (the handshake was not done) is retried with
        // the same buffer: read it again from where the first try started.
        if let Some(last) = self.last.get(&key) {
            if last.buf == buf && last.digest == digest {
                before = last.before.clone();
            }
        }
        let (data, judged, opaque) = match &before {
            Some(State::Pending {
                bytes: pending,
                judged,
            }) => ([pending.as_slice(), bytes].concat(), *judged, false),
            Some(State::Opaque) => (bytes.to_vec(), false, true),
            None => (bytes.to_vec(), false, false),
        };
        let connection = match &before {
            _ if data.starts_with(PREFACE) => Some(http2::Connection::default()),
            Some(State::Pending { .. }) => None,
            _ if http2::looks_like_frames(&data) => Some(http2::Connection::joined_late()),
            _ => None,
        };
        if let Some(connection) = connection {
            self.last.remove(&key);
            let frames = data.strip_prefix(PREFACE).unwrap_or(&data);
            let mut http2 = Http2 {
                connection,
                last: None,
            };
            let read = http2.read_write(buf, digest, frames, unread);
            self.http2.insert(key, http2);
            return read;
        }
        if data.len() < PREFACE.len() && PREFACE.starts_with(&data) && unread == 0 {
            // The preface cut short: the rest comes with the next write.
            let mut read = WriteRead::default();
            let state = pending(&data, 0, false, &mut read);
            self.states.extend(state.map(|state| (key, state)));
            return read;
        }
        let (read, state) = read_data(&data, judged, opaque, unread);
        if let Some(state) = state {
            self.states.insert(key, state);
        }
        self.last.insert(
            key,
            LastWrite {
                buf,
                digest,
                before,
            },
        );
        read
    }

    /// A write the kernel let through on an HTTP/2 connection (a GET's
    /// header block): read for the connection's table; the calls in it.
    pub fn read_passed(&mut self, pid: u32, conn: u64, buf: u64, bytes: &[u8]) -> Vec<ApiCall> {
        let Some(http2) = self.http2.get_mut(&(pid, conn)) else {
            // Not followed from its start: its next stop finds it so.
            return Vec::new();
        };
        http2.read_write(buf, digest(bytes, 0), bytes, 0).calls
    }

    /// The connection is gone (its address may name the next one).
    pub fn forget(&mut self, pid: u32, conn: u64) {
        self.states.remove(&(pid, conn));
        self.last.remove(&(pid, conn));
        self.http2.remove(&(pid, conn));
    }

    /// Keeps only the connections of processes `alive` says still run.
    pub fn retain_processes(&mut self, mut alive: impl FnMut(u32) -> bool) {
        self.states.retain(|(pid, _), _| alive(*pid));
        self.last.retain(|(pid, _), _| alive(*pid));
        self.http2.retain(|(pid, _), _| alive(*pid));
    }
}

impl Http2 {
    fn read_write(&mut self, buf: u64, digest: u64, bytes: &[u8], unread: u64) -> WriteRead {
        if let Some((last_buf, last_digest, read)) = &self.last {
            if (*last_buf, *last_digest) == (buf, digest) {
                return read.clone();
            }
        }
        let read = self.connection.read(bytes, unread);
        let read = WriteRead {
            calls: (read.requests.iter())
                .map(|request| call_of(request, aws::call_of(request)))
                .collect(),
            unreadable: read.unreadable,
            kernel: Some(match read.needs_next {
                true => KernelConn::Stop,
                false => KernelConn::Http2,
            }),
        };
        self.last = Some((buf, digest, read.clone()));
        read
    }
}

fn read_data(data: &[u8], judged: bool, opaque: bool, unread: u64) -> (WriteRead, Option<State>) {
    let mut read = WriteRead::default();
    let (requests, tail) = requests_in(data, unread);
    if unread > 0 && !matches!(tail, Tail::None) {
        // Past what was read may be anything, requests too.
        read.unreadable = Some(format!(
            "a write longer than the {READ_LIMIT} bytes guardd reads"
        ));
        read.kernel = Some(KernelConn::Opaque);
        read.calls = requests
            .iter()
            .map(|request| call_of(request, aws::call_of(request)))
            .collect();
        return (read, Some(State::Opaque));
    }
    if requests.is_empty() && matches!(tail, Tail::NotHttp(_)) {
        // No request at all: another protocol (HTTP/2 after its preface,
        // WebSocket frames). Lines that start like requests still stop.
        read.kernel = Some(KernelConn::Opaque);
        return (read, Some(State::Opaque));
    }
    let mut state = None;
    read.kernel = Some(KernelConn::Forget);
    for (at, request) in requests.iter().enumerate() {
        let last = at + 1 == requests.len();
        if last && judged && at == 0 && !request.complete() {
            state = pending(data, request.start, true, &mut read);
            continue;
        }
        if judged && at == 0 {
            continue; // judged at its head, read now to its end
        }
        let aws = aws::call_of(request);
        if aws == Aws::NeedsBody {
            if request.body_left.is_some_and(|left| left > 0) && unread == 0 {
                state = pending(data, request.start, false, &mut read);
            } else {
                read.unreadable = Some("the body naming the AWS action was not read".into());
            }
            continue;
        }
        read.calls.push(call_of(request, aws));
        match request.body_left {
            Some(0) => {}
            Some(left) => read.kernel = Some(KernelConn::Expect(left)),
            None if unread > 0 => {
                read.unreadable = Some("a chunked body longer than guardd reads".into());
            }
            None => state = pending(data, request.start, true, &mut read),
        }
    }
    match tail {
        Tail::None => {}
        Tail::PartialHead(at) if unread == 0 => state = pending(data, at, false, &mut read),
        Tail::PartialHead(_) => {
            read.unreadable = Some("a request head longer than guardd reads".into());
        }
        Tail::NotHttp(_) => {
            read.kernel = Some(KernelConn::Opaque);
            state = Some(State::Opaque);
        }
    }
    if opaque && state.is_none() && read.kernel == Some(KernelConn::Forget) {
        // Still between requests, but of a connection that also carries others.
        read.kernel = Some(KernelConn::Opaque);
        state = Some(State::Opaque);
    }
    if read.unreadable.is_some() {
        read.kernel = Some(KernelConn::Opaque);
        state = Some(State::Opaque);
    }
    (read, state)
}

/// The requests in `data`, also those behind bytes that are none (a
/// request line after garbage is still one to the server).
fn requests_in(data: &[u8], unread: u64) -> (Vec<Request>, Tail) {
    let mut requests = Vec::new();
    let mut offset = 0;
    loop {
        let stream = http::parse(&data[offset..], unread);
        requests.extend(stream.requests.into_iter().map(|mut request| {
            request.start += offset;
            request
        }));
        match stream.tail {
            Tail::None => return (requests, Tail::None),
            Tail::PartialHead(at) => return (requests, Tail::PartialHead(offset + at)),
            Tail::NotHttp(at) => {
                let at = offset + at;
                match http::hidden_request(&data[at..]) {
                    Some(hidden) => offset = at + hidden,
                    None => return (requests, Tail::NotHttp(at)),
                }
            }
        }
    }
}

/// Keeps the unfinished request from `start`; every write stops until it is whole.
fn pending(data: &[u8], start: usize, judged: bool, read: &mut WriteRead) -> Option<State> {
    if data.len() - start > PENDING_LIMIT {
        read.unreadable = Some(format!(
            "a request of more than {PENDING_LIMIT} bytes that guardd could not judge"
        ));
        return Some(State::Opaque);
    }
    read.kernel = Some(KernelConn::Stop);
    Some(State::Pending {
        bytes: data[start..].to_vec(),
        judged,
    })
}

pub(crate) fn call_of(request: &Request, aws: Aws) -> ApiCall {
    ApiCall {
        http: Some(HttpCall {
            method: request.method.clone(),
            host: request.host(),
            path: request.path(),
        }),
        aws: match aws {
            Aws::Call(call) => Some(call),
            Aws::NotAws | Aws::NeedsBody => None,
        },
        sql: None,
        database: None,
    }
}

fn digest(bytes: &[u8], unread: u64) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    unread.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential=K/20261206/us-east-1/ec2/aws4_request, Signature=1\r\nContent-Length: 31\r\n\r\n";
    const BODY: &[u8] = b"Action=TerminateInstances&V=1&X";

    fn operations(read: &WriteRead) -> Vec<String> {
        read.calls
            .iter()
            .map(|c| {
                c.aws
                    .as_ref()
                    .map_or(String::new(), |a| a.operation.clone())
            })
            .collect()
    }

    #[test]
    fn a_query_call_is_judged_when_its_body_comes() {
        let mut conns = Conns::default();
        let head = conns.read_write(1, 7, 100, HEAD, 0);
        assert!(head.calls.is_empty());
        assert_eq!(head.kernel, Some(KernelConn::Stop));
        let body = conns.read_write(1, 7, 200, BODY, 0);
        assert_eq!(operations(&body), ["TerminateInstances"]);
        assert_eq!(body.kernel, Some(KernelConn::Forget));
    }

    #[test]
    fn a_head_split_anywhere_is_read_whole() {
        let whole = [HEAD, BODY].concat();
        for cut in [1, 3, 20, HEAD.len() - 1, HEAD.len() + 5] {
            let mut conns = Conns::default();
            let first = conns.read_write(1, 7, 100, &whole[..cut], 0);
            assert!(first.calls.is_empty(), "cut {cut}");
            let second = conns.read_write(1, 7, 200, &whole[cut..], 0);
            assert_eq!(operations(&second), ["TerminateInstances"], "cut {cut}");
        }
    }

    #[test]
    fn a_retried_write_is_read_once() {
        let mut conns = Conns::default();
        conns.read_write(1, 7, 100, HEAD, 0);
        // The head again from the same buffer: OpenSSL's retry, not a body.
        let again = conns.read_write(1, 7, 100, HEAD, 0);
        assert!(again.calls.is_empty());
        let body = conns.read_write(1, 7, 200, BODY, 0);
        assert_eq!(operations(&body), ["TerminateInstances"]);
    }

    #[test]
    fn other_protocols_become_opaque_and_hidden_requests_are_read() {
        let mut conns = Conns::default();
        // A WebSocket frame: no request, no HTTP/2.
        let frames = conns.read_write(1, 7, 100, b"\x81\x85abcdefghi", 0);
        assert_eq!(frames.kernel, Some(KernelConn::Opaque));
        let hidden = conns.read_write(1, 8, 100, b"xx\r\nDELETE /b HTTP/1.1\r\nHost: h\r\n\r\n", 0);
        assert_eq!(hidden.calls.len(), 1);
        assert_eq!(hidden.calls[0].http.as_ref().unwrap().method, "DELETE");
    }

    #[test]
    fn http2_is_read_from_its_preface_and_a_reused_address_starts_again() {
        const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
        // :authority h (literal, indexed), :method DELETE, :path /x, :scheme https.
        let block = b"\x41\x01h\x42\x06DELETE\x44\x02/x\x87";
        let mut headers = vec![0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1];
        headers.extend_from_slice(block);
        let mut conns = Conns::default();
        let start = [PREFACE, SETTINGS].concat();
        let read = conns.read_write(1, 7, 100, &start, 0);
        assert_eq!(read.kernel, Some(KernelConn::Http2));
        let read = conns.read_write(1, 7, 200, &headers, 0);
        assert_eq!(read.calls[0].describe(), "DELETE h/x");
        // The same address, a new connection: its table starts empty again.
        let read = conns.read_write(1, 7, 300, &[start.as_slice(), &headers].concat(), 0);
        assert_eq!(read.calls.len(), 1);
        assert!(read.unreadable.is_none(), "{read:?}");
        // A connection met mid-way: its requests are unreadable.
        let read = conns.read_write(1, 8, 100, &headers, 0);
        assert!(read.unreadable.is_some());
    }

    #[test]
    fn a_known_body_passes_in_the_kernel() {
        let mut conns = Conns::default();
        let read = conns.read_write(
            1,
            7,
            100,
            b"DELETE /x HTTP/1.1\r\nContent-Length: 50\r\n\r\nab",
            0,
        );
        assert_eq!(read.calls.len(), 1);
        assert_eq!(read.kernel, Some(KernelConn::Expect(48)));
    }

    #[test]
    fn what_cannot_be_read_whole_is_unreadable() {
        let mut conns = Conns::default();
        let read = conns.read_write(1, 7, 100, HEAD, 1 << 20);
        assert!(read.unreadable.is_some() || !read.calls.is_empty());
        let read = conns.read_write(1, 9, 100, b"PUT /x HTTP/1.1\r\nHost", 1 << 20);
        assert!(read.unreadable.is_some());
    }
}
