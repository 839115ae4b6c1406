//! HTTP/2 requests in what a client wrote after the connection preface.
//!
//! Header blocks are HPACK-compressed against a table that both ends build
//! from every block of the connection, so guardd must read all of them, in
//! the order they were written. It reads them with h2's own frame reader,
//! fed as a server's would be; the kernel lets a write through without guardd
//! only when it is whole frames of which none carries a header block (DATA,
//! SETTINGS, PING, WINDOW_UPDATE...), see `guard-ebpf/src/api.rs`.
use std::{
    collections::HashMap,
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use h2::{frame::Frame, Codec};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    aws::{self, Aws},
    http::Request,
};

/// What a client writes first on an HTTP/2 connection.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
/// The largest frame any server may allow (SETTINGS_MAX_FRAME_SIZE's cap).
const MAX_FRAME: usize = (1 << 24) - 1;
/// A frame longer than this is taken as no HTTP/2 by `looks_like_frames`
/// (the default size limit, which a client exceeds only when allowed).
const DEFAULT_MAX_FRAME: usize = 1 << 14;
/// The largest HPACK table an encoder may size its table up to, as far as
/// guardd follows it: a server may allow more than the protocol's initial
/// 4096 bytes (Go's and nghttp2's encoders stay at 4096 anyway), and the
/// server's settings are not among the client's writes.
const MAX_TABLE: usize = 1 << 16;
/// Body bytes kept for a call that is named in its body.
const BODY_LIMIT: usize = 1 << 20;

/// Whether a frame of this type carries (part of) a header block.
fn carries_header_block(kind: u8) -> bool {
    matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION)
}

/// Whether `data` starts with a frame header a client could have written
/// (another protocol's bytes, read without the preface, rarely do).
pub fn looks_like_frames(data: &[u8]) -> bool {
    let Some(head) = data.get(..FRAME_HEAD) else {
        return false;
    };
    let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    length <= DEFAULT_MAX_FRAME && head[3] <= CONTINUATION && head[5] & 0x80 == 0
}

/// The bytes written so far, for h2's frame reader to take.
#[derive(Default)]
struct Written(BytesMut);

impl AsyncRead for Written {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.0.is_empty() {
            // More comes with the next write.
            return Poll::Pending;
        }
        let take = buf.remaining().min(self.0.len());
        buf.put_slice(&self.0.split_to(take));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Written {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What one write held.
#[derive(Debug, Default)]
pub struct Read {
    /// Requests whose call can be judged now, in the order they were written.
    pub requests: Vec<Request>,
    /// Why part of it could not be read (then it is held, never let through).
    pub unreadable: Option<String>,
    /// guardd must read the next write too: it ends inside a frame or a
    /// header block, or a call waits for its body.
    pub needs_next: bool,
}

/// One HTTP/2 connection as guardd follows it.
pub struct Connection {
    reader: Codec<Written, Bytes>,
    /// Where the writes stand in the frame sequence: bytes still to come of
    /// the frame the last write ended in, or the start of a frame header it cut.
    frame_left: usize,
    cut_head: Vec<u8>,
    /// A HEADERS or PUSH_PROMISE without END_HEADERS: CONTINUATIONs follow.
    block_open: bool,
    /// Requests whose AWS call is named in a body still to come, by stream.
    bodies: HashMap<u32, Request>,
    /// Why this connection can no longer be read (then every write guardd
    /// sees is unreadable).
    broken: Option<String>,
}

impl Default for Connection {
    /// A connection read from its start (after the preface).
    fn default() -> Self {
        let mut reader = Codec::new(Written::default());
        reader.set_max_recv_frame_size(MAX_FRAME);
        reader.set_recv_header_table_size(MAX_TABLE);
        Self {
            reader,
            frame_left: 0,
            cut_head: Vec::new(),
            block_open: false,
            bodies: HashMap::new(),
            broken: None,
        }
    }
}

impl Connection {
    /// A connection first seen after its start: its header table is not
    /// known, so no header block of it can be read.
    pub fn joined_late() -> Self {
        let why = "its HTTP/2 header table was built before guardd saw the connection";
        Self {
            broken: Some(why.to_string()),
            ..Self::default()
        }
    }

    /// Reads the next write, `data`; `unread`: bytes of it past `data`.
    pub fn read(&mut self, data: &[u8], unread: u64) -> Read {
        let mut read = Read::default();
        self.walk(data);
        if unread > 0 && self.broken.is_none() {
            self.broken = Some("a write longer than guardd reads".to_string());
        }
        if let Some(why) = &self.broken {
            // Its frames cannot be followed: nothing in it is let through unread.
            read.unreadable = Some(why.clone());
            read.needs_next = self.mid_frame();
            return read;
        }
        self.reader.get_mut().0.extend_from_slice(data);
        let mut context = Context::from_waker(Waker::noop());
        loop {
            match Pin::new(&mut self.reader).poll_next(&mut context) {
                Poll::Ready(Some(Ok(frame))) => self.take(frame, &mut read),
                Poll::Ready(Some(Err(err))) => {
                    self.broken = Some(format!("its HTTP/2 frames could not be read: {err}"));
                    break;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
            if self.broken.is_some() {
                break;
            }
        }
        if let Some(why) = &self.broken {
            read.unreadable = Some(why.clone());
        }
        read.needs_next = self.mid_frame() || self.block_open || !self.bodies.is_empty();
        read
    }

    fn mid_frame(&self) -> bool {
        self.frame_left > 0 || !self.cut_head.is_empty()
    }

    /// Follows the frame boundaries through `data`.
    fn walk(&mut self, data: &[u8]) {
        let mut at = self.frame_left.min(data.len());
        self.frame_left -= at;
        loop {
            let missing = FRAME_HEAD - self.cut_head.len();
            if at + missing > data.len() {
                self.cut_head.extend_from_slice(&data[at..]);
                return;
            }
            let mut head = std::mem::take(&mut self.cut_head);
            head.extend_from_slice(&data[at..at + missing]);
            at += missing;
            let length =
                usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            if carries_header_block(kind) {
                self.block_open = flags & END_HEADERS == 0;
            }
            let body = length.min(data.len() - at);
            at += body;
            self.frame_left = length - body;
            if at == data.len() {
                return;
            }
        }
    }

    fn take(&mut self, frame: Frame, read: &mut Read) {
        match frame {
            Frame::Headers(headers) => {
                let stream = u32::from(headers.stream_id());
                let end_stream = headers.is_end_stream();
                let (pseudo, fields) = headers.into_parts();
                let Some(method) = pseudo.method else {
                    // Trailers: they end a body still awaited.
                    if end_stream {
                        self.end_body(stream, read);
                    }
                    return;
                };
                let mut request = Request {
                    method: method.as_str().to_string(),
                    target: pseudo.path.as_deref().unwrap_or("/").to_string(),
                    headers: fields
                        .iter()
                        .map(|(name, value)| {
                            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                            (name.as_str().to_string(), value)
                        })
                        .collect(),
                    body: Vec::new(),
                    body_left: end_stream.then_some(0),
                    body_unread: false,
                    start: 0,
                };
                if let Some(authority) = pseudo.authority.as_deref() {
                    request.headers.retain(|(name, _)| name != "host");
                    request.headers.push(("host".into(), authority.to_string()));
                }
                if !end_stream && aws::call_of(&request) == Aws::NeedsBody {
                    self.bodies.insert(stream, request);
                } else {
                    read.requests.push(request);
                }
            }
            Frame::Data(data) => {
                let stream = u32::from(data.stream_id());
                let end_stream = data.is_end_stream();
                if let Some(request) = self.bodies.get_mut(&stream) {
                    request.body.extend_from_slice(data.payload());
                    if request.body.len() > BODY_LIMIT {
                        self.broken = Some(format!(
                            "a body of more than {BODY_LIMIT} bytes naming its AWS action"
                        ));
                        return;
                    }
                    if end_stream {
                        self.end_body(stream, read);
                    }
                }
            }
            Frame::PushPromise(_) => {
                self.broken = Some("a client wrote PUSH_PROMISE, which only servers send".into());
            }
            Frame::Reset(reset) => {
                self.bodies.remove(&u32::from(reset.stream_id()));
            }
            _ => {}
        }
    }

    fn end_body(&mut self, stream: u32, read: &mut Read) {
        if let Some(mut request) = self.bodies.remove(&stream) {
            request.body_left = Some(0);
            read.requests.push(request);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(stream: u32, block: &[u8], flags: u8) -> Vec<u8> {
        frame(HEADERS, flags, stream, block)
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn literal(name_index: u8, value: &str) -> Vec<u8> {
        let mut out = vec![0x40 | name_index, value.len() as u8];
        out.extend_from_slice(value.as_bytes());
        out
    }

    /// A request's pseudo-header fields as Go's encoder writes them the first
    /// time: literals with indexing, names from the static table, no Huffman.
    fn block(method: &str, path: &str) -> Vec<u8> {
        [
            literal(1, "s3.local"),
            literal(2, method),
            literal(4, path),
            vec![0x87], // :scheme https
        ]
        .concat()
    }

    const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

    fn methods(read: &Read) -> Vec<(String, String)> {
        let requests = read.requests.iter();
        requests.map(|r| (r.method.clone(), r.path())).collect()
    }

    #[test]
    fn requests_are_read_with_the_connections_table() {
        let mut conn = Connection::default();
        let first = [SETTINGS, &headers_frame(1, &block("DELETE", "/b"), 0x5)].concat();
        let read = conn.read(&first, 0);
        assert_eq!(methods(&read), [("DELETE".into(), "/b".into())]);
        assert_eq!(read.requests[0].host(), "s3.local");
        assert!(!read.needs_next);
        // The same fields again by their dynamic-table index alone (62:
        // the latest entry, :path /b; 63 :method DELETE; 64 :authority).
        let again = headers_frame(3, &[0x80 | 64, 0x80 | 63, 0x80 | 62, 0x87], 0x5);
        let read = conn.read(&again, 0);
        assert_eq!(methods(&read), [("DELETE".into(), "/b".into())]);
        assert_eq!(read.requests[0].host(), "s3.local");
    }

    #[test]
    fn a_table_larger_than_the_initial_one_is_followed() {
        let mut conn = Connection::default();
        // A size update to 16384 (001 11111, then 16384 - 31 in 7-bit groups).
        let mut fields = vec![0x3f, 0xe1, 0x7f];
        fields.extend(block("DELETE", "/big"));
        let read = conn.read(&headers_frame(1, &fields, 0x5), 0);
        assert!(read.unreadable.is_none(), "{read:?}");
        assert_eq!(methods(&read), [("DELETE".into(), "/big".into())]);
    }

    #[test]
    fn a_block_split_across_writes_and_continuations_is_read_whole() {
        let block = block("DELETE", "/split");
        let whole = [
            headers_frame(1, &block[..5], 0x1),
            frame(CONTINUATION, END_HEADERS, 1, &block[5..]),
        ]
        .concat();
        for cut in [3, 9, 12, whole.len() - 1] {
            let mut conn = Connection::default();
            let first = conn.read(&whole[..cut], 0);
            assert!(first.requests.is_empty(), "cut {cut}");
            assert!(first.needs_next, "cut {cut}");
            let second = conn.read(&whole[cut..], 0);
            assert_eq!(methods(&second), [("DELETE".into(), "/split".into())]);
            assert!(!second.needs_next, "cut {cut}");
        }
    }

    #[test]
    fn an_aws_query_call_waits_for_its_body_in_data_frames() {
        let mut conn = Connection::default();
        let auth = "AWS4-HMAC-SHA256 Credential=K/20261206/us-east-1/ec2/aws4_request, Signature=1";
        let mut fields = block("POST", "/");
        for (name, value) in [
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", auth),
        ] {
            // A literal without indexing, its name new; both shorter than 127.
            fields.extend([0x00, name.len() as u8]);
            fields.extend_from_slice(name.as_bytes());
            fields.push(value.len() as u8);
            fields.extend_from_slice(value.as_bytes());
        }
        let head = conn.read(&headers_frame(1, &fields, END_HEADERS), 0);
        assert!(head.requests.is_empty());
        assert!(head.needs_next);
        let body = frame(0, 0x1, 1, b"Action=TerminateInstances&Version=2016-11-15");
        let read = conn.read(&body, 0);
        assert_eq!(read.requests.len(), 1);
        let call = aws::call_of(&read.requests[0]);
        assert!(matches!(call, Aws::Call(c) if c.operation == "TerminateInstances"));
        assert!(!read.needs_next);
    }

    #[test]
    fn what_cannot_be_read_is_unreadable_from_then_on() {
        let mut conn = Connection::default();
        // Index 70 names no entry: the table guardd keeps is not the client's.
        let read = conn.read(&headers_frame(1, &[0x80 | 70], 0x5), 0);
        assert!(read.unreadable.is_some(), "{read:?}");
        let later = conn.read(&headers_frame(3, &block("GET", "/"), 0x5), 0);
        assert!(later.unreadable.is_some());
        let mut late = Connection::joined_late();
        assert!(late
            .read(&headers_frame(1, &block("GET", "/"), 0x5), 0)
            .unreadable
            .is_some());
        assert!(looks_like_frames(SETTINGS));
        assert!(!looks_like_frames(b"\x81\x85abcdefghij"));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a client writes, cut anywhere: reading never panics, and
        /// a write guardd could not read is never read as nothing.
        #[test]
        fn any_frames_cut_anywhere_are_read_or_refused(
            frames in prop::collection::vec((0u8..12, any::<u8>(), 0u32..8, prop::collection::vec(any::<u8>(), 0..40)), 0..8),
            cuts in prop::collection::vec(1usize..64, 1..8),
        ) {
            let mut bytes = Vec::new();
            for (kind, flags, stream, payload) in frames {
                let len = payload.len();
                bytes.extend([0, 0, len as u8, kind, flags]);
                bytes.extend(stream.to_be_bytes());
                bytes.extend(payload);
            }
            let mut conn = Connection::default();
            let mut rest = bytes.as_slice();
            for cut in cuts.iter().cycle().take(64) {
                if rest.is_empty() {
                    break;
                }
                let (write, after) = rest.split_at((*cut).min(rest.len()));
                let read = conn.read(write, 0);
                prop_assert!(read.unreadable.is_some() || conn.broken.is_none());
                rest = after;
            }
        }
    }
}
