//! The blocking client guardctl uses to talk to guardd.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::protocol::{encode_line, Request, RequestEnvelope, Response, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach guardd at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to guardd: {0}")]
    Io(#[from] std::io::Error),
    #[error("guardd sent an unreadable response: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("guardd closed the connection without a response")]
    Closed,
}

pub fn call(socket: &Path, request: Request) -> Result<Response, ClientError> {
    call_with_timeout(socket, request, Duration::from_secs(30))
}

/// As `call`, for requests that may wait on a person (polkit's prompt).
pub fn call_with_timeout(
    socket: &Path,
    request: Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(&line(request))?;
    read_response(&stream)
}

/// As `call_with_timeout`, for a request during which guardd may ask the
/// caller something (`auth_prompt`, `auth_info`): `answer` is given each such
/// message and returns what to send back, if anything. Returns guardd's
/// final response.
pub fn converse(
    socket: &Path,
    request: Request,
    timeout: Duration,
    mut answer: impl FnMut(&Response) -> Option<Request>,
) -> Result<Response, ClientError> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(&line(request))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut text = String::new();
        if reader.read_line(&mut text)? == 0 {
            return Err(ClientError::Closed);
        }
        let response: Response = serde_json::from_str(&text)?;
        if !matches!(
            response,
            Response::AuthPrompt { .. } | Response::AuthInfo { .. }
        ) {
            return Ok(response);
        }
        if let Some(reply) = answer(&response) {
            stream.write_all(&line(reply))?;
        }
    }
}

/// As `call`, with a file descriptor passed along (SCM_RIGHTS).
pub fn call_with_fd(
    socket: &Path,
    request: Request,
    fd: std::os::fd::BorrowedFd,
) -> Result<Response, ClientError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd as _;
    let stream = connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let line = line(request);
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&[fd.as_raw_fd()])],
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    // The rest, if any, without the fd (it went with the first bytes).
    (&stream).write_all(&line[sent..])?;
    read_response(&stream)
}

fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })
}

fn line(request: Request) -> Vec<u8> {
    encode_line(&RequestEnvelope {
        version: PROTOCOL_VERSION,
        request,
    })
}

fn read_response(stream: &UnixStream) -> Result<Response, ClientError> {
    let mut response = String::new();
    if BufReader::new(stream).read_line(&mut response)? == 0 {
        return Err(ClientError::Closed);
    }
    Ok(serde_json::from_str(&response)?)
}

/// Sends `request` and yields every response line until guardd closes the
/// connection (for `watch`).
pub fn stream(
    socket: &Path,
    request: Request,
) -> Result<impl Iterator<Item = Result<Response, ClientError>>, ClientError> {
    let mut stream = connect(socket)?;
    stream.write_all(&line(request))?;
    Ok(BufReader::new(stream)
        .lines()
        .map(|line| Ok(serde_json::from_str(&line?)?)))
}
