//! The control socket: one JSON request per line, one JSON response per line.
use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::broadcast::error::RecvError;

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{unix::OwnedWriteHalf, UnixListener, UnixStream},
};

use crate::{
    guard::{Guard, Peer, Reauth},
    pam::Exchange,
    protocol::{decode_request, encode_line, Request, Response, MAX_REQUEST_BYTES},
};

/// A connection that sends nothing for this long is closed.
/// File descriptors one request may pass (the rest are closed by the kernel).
const MAX_PASSED_FDS: usize = 2;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the approver has for one PAM prompt, and for the whole exchange.
const AUTH_ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
const AUTH_TIMEOUT: Duration = Duration::from_secs(180);
/// A failed re-authentication is answered only after this long.
const FAILED_AUTH_DELAY: Duration = Duration::from_secs(1);
/// Open connections one process may hold; more are refused at once.
pub const MAX_CONNECTIONS_PER_PROCESS: usize = 32;
/// Open connections all processes of one uid may hold.
pub const MAX_CONNECTIONS_PER_UID: usize = 256;

/// Binds the control socket. With `group`, only root and that group may
/// connect (mode 0660); without, anyone may (0666) and each request is
/// authorised on its own from SO_PEERCRED.
pub fn bind(path: &Path, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running guardd", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let mode = match group {
        Some(name) => {
            let group = nix::unistd::Group::from_name(name)?.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("no group {name}"))
            })?;
            nix::unistd::chown(path, None, Some(group.gid))?;
            0o660
        }
        None => 0o666,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, guard: Arc<Mutex<Guard>>) {
    let limits = Arc::new(Mutex::new(PeerCounts::default()));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle_connection(stream, guard.clone(), limits.clone()));
            }
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle_connection(
    mut stream: UnixStream,
    guard: Arc<Mutex<Guard>>,
    limits: Arc<Mutex<PeerCounts>>,
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            pid: cred.pid().and_then(|pid| u32::try_from(pid).ok()),
            uid: cred.uid(),
        },
        Err(err) => {
            tracing::warn!("no peer credentials: {err}");
            return;
        }
    };
    let Some(_slot) = PeerSlot::take(&limits, peer) else {
        let refusal = error(format!(
            "too many connections from this peer (at most {MAX_CONNECTIONS_PER_PROCESS} per process, {MAX_CONNECTIONS_PER_UID} per uid)"
        ));
        let _ = stream.write_all(&encode_line(&refusal)).await;
        return;
    };
    // The first read keeps file descriptors passed along (gate_syscalls).
    let (first, mut passed) = match tokio::time::timeout(IDLE_TIMEOUT, first_read(&stream)).await {
        Ok(Ok(first)) => first,
        _ => return,
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(std::io::Cursor::new(first).chain(read));
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_REQUEST_BYTES as u64 + 1;
        let read = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        let (response, close) = match read {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => (
                error(format!("request longer than {MAX_REQUEST_BYTES} bytes")),
                true,
            ),
            Ok(Ok(_)) if !line.ends_with(b"\n") => {
                (error("truncated request (no newline)".into()), true)
            }
            Ok(Ok(_)) => match decode_request(line.trim_ascii_end()) {
                Ok(Request::Watch) => return watch(&guard, write).await,
                Ok(Request::Approve { id }) => (
                    approve(&guard, peer, id, &mut reader, &mut write).await,
                    false,
                ),
                Ok(Request::GateSyscalls) => {
                    (start_gate(&guard, peer, std::mem::take(&mut passed)), false)
                }
                Ok(request) => (dispatch(&guard, peer, request), false),
                Err(message) => (error(message), false),
            },
        };
        if write.write_all(&encode_line(&response)).await.is_err() || close {
            return;
        }
    }
}

/// `guardctl watch`: the holds pending now, then every audit record as it
/// is written, until the client goes away.
async fn watch(guard: &Mutex<Guard>, mut write: tokio::net::unix::OwnedWriteHalf) {
    let (pending, mut records) = {
        let guard = guard.lock().unwrap_or_else(|e| e.into_inner());
        (guard.pending(), guard.subscribe_audit())
    };
    if write.write_all(&encode_line(&pending)).await.is_err() {
        return;
    }
    loop {
        let response = match records.recv().await {
            Ok(record) => Response::Event { record },
            Err(RecvError::Lagged(missed)) => error(format!(
                "this watcher fell behind: {missed} records missed (see the audit log)"
            )),
            Err(RecvError::Closed) => return,
        };
        if write.write_all(&encode_line(&response)).await.is_err() {
            return;
        }
    }
}

/// Reads what the peer sent first with recvmsg, keeping the file descriptors
/// that came with it.
async fn first_read(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    loop {
        stream.readable().await?;
        match stream.try_io(tokio::io::Interest::READABLE, || {
            receive(stream.as_raw_fd())
        }) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn receive(fd: std::os::fd::RawFd) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buffer = vec![0u8; 64 * 1024];
    let mut control = nix::cmsg_space!([std::os::fd::RawFd; MAX_PASSED_FDS]);
    let (bytes, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(fd, &mut iov, Some(&mut control), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for control in message.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = control {
                // SAFETY: the kernel just installed these fds in this process for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (message.bytes, fds)
    };
    buffer.truncate(bytes);
    Ok((buffer, fds))
}

/// `gate_syscalls`: serve the passed seccomp listener for the caller's session.
fn start_gate(guard: &Arc<Mutex<Guard>>, peer: Peer, mut passed: Vec<OwnedFd>) -> Response {
    if passed.len() != 1 {
        return error("gate_syscalls needs exactly one seccomp listener fd (SCM_RIGHTS)".into());
    }
    let fd = passed.remove(0);
    if let Err(why) = crate::seccomp::Listener::check(&fd) {
        return error(why);
    }
    let session = match guard
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .gate_session(peer)
    {
        Ok(session) => session,
        Err(response) => return response,
    };
    crate::seccomp::serve(fd, session, guard.clone());
    Response::GateStarted {
        session_id: session,
    }
}

/// A local approval: the quick checks, then the approver's re-authentication
/// (PAM or polkit, without holding the lock: a person may take a minute), then
/// the approval itself, checked again.
async fn approve(
    guard: &Mutex<Guard>,
    peer: Peer,
    id: String,
    reader: &mut (impl AsyncBufRead + Unpin),
    write: &mut OwnedWriteHalf,
) -> Response {
    let reauth = match locked(guard, |guard| guard.check_local_approver(peer, &id)) {
        Ok(reauth) => reauth,
        Err(refused) => return refused,
    };
    let proven = match reauth {
        Reauth::NotNeeded => return locked(guard, |guard| guard.approve(peer, &id, None)),
        Reauth::Unauthenticated(why) => {
            tracing::warn!(id, "unauthenticated same-uid approval: {why}");
            let proof = format!("unauthenticated: {why}");
            return locked(guard, |guard| guard.approve(peer, &id, Some(&proof)));
        }
        Reauth::Refused(why) => Err(why),
        Reauth::Polkit => match peer.pid {
            Some(pid) => crate::polkit::authorize(pid, peer.uid)
                .await
                .map(|()| "authenticated by polkit".to_string()),
            None => Err("polkit: the caller's process cannot be identified".into()),
        },
        Reauth::Pam { service, user } => pam_conversation(&service, &user, peer, reader, write)
            .await
            .map(|()| format!("re-authenticated by PAM (service {service})")),
    };
    match proven {
        Ok(how) => locked(guard, |guard| guard.approve(peer, &id, Some(&how))),
        Err(why) => {
            // Slows guessing through a process that can reach the socket.
            tokio::time::sleep(FAILED_AUTH_DELAY).await;
            locked(guard, |guard| guard.refuse_local_approval(peer, &id, &why))
        }
    }
}

/// Runs PAM for `user` on a blocking thread and relays its prompts to the
/// client on this connection (`auth_prompt` / `auth_answer`).
async fn pam_conversation(
    service: &str,
    user: &str,
    peer: Peer,
    reader: &mut (impl AsyncBufRead + Unpin),
    write: &mut OwnedWriteHalf,
) -> Result<(), String> {
    let _turn = PamTurn::take(peer.uid)?;
    let (to_client, mut exchanges) = tokio::sync::mpsc::channel::<Exchange>(1);
    let (answers, answered) = std::sync::mpsc::channel::<Option<String>>();
    let (service, user) = (service.to_string(), user.to_string());
    let mut pam = tokio::task::spawn_blocking(move || {
        crate::pam::authenticate(&service, &user, |exchange| {
            let wants_answer = matches!(exchange, Exchange::Prompt { .. });
            to_client.blocking_send(exchange).ok()?;
            if !wants_answer {
                return None;
            }
            answered.recv_timeout(AUTH_ANSWER_TIMEOUT).ok().flatten()
        })
    });
    let conversation = async {
        loop {
            tokio::select! {
                done = &mut pam => return done.map_err(|err| format!("PAM: {err}"))?,
                Some(exchange) = exchanges.recv() => {
                    let (response, wants_answer) = match exchange {
                        Exchange::Prompt { text, echo } => (Response::AuthPrompt { text, echo }, true),
                        Exchange::Info { text, error } => (Response::AuthInfo { text, error }, false),
                    };
                    let sent = write.write_all(&encode_line(&response)).await.is_ok();
                    if wants_answer {
                        let answer = if sent { read_answer(reader).await } else { None };
                        let _ = answers.send(answer);
                    }
                }
            }
        }
    };
    tokio::time::timeout(AUTH_TIMEOUT, conversation)
        .await
        .unwrap_or_else(|_| Err("PAM: no answer within 3 minutes".into()))
}

/// One PAM conversation per approver uid at a time: many connections of one
/// uid cannot guess in parallel (or lock the account through pam_faillock).
struct PamTurn(u32);

static PAM_TURNS: Mutex<std::collections::BTreeSet<u32>> =
    Mutex::new(std::collections::BTreeSet::new());

impl PamTurn {
    fn take(uid: u32) -> Result<Self, String> {
        let mut turns = PAM_TURNS.lock().unwrap_or_else(|e| e.into_inner());
        if !turns.insert(uid) {
            return Err(format!(
                "another re-authentication of uid {uid} is in progress; one at a time"
            ));
        }
        Ok(Self(uid))
    }
}

impl Drop for PamTurn {
    fn drop(&mut self) {
        PAM_TURNS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// The next line from the approver, if it is an `auth_answer`.
async fn read_answer(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<String> {
    let mut line = Vec::new();
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    let read = tokio::time::timeout(
        AUTH_ANSWER_TIMEOUT,
        reader.take(limit).read_until(b'\n', &mut line),
    )
    .await;
    match (read, decode_request(line.trim_ascii_end())) {
        (Ok(Ok(n)), Ok(Request::AuthAnswer { answer })) if n > 0 => Some(answer),
        _ => None,
    }
}

/// Runs `f` on the guard under its lock, then saves the state.
fn locked<T>(guard: &Mutex<Guard>, f: impl FnOnce(&mut Guard) -> T) -> T {
    let mut guard = guard.lock().unwrap_or_else(|e| e.into_inner());
    let result = f(&mut guard);
    guard.persist();
    result
}

fn dispatch(guard: &Mutex<Guard>, peer: Peer, request: Request) -> Response {
    let mut guard = guard.lock().unwrap_or_else(|e| e.into_inner());
    let response = match request {
        Request::StartSession { argv } => guard.start_session(peer, argv),
        Request::Pending => guard.pending(),
        // Handled by the connection (it may converse with the approver).
        Request::Approve { .. } => error("approve is handled by the connection".into()),
        Request::AuthAnswer { .. } => error("no authentication is in progress".into()),
        Request::ApproveToken { id, token } => guard.approve_token(peer, &id, &token),
        Request::DenyToken { id, token, reason } => guard.deny_token(peer, &id, &token, reason),
        // Handled by the connection (it streams, or takes an fd); never reach here.
        Request::Watch => error("watch is a stream".into()),
        Request::GateSyscalls => error("gate_syscalls needs its fd".into()),
        Request::Deny { id, reason } => guard.deny(peer, &id, reason),
        Request::Status => guard.status(),
        Request::Explain { argv, cwd, env } => guard.explain(&argv, cwd, env),
        Request::ExplainApi { call, request } => guard.explain_api(call, request),
    };
    guard.persist();
    response
}

fn error(message: String) -> Response {
    Response::Error { message }
}

/// Open connections per process and per uid.
#[derive(Default)]
struct PeerCounts {
    by_pid: HashMap<u32, usize>,
    by_uid: HashMap<u32, usize>,
}

/// One counted connection; the count drops with it.
struct PeerSlot {
    limits: Arc<Mutex<PeerCounts>>,
    peer: Peer,
}

impl PeerSlot {
    fn take(limits: &Arc<Mutex<PeerCounts>>, peer: Peer) -> Option<Self> {
        let mut counts = limits.lock().unwrap_or_else(|e| e.into_inner());
        let pid = peer.pid.unwrap_or(0);
        let by_pid = counts.by_pid.get(&pid).copied().unwrap_or(0);
        let by_uid = counts.by_uid.get(&peer.uid).copied().unwrap_or(0);
        if by_pid >= MAX_CONNECTIONS_PER_PROCESS || by_uid >= MAX_CONNECTIONS_PER_UID {
            return None;
        }
        *counts.by_pid.entry(pid).or_default() += 1;
        *counts.by_uid.entry(peer.uid).or_default() += 1;
        Some(Self {
            limits: limits.clone(),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let PeerCounts { by_pid, by_uid } = &mut *counts;
        for (map, key) in [
            (by_pid, self.peer.pid.unwrap_or(0)),
            (by_uid, self.peer.uid),
        ] {
            if let Some(count) = map.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

/// Removes the socket file when the daemon stops.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
