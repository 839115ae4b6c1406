//! The policy files where neither the BPF LSM nor a seccomp filter keeps
//! session processes off them: fanotify permission events on the config file
//! and on the files in `policy.d`. A session process's open of one of them
//! (to write it, or to read it) is refused with EPERM before it happens; every
//! other process's open is let through at once.
//!
//! fanotify sees opens, not unlink or rename: a drop-in moved into `policy.d`
//! is left to the report-only gate, which makes guardd refuse the reload.
//! While guardd is stopped (SIGSTOP) an open of these files waits; when guardd
//! exits the kernel lets every waiting open through.
use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::mpsc::Sender,
};

use aya::maps::{HashMap, MapData};
use guard_common::SessionEntry;
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};

/// An open of a policy file that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub pid: u32,
    pub session: u32,
    pub path: String,
}

/// The fanotify group; marks are added again whenever the files may have
/// been replaced (a reload).
pub struct PolicyLock {
    group: std::sync::Arc<Fanotify>,
}

impl PolicyLock {
    /// Starts the thread that answers the permission events. `sessions` is the
    /// kernel's session map, opened from its pin: the thread never waits for
    /// the guard's lock (guardd itself opens the config under it).
    pub fn start(sessions_pin: &Path, refusals: Sender<Refusal>) -> Result<Self, String> {
        let data = MapData::from_pin(sessions_pin)
            .map_err(|err| format!("session map {}: {err}", sessions_pin.display()))?;
        let sessions: HashMap<MapData, u32, SessionEntry> =
            HashMap::try_from(aya::maps::Map::HashMap(data))
                .map_err(|err| format!("session map: {err}"))?;
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC,
            EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC | EventFFlags::O_LARGEFILE,
        )
        .map_err(|err| format!("fanotify_init: {err}"))?;
        let group = std::sync::Arc::new(group);
        let reader = group.clone();
        std::thread::Builder::new()
            .name("policy-lock".into())
            .spawn(move || answer(&reader, &sessions, &refusals))
            .map_err(|err| format!("thread: {err}"))?;
        Ok(Self { group })
    }

    /// Marks the config file and the files directly in `dropins`; what does
    /// not exist is skipped. Returns what is marked.
    pub fn mark(&self, config: &Path, dropins: &Path) -> Vec<PathBuf> {
        let mut marked = Vec::new();
        let targets = [
            (config, MaskFlags::FAN_OPEN_PERM),
            (
                dropins,
                MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_EVENT_ON_CHILD,
            ),
        ];
        for (path, mask) in targets {
            if !path.exists() {
                continue;
            }
            match self.group.mark(
                MarkFlags::FAN_MARK_ADD,
                mask,
                nix::fcntl::AT_FDCWD,
                Some(path),
            ) {
                Ok(()) => marked.push(path.to_path_buf()),
                Err(err) => tracing::warn!("fanotify mark {}: {err}", path.display()),
            }
        }
        marked
    }
}

fn answer(
    group: &Fanotify,
    sessions: &HashMap<MapData, u32, SessionEntry>,
    refusals: &Sender<Refusal>,
) {
    let own = std::process::id();
    loop {
        let events = match group.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => {
                // The kernel lets every waiting open through once the group closes.
                tracing::error!("policy files: fanotify read failed, no longer guarded: {err}");
                return;
            }
        };
        for event in events {
            let Some(fd) = event.fd() else {
                continue;
            };
            let pid = event.pid() as u32;
            let session = (pid != own)
                .then(|| sessions.get(&pid, 0).ok())
                .flatten()
                .map(|entry| entry.session_id);
            let response = if session.is_some() {
                Response::FAN_DENY
            } else {
                Response::FAN_ALLOW
            };
            if let Err(err) = group.write_response(FanotifyResponse::new(fd, response)) {
                tracing::error!("policy files: fanotify answer failed: {err}");
            }
            if let Some(session) = session {
                let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                let _ = refusals.send(Refusal { pid, session, path });
            }
        }
    }
}
