//! The audit record of a process or a hold: who ran what, where, from which
//! ancestry.
use super::*;

impl Guard {
    pub(super) fn record_for(
        &self,
        process: &ProcessHandle,
        session: u32,
        argv: &[Vec<u8>],
        exe: &str,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(AuditEvent::Hold);
        record.pid = Some(process.pid);
        record.session = Some(session);
        record.agent = self.sessions.get(&session).and_then(|s| s.agent.clone());
        record.uid = procfs::uid(process.pid).ok();
        record.cwd = Some(procfs::link(process.pid, "cwd"));
        record.exe = Some(exe.to_string());
        record.argv = argv.iter().map(|a| escape_bytes(a)).collect();
        record.ancestry = ancestry(process.pid);
        record.context = context_of(process.pid);
        record
    }

    pub(super) fn hold_record(&self, hold: &Hold, event: AuditEvent) -> AuditRecord {
        let mut record = AuditRecord::new(event);
        record.request_id = Some(hold.id.clone());
        record.session = Some(hold.session);
        record.agent = hold.agent.clone();
        record.pid = Some(hold.process.pid);
        record.uid = Some(hold.uid);
        record.cwd = Some(hold.cwd.clone());
        record.exe = Some(hold.exe.clone());
        record.argv = hold.argv.iter().map(|a| escape_bytes(a)).collect();
        record.rule = Some(hold.rule.clone());
        record.ancestry = hold.ancestry.clone();
        record.operation = hold.gate.as_ref().map(|g| g.operation.clone());
        record.context = hold.context.clone();
        record.why = hold.why.clone();
        record
    }
}

pub(super) fn identity(peer: Peer) -> String {
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

/// `NAME=value` of the CONTEXT_ENV variables the process has.
pub(super) fn context_of(pid: u32) -> Vec<String> {
    procfs::environ(pid, CONTEXT_ENV)
        .iter()
        .map(|(k, v)| format!("{k}={}", escape_bytes(v.as_bytes())))
        .collect()
}

pub(super) fn ancestry(pid: u32) -> Vec<String> {
    procfs::ancestry(pid)
        .into_iter()
        .map(|(pid, comm)| format!("{pid}:{}", escape_bytes(comm.as_bytes())))
        .collect()
}
