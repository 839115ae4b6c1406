//! The API probes on TLS writes trap in the session processes that make TLS
//! connections, and nowhere else: a process outside every session runs its
//! `SSL_write` untouched, and a session's `git status` carries nothing. The
//! writes of all client libraries are one tracefs probe event
//! (`uprobe_events`, a probe per function) whose program rides on one perf
//! event on guardd (pinned, so it stays while guardd restarts). guardd opens
//! an inherited event of it on every thread of a process it follows, which
//! writes the breakpoints into that process's memory and into that of every
//! child it forks; each copy costs the kernel tens of microseconds at the
//! fork and at the exit, which is why not every session task carries one.
//!
//! What is followed: a session thread that calls `SSL_new` or `gnutls_init`
//! (probed everywhere, `api_tls_start`) while not followed stops there,
//! before its connection exists, and guardd follows its whole process. The
//! events leave a task at its exec where the kernel can (`remove_on_exec`,
//! 5.13): the new image is followed once it makes a connection of its own.
//! A file with write functions but no such constructor has its writes
//! probed everywhere instead. At guardd's start every session task is
//! followed (connections made while it was down). The events are guardd's:
//! while it is down, sessions do not trap there (calls already held stay
//! held), and a restart follows them again.
use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::programs::{links::PinnedLink, UProbe};
use guard_common::{names::program, ApiHook, API_COOKIE_HOOK, API_COOKIE_POINTS};

use super::{uprobe_events, Kernel, KernelError};
use crate::api::libs::ProbePoint;

/// Rounds of looking for tasks cloned while guardd was opening events on
/// their parents; a session that keeps cloning past them is reported.
const FOLLOW_ROUNDS: usize = 16;
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// One tracefs probe event whose breakpoints follow the sessions: the
/// writes of several files share it, so a task carries one inherited
/// perf event for all of them.
#[derive(Debug, Clone)]
pub struct FollowedProbe {
    /// The functions it is on.
    pub points: usize,
    id: u64,
}

/// What `guardctl status` says of the followed probes.
pub struct FollowedView<'a> {
    pub probes: &'a [FollowedProbe],
    pub sessions: usize,
    /// Events guardd holds open (one per probe event and followed thread).
    pub events: usize,
    pub missed: Option<&'a str>,
    pub exec_unfollows: bool,
}

/// A write probe to be placed: the file, where, and its own cookie.
pub(super) type FollowedPoint = (PathBuf, ProbePoint, u32);

/// The events guardd holds open for the sessions.
#[derive(Default)]
pub(super) struct Following {
    pub(super) probes: Vec<FollowedProbe>,
    /// Per session, the events on its tasks (each inherited below them).
    events: HashMap<u32, Vec<OwnedFd>>,
    /// Tasks of sessions no event could be opened on, with why (the last).
    pub(super) missed: Option<String>,
    /// When ended sessions were last looked for.
    pruned: Option<Instant>,
    /// Whether the kernel takes `remove_on_exec` (None: not tried yet).
    exec_unfollows: Option<bool>,
}

/// Which session tasks get a probe's event.
#[derive(Clone, Copy)]
pub(super) enum Tasks {
    /// Every task: at guardd's start, and in adopted sessions.
    All,
    /// Those followed already (a probe added later).
    Followed,
}

/// Whether a hook's probe follows the sessions (else it traps everywhere):
/// the writes, which every TLS client makes constantly.
pub fn followed(hook: ApiHook) -> bool {
    matches!(
        hook,
        ApiHook::SslWrite
            | ApiHook::SslWriteEx
            | ApiHook::SslWriteInternal
            | ApiHook::GnutlsRecordSend
    )
}

/// Whether a hook's probe stops a session thread the writes do not follow
/// yet: the constructors every TLS connection starts with.
pub fn starts_tls(hook: ApiHook) -> bool {
    matches!(hook, ApiHook::SslNew | ApiHook::GnutlsInit)
}

/// Raises the soft limit of open files to the hard one: guardd holds one
/// event per write probe for each task a session had when guardd followed it.
pub(super) fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    if let Err(err) = setrlimit(Resource::Nofile, limit) {
        tracing::warn!("open-file limit not raised: {err}");
    }
}

impl Kernel {
    /// Puts `api_tls_write` on `points` as probe events that follow the
    /// sessions (as few as can share one: within an event, a page offset
    /// must name one cookie), and follows the sessions running now.
    pub(super) fn attach_followed(
        &mut self,
        points: Vec<FollowedPoint>,
        tasks: Tasks,
    ) -> Result<(), KernelError> {
        let mut events: Vec<Vec<FollowedPoint>> = Vec::new();
        for point in points {
            let page = point.1.offset & 0xfff;
            let fits = |event: &&mut Vec<FollowedPoint>| {
                (event.iter())
                    .all(|(_, other, cookie)| other.offset & 0xfff != page || *cookie == point.2)
            };
            match events.iter_mut().find(fits) {
                Some(event) => event.push(point),
                None => events.push(vec![point]),
            }
        }
        for event in events {
            self.attach_shared(event, tasks)?;
        }
        Ok(())
    }

    fn attach_shared(
        &mut self,
        points: Vec<FollowedPoint>,
        tasks: Tasks,
    ) -> Result<(), KernelError> {
        let index = self.following.probes.len() as u32;
        if index > API_COOKIE_HOOK {
            return Err(KernelError::Tracefs("too many shared probe events".into()));
        }
        let at: Vec<(&Path, u64)> = (points.iter())
            .map(|(path, point, _)| (path.as_path(), point.offset))
            .collect();
        let hash = uprobe_events::hash_of(&at);
        let event = format!("api_writes_{hash:016x}");
        let group = uprobe_events::group_of(&self.pins.root);
        let tracefs = |err: io::Error| KernelError::Tracefs(format!("{group}/{event}: {err}"));
        // Each function's cookie first: a hit finds it as soon as it can happen.
        for (_, point, cookie) in &points {
            let key = index << 12 | (point.offset & 0xfff) as u32;
            (self.api_points.insert(key, cookie, 0))
                .map_err(KernelError::map(guard_common::names::map::API_POINTS))?;
        }
        let id = uprobe_events::define(&group, &event, &at).map_err(tracefs)?;
        let carrier = self
            .open_followed(id, std::process::id(), false)
            .map_err(tracefs)?;
        let probe: &mut UProbe = self.program(program::API_TLS_WRITE)?;
        let program_fd = probe
            .fd()
            .map_err(KernelError::program(program::API_TLS_WRITE))?;
        let cookie = u64::from(API_COOKIE_POINTS | index);
        let link =
            uprobe_events::link(program_fd.as_fd(), carrier.as_fd(), cookie).map_err(tracefs)?;
        self.pin_raw_link(&format!("api_follow_{hash:016x}"), link)?;
        self.following.probes.push(FollowedProbe {
            points: points.len(),
            id,
        });
        self.follow(None, &[index as usize], tasks);
        Ok(())
    }

    /// A perf event of probe event `id` on task `tid` that leaves the task
    /// at its exec where the kernel can; the first call finds out whether
    /// it can and tells the kernel side (`SETTING_EXEC_UNFOLLOWS`) before
    /// any such event exists.
    fn open_followed(&mut self, id: u64, tid: u32, inherit: bool) -> io::Result<OwnedFd> {
        if self.following.exec_unfollows.is_none() {
            let takes = match uprobe_events::open_event(id, std::process::id(), false, true) {
                Ok(_) => true,
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => false,
                Err(err) => return Err(err),
            };
            self.following.exec_unfollows = Some(takes);
            if takes {
                if let Err(err) = self.add_settings(guard_common::SETTING_EXEC_UNFOLLOWS) {
                    // The kernel side would not drop the mark at exec: the
                    // events must not leave the task there either.
                    tracing::error!("{err}: TLS write events are kept across execs");
                    self.following.exec_unfollows = Some(false);
                }
            }
        }
        let at_exec = self.following.exec_unfollows == Some(true);
        uprobe_events::open_event(id, tid, inherit, at_exec)
    }

    /// Pins a raw link fd as `links/NAME` in place of an earlier run's: the
    /// new one is attached before the old one's pin is replaced.
    fn pin_raw_link(&mut self, name: &str, link: OwnedFd) -> Result<(), KernelError> {
        let path = self.pins.link(name);
        let fresh = self.pins.link(&format!("{name}_new"));
        let _ = std::fs::remove_file(&fresh);
        let pin_err = |err: io::Error| KernelError::Pin(format!("{}: {err}", path.display()));
        uprobe_events::pin(link.as_fd(), &fresh).map_err(pin_err)?;
        std::fs::rename(&fresh, &path).map_err(pin_err)?;
        let pinned = PinnedLink::from_pin(&path)
            .map_err(|err| KernelError::Pin(format!("{}: {err}", path.display())))?;
        self.links.insert(name.to_string(), pinned);
        Ok(())
    }

    /// Follows every task of session `id`, adopted from processes that ran
    /// before it existed: they may hold connections made unseen by
    /// `api_tls_start`, which stops only session threads.
    pub fn follow_adopted(&mut self, id: u32) {
        let all: Vec<usize> = (0..self.following.probes.len()).collect();
        self.follow(Some(id), &all, Tasks::All);
    }

    /// Follows every thread of process `pid` (stopped by `api_tls_start`)
    /// with every followed probe, over rounds until no thread is left
    /// without. Err: a thread could not be followed.
    pub fn follow_process(&mut self, pid: u32) -> Result<(), String> {
        let Some(entry) = self.session_of(pid) else {
            return Ok(()); // gone, or not in a session: nothing to follow
        };
        let mut done: HashSet<u32> = HashSet::new();
        for _ in 0..FOLLOW_ROUNDS {
            let fresh: Vec<u32> = crate::procfs::threads(pid)
                .into_iter()
                .filter(|tid| !done.contains(tid))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            for tid in fresh {
                done.insert(tid);
                self.follow_task(tid, entry.session_id, None)?;
            }
        }
        Err(format!(
            "its threads kept cloning through {FOLLOW_ROUNDS} rounds"
        ))
    }

    /// Opens `probes`' events (all when None) on `tid`, then marks it
    /// followed for `api_tls_start`.
    fn follow_task(
        &mut self,
        tid: u32,
        session: u32,
        probes: Option<&[usize]>,
    ) -> Result<(), String> {
        let all: Vec<usize> = (0..self.following.probes.len()).collect();
        for probe in probes.unwrap_or(&all) {
            let id = self.following.probes[*probe].id;
            match self.open_followed(id, tid, true) {
                Ok(fd) => self.following.events.entry(session).or_default().push(fd),
                // Gone meanwhile: nothing of it to follow.
                Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
                Err(err) => {
                    let why = err.to_string();
                    self.missed(tid, session, &why);
                    return Err(why);
                }
            }
        }
        if let Ok(mut entry) = self.sessions.get(&tid, 0) {
            entry.flags |= guard_common::SESSION_TLS_FOLLOWED;
            // Lost, the thread stops again at its next connection: no harm.
            let _ = self.sessions.insert(tid, entry, 0);
        }
        Ok(())
    }

    /// Opens `probes`' events on the tasks of session `only` (or all) that
    /// `tasks` names, over rounds until no task is left without: a task
    /// cloned before its parent's event was opened is in `SESSIONS`, one
    /// cloned after inherits it.
    fn follow(&mut self, only: Option<u32>, probes: &[usize], tasks: Tasks) {
        if probes.is_empty() {
            return;
        }
        let mut done: HashSet<u32> = HashSet::new();
        for _ in 0..FOLLOW_ROUNDS {
            let fresh: Vec<(u32, u32)> = (self.sessions.iter())
                .filter_map(Result::ok)
                .filter(|(tid, entry)| {
                    only.is_none_or(|id| entry.session_id == id)
                        && !done.contains(tid)
                        && match tasks {
                            Tasks::All => true,
                            Tasks::Followed => {
                                entry.flags & guard_common::SESSION_TLS_FOLLOWED != 0
                            }
                        }
                })
                .map(|(tid, entry)| (tid, entry.session_id))
                .collect();
            if fresh.is_empty() {
                return;
            }
            for (tid, session) in fresh {
                done.insert(tid);
                // Said by follow_task; the others are followed still.
                let _ = self.follow_task(tid, session, Some(probes));
            }
        }
        let why = format!("its tasks kept cloning through {FOLLOW_ROUNDS} rounds");
        self.missed(0, only.unwrap_or(0), &why);
    }

    fn missed(&mut self, tid: u32, session: u32, why: &str) {
        tracing::error!(
            tid,
            session,
            "API probes cannot follow a session task: its TLS writes are NOT stopped: {why}"
        );
        self.following.missed = Some(format!("task {tid} of session {session}: {why}"));
    }

    /// Closes the events of sessions none of whose tasks is left; looks
    /// every PRUNE_EVERY (a walk of the whole session map).
    pub fn unfollow_ended_sessions(&mut self) {
        let recent = (self.following.pruned).is_some_and(|at| at.elapsed() < PRUNE_EVERY);
        if self.following.events.is_empty() || recent {
            return;
        }
        self.following.pruned = Some(Instant::now());
        let live: HashSet<u32> = (self.sessions.iter())
            .filter_map(Result::ok)
            .map(|(_, entry)| entry.session_id)
            .collect();
        self.following
            .events
            .retain(|session, _| live.contains(session));
    }

    /// The probes that follow sessions, how many sessions they follow, and
    /// what they miss.
    pub fn followed_probes(&self) -> FollowedView<'_> {
        FollowedView {
            probes: &self.following.probes,
            sessions: self.following.events.len(),
            events: self.following.events.values().map(Vec::len).sum(),
            missed: self.following.missed.as_deref(),
            exec_unfollows: self.following.exec_unfollows == Some(true),
        }
    }
}
