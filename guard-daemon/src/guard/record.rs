//! Who a request came from: its session's agent, and the approver's identity.
use super::*;

impl Guard {
    /// The request of a process whose command no rule judged (a gated call's
    /// caller), read whole from /proc.
    pub(super) fn request_of(&self, pid: u32, session: u32) -> Request {
        Request::read(pid, session, self.sessions.agent_of(session))
    }
}

pub(super) fn identity(peer: Peer) -> String {
    if peer == Peer::RELAY {
        return "the fleet relay".into();
    }
    let name = nix::unistd::User::from_uid(peer.uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    match (name, peer.pid) {
        (Some(name), Some(pid)) => format!("{name} (uid {}, pid {pid})", peer.uid),
        (None, Some(pid)) => format!("uid {} (pid {pid})", peer.uid),
        (_, None) => format!("uid {}", peer.uid),
    }
}
