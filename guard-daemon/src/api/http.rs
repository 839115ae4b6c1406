//! HTTP/1.x requests in the bytes a client wrote: request heads (httparse),
//! bodies framed by Content-Length or chunked, pipelined requests, and where
//! the bytes stop being requests at all.

/// Header fields kept per request (more is read as "cannot be parsed").
const MAX_HEADERS: usize = 128;
/// A method longer than this is no request line.
const MAX_METHOD: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (origin form `/path?query`, or absolute).
    pub target: String,
    /// Field names in lower case, values as text (invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    /// The body bytes in the data read (all of it when `body_left == Some(0)`).
    pub body: Vec<u8>,
    /// Body bytes still to come after the data read; None: not known
    /// (a chunked body whose end is not in the data).
    pub body_left: Option<u64>,
    /// Part of the body is in the write but past what guardd read.
    pub body_unread: bool,
    /// Where the request starts in the data.
    pub start: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn complete(&self) -> bool {
        self.body_left == Some(0)
    }

    /// The host the request is for, lower case, without a port.
    pub fn host(&self) -> String {
        let host = match self.target.split_once("://") {
            Some((_, rest)) => rest.split('/').next().unwrap_or(""),
            None => self.header("host").unwrap_or(""),
        };
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.split(':').next().unwrap_or(""),
        };
        host.to_ascii_lowercase()
    }

    /// The target's path (no query), `/` when it has none.
    pub fn path(&self) -> String {
        let target = match self.target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
            None => &self.target,
        };
        let path = target.split(['?', '#']).next().unwrap_or("");
        if path.is_empty() {
            "/".into()
        } else {
            path.into()
        }
    }

    /// The target's query string (after `?`), empty when none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }
}

/// What comes after the last request head in the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the data ends with a whole request (or in its body).
    None,
    /// From this offset, a request head not yet whole.
    PartialHead(usize),
    /// From this offset, bytes that are no request.
    NotHttp(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub requests: Vec<Request>,
    pub tail: Tail,
}

/// Reads requests from the start of `data`; `unread`: bytes of the same
/// write after `data` that were not read (a Content-Length body may cover
/// them).
pub fn parse(data: &[u8], unread: u64) -> Stream {
    let mut requests = Vec::new();
    let mut at = 0;
    loop {
        // Servers skip empty lines before a request line.
        while data[at..].starts_with(b"\r\n") || data[at..].starts_with(b"\n") {
            at += if data[at] == b'\r' { 2 } else { 1 };
        }
        if at == data.len() {
            return Stream {
                requests,
                tail: Tail::None,
            };
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Request::new(&mut fields);
        let length = match head.parse(&data[at..]) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if starts_like_request(&data[at..]) => {
                return Stream {
                    requests,
                    tail: Tail::PartialHead(at),
                };
            }
            _ => {
                return Stream {
                    requests,
                    tail: Tail::NotHttp(at),
                };
            }
        };
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let mut request = Request {
            method: head.method.unwrap_or_default().to_string(),
            target: head.path.unwrap_or_default().to_string(),
            headers,
            body: Vec::new(),
            body_left: Some(0),
            body_unread: false,
            start: at,
        };
        let rest = &data[at + length..];
        let chunked = request
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let declared = request
            .header("content-length")
            .map(|v| v.trim().parse::<u64>());
        match (chunked, declared) {
            (true, _) => match chunked_end(rest) {
                Some(end) => {
                    request.body = rest[..end].to_vec();
                    at += length + end;
                    requests.push(request);
                }
                None => {
                    request.body = rest.to_vec();
                    request.body_left = None;
                    requests.push(request);
                    return Stream {
                        requests,
                        tail: Tail::None,
                    };
                }
            },
            // A length that is no number: the server refuses it; so do we.
            (false, Some(Err(_))) => {
                return Stream {
                    requests,
                    tail: Tail::NotHttp(at),
                }
            }
            (false, Some(Ok(declared))) if declared > rest.len() as u64 => {
                request.body = rest.to_vec();
                let left = declared - rest.len() as u64;
                request.body_left = Some(left.saturating_sub(unread));
                request.body_unread = unread > 0;
                if left < unread {
                    // More was written than the body: unread requests follow.
                    requests.push(request);
                    return Stream {
                        requests,
                        tail: Tail::NotHttp(data.len()),
                    };
                }
                requests.push(request);
                return Stream {
                    requests,
                    tail: Tail::None,
                };
            }
            (false, declared) => {
                let declared = declared.map_or(0, |d| d.unwrap_or(0)) as usize;
                request.body = rest[..declared].to_vec();
                at += length + declared;
                requests.push(request);
            }
        }
    }
}

/// Whether incomplete bytes may still become a request line: a method
/// (upper-case letters, `-`, `_`) and, after a space, anything httparse
/// has not refused yet.
fn starts_like_request(data: &[u8]) -> bool {
    let method_len = data.iter().position(|b| *b == b' ').unwrap_or(data.len());
    method_len <= MAX_METHOD
        && method_len > 0
        && data[..method_len]
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
}

/// Where a chunked body ends in `data` (after the last chunk and the
/// trailer section), or None when it does not end there.
fn chunked_end(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = find(&data[at..], b"\r\n")? + at;
        let size_text = std::str::from_utf8(&data[at..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let end = find(&data[at..], b"\r\n")? + at;
                if end == at {
                    return Some(at + 2);
                }
                at = end + 2;
            }
        }
        at = at.checked_add(size)?.checked_add(2)?;
        if at > data.len() {
            return None;
        }
    }
}

/// Where a request line (`METHOD TARGET HTTP/1.x`) starts inside bytes that
/// are not a request themselves: a request hidden behind other bytes.
pub fn hidden_request(data: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = find(&data[from..], b" HTTP/1.") {
        let at = from + found;
        let line_start = data[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |n| n + 1);
        let line = &data[line_start..at];
        let method_len = line.iter().position(|b| *b == b' ').unwrap_or(0);
        if method_len > 0 && starts_like_request(line) {
            return Some(line_start);
        }
        from = at + 1;
    }
    None
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_alone_is_a_whole_request() {
        let stream = parse(b"DELETE /b HTTP/1.1\r\nHost: s3.local:4566\r\n\r\n", 0);
        assert_eq!(stream.tail, Tail::None);
        let request = &stream.requests[0];
        assert!(request.complete());
        assert_eq!(
            (request.method.as_str(), request.path()),
            ("DELETE", "/b".into())
        );
        assert_eq!(request.host(), "s3.local");
    }

    #[test]
    fn a_body_still_to_come_is_counted() {
        let stream = parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nAct", 0);
        assert_eq!(stream.requests[0].body_left, Some(7));
        assert_eq!(stream.requests[0].body, b"Act");
        // The unread part of the write is body too.
        let stream = parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nAct", 7);
        assert_eq!(stream.requests[0].body_left, Some(0));
    }

    #[test]
    fn pipelined_requests_are_all_read() {
        let data =
            b"GET / HTTP/1.1\r\n\r\n\r\nDELETE /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nabPUT /y HT";
        let stream = parse(data, 0);
        let methods: Vec<&str> = stream.requests.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["GET", "DELETE"]);
        assert!(matches!(stream.tail, Tail::PartialHead(_)));
    }

    #[test]
    fn chunked_bodies_end_at_the_last_chunk() {
        let data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nDELETE /z HTTP/1.1\r\n\r\n";
        let stream = parse(data, 0);
        assert_eq!(stream.requests.len(), 2);
        assert_eq!(stream.requests[1].method, "DELETE");
        let stream = parse(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            0,
        );
        assert_eq!(stream.requests[0].body_left, None);
    }

    #[test]
    fn other_bytes_are_not_http_and_hidden_requests_are_found() {
        assert_eq!(parse(b"\x16\x03\x01garbage", 0).tail, Tail::NotHttp(0));
        assert_eq!(parse(b"DEL", 0).tail, Tail::PartialHead(0));
        assert_eq!(parse(b"hello", 0).tail, Tail::NotHttp(0));
        let data = b"xx\r\nDELETE /bucket HTTP/1.1\r\n\r\n";
        assert_eq!(hidden_request(data), Some(4));
        assert_eq!(hidden_request(b"no request here HTTP/1.1"), None);
    }

    #[test]
    fn a_bad_length_is_no_request() {
        let stream = parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 0);
        assert_eq!(stream.tail, Tail::NotHttp(0));
    }
}
