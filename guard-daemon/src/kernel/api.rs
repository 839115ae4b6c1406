//! The API-client gate's probes and maps: uprobes on every client library
//! guardd finds (pinned like the other links, so they hold while guardd
//! restarts), `API_HELD` of the calls they stopped, `API_CONNS` of the
//! connections guardd is in the middle of a request of.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::programs::{
    links::FdLink,
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    UProbe,
};
use guard_common::{
    names::program, ApiConnKey, ApiHeldEntry, ApiHook, API_COOKIE_FIELD_SHIFT, API_HTTP2,
    API_OPAQUE,
};

use super::{
    api_follow::{starts_tls, Tasks},
    Kernel, KernelError,
};
use crate::api::{
    conns::KernelConn,
    libs::{ProbePoint, Probed},
};

/// One library or program the probes are attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTarget {
    pub path: PathBuf,
    /// Which file, as it was when probed: a file rebuilt under the same
    /// path, or rewritten in place, is another.
    pub file: FileId,
    pub points: Vec<ProbePoint>,
    /// Where its OpenSSL keeps an `SSL`'s shutdown flags, if known.
    pub ssl_shutdown: Option<u16>,
}

impl Kernel {
    /// Probes every client library of the system (the loader's cache,
    /// `node`): the writes of all of them on one probe event that follows
    /// the sessions. What cannot be probed is logged.
    pub(super) fn attach_api_system(&mut self) {
        let mut followed = Vec::new();
        for path in crate::api::libs::system_targets() {
            if let Err(err) = self.attach_api_file(&path, &mut followed) {
                tracing::error!("API probes not attached to {}: {err}", path.display());
            }
        }
        if let Err(err) = self.attach_followed(followed, Tasks::All) {
            tracing::error!("the TLS write probes are NOT attached: {err}");
            self.following.missed = Some(format!("the TLS write probes are not attached: {err}"));
        }
    }

    /// Probes `path` (a library a session process loaded). A library
    /// already probed is left as it is.
    pub fn attach_api(&mut self, path: &Path) -> Result<Option<ApiTarget>, KernelError> {
        let mut followed = Vec::new();
        let target = self.attach_api_file(path, &mut followed)?;
        self.attach_followed(followed, Tasks::Followed)?;
        Ok(target)
    }

    /// Loads the probe programs (once) and attaches them to `path`'s
    /// functions, but for the writes, which go into `followed`.
    fn attach_api_file(
        &mut self,
        path: &Path,
        followed: &mut Vec<super::api_follow::FollowedPoint>,
    ) -> Result<Option<ApiTarget>, KernelError> {
        let file = std::fs::metadata(path)
            .map(|m| FileId::of(&m))
            .map_err(|err| KernelError::Pin(format!("{}: {err}", path.display())))?;
        if self.api_targets.iter().any(|t| t.file == file) {
            return Ok(None);
        }
        // The same inode rewritten since it was probed (a running program
        // cannot be: ETXTBSY): the kernel would put the old breakpoints into
        // the new code, and step the old instructions there.
        let (rewritten, kept): (Vec<ApiTarget>, Vec<ApiTarget>) =
            std::mem::take(&mut self.api_targets)
                .into_iter()
                .partition(|t| t.file.dev == file.dev && t.file.ino == file.ino);
        self.api_targets = kept;
        for target in &rewritten {
            self.detach_target(target);
        }
        let probed = crate::api::libs::probed_in(path);
        let Probed {
            ref points,
            ssl_shutdown,
            ..
        } = probed;
        if points.is_empty() {
            return Ok(None);
        }
        for name in [
            program::API_TLS_WRITE,
            program::API_SQL_QUERY,
            program::API_TLS_FREE,
            program::API_DLOPEN_RETURN,
            program::API_TLS_START,
        ] {
            let probe: &mut UProbe = self.program(name)?;
            if probe.fd().is_err() {
                probe.load().map_err(KernelError::program(name))?;
                let info = probe.info().map_err(KernelError::program(name))?;
                self.list_loaded(name, "uprobe (client libraries)".into(), &info, true);
            }
        }
        // Writes follow the sessions only where a connection's constructor
        // can stop a process before its first write (see api_follow.rs).
        let triggered = points.iter().any(|point| starts_tls(point.hook));
        for point in points {
            let name = program_of(point.hook);
            let cookie = cookie(point.hook, &probed);
            if triggered && super::api_follow::followed(point.hook) {
                followed.push((path.to_path_buf(), *point, cookie as u32));
                continue;
            }
            let probe: &mut UProbe = self.program(name)?;
            let attach_point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(point.offset),
                cookie: Some(cookie),
            };
            let link = probe
                .attach(attach_point, path, UProbeScope::AllProcesses)
                .map_err(KernelError::program(name))?;
            let link = probe.take_link(link).map_err(KernelError::program(name))?;
            let link = FdLink::try_from(link)
                .map_err(|err| KernelError::Pin(format!("{name} on {}: {err}", path.display())))?;
            self.pin_link(pin_name(point.hook, path, file), link)?;
        }
        let target = ApiTarget {
            path: path.to_path_buf(),
            file,
            points: points.clone(),
            ssl_shutdown,
        };
        self.api_targets.push(target.clone());
        Ok(Some(target))
    }

    /// Drops the probes of Go programs whose file is gone (deleted or
    /// rebuilt: each `go test` runs a new binary) once no session task maps
    /// it any more; the files dropped. Outside sessions the probes do nothing.
    pub fn prune_api_programs(&mut self) -> Vec<FileId> {
        let is_gone = |target: &ApiTarget| {
            target.points.iter().any(|p| p.hook == ApiHook::GoTlsWrite)
                && std::fs::metadata(&target.path).map(|m| FileId::of(&m)).ok() != Some(target.file)
        };
        if !self.api_targets.iter().any(is_gone) {
            return Vec::new();
        }
        let mut mapped = std::collections::HashSet::new();
        for tid in self.session_tasks(None) {
            let maps = std::fs::read_to_string(format!("/proc/{tid}/maps")).unwrap_or_default();
            mapped.extend(maps.lines().filter_map(mapped_file));
        }
        let unused = |target: &ApiTarget| {
            let FileId { dev, ino, .. } = target.file;
            is_gone(target)
                && !mapped.contains(&(libc::major(dev).into(), libc::minor(dev).into(), ino))
        };
        let (dropped, kept): (Vec<ApiTarget>, Vec<ApiTarget>) =
            std::mem::take(&mut self.api_targets)
                .into_iter()
                .partition(unused);
        self.api_targets = kept;
        for target in &dropped {
            self.detach_target(target);
            tracing::info!(file = %target.path.display(), "API probes of a program that is gone removed");
        }
        dropped.into_iter().map(|t| t.file).collect()
    }

    /// Unpins (so detaches) the uprobe links of `target`'s points.
    fn detach_target(&mut self, target: &ApiTarget) {
        for point in &target.points {
            let name = pin_name(point.hook, &target.path, target.file);
            if let Some(link) = self.links.remove(&name) {
                if let Err(err) = link.unpin() {
                    tracing::warn!("{name}: not unpinned: {err}");
                }
            }
        }
    }

    /// The libraries and programs the probes are on.
    pub fn api_targets(&self) -> &[ApiTarget] {
        &self.api_targets
    }

    /// The call an API probe stopped thread `tid` in, if it is recorded.
    pub fn api_held(&self, tid: u32) -> Option<ApiHeldEntry> {
        self.api_held.get(&tid, 0).ok()
    }

    /// Every recorded API stop (thread id, entry).
    pub fn api_held_all(&self) -> Vec<(u32, ApiHeldEntry)> {
        self.api_held.iter().filter_map(Result::ok).collect()
    }

    /// Drops the record of `tid`'s stop, if it is still the one stopped at
    /// `ktime_ns`, and its process's with the last of its stops.
    pub fn forget_api_held(&mut self, tid: u32, ktime_ns: u64) {
        let Some(entry) = self.api_held(tid).filter(|e| e.ktime_ns == ktime_ns) else {
            return;
        };
        let _ = self.api_held.remove(&tid);
        self.forget_api_held_procs(&[entry.pid]);
    }

    /// Drops the mark of held processes none of whose threads is recorded
    /// stopped any more (a thread that exited leaves its mark behind). A
    /// probe that stops a thread of one just now re-marks it after this
    /// looked: a narrow race that leaves that stop unmarked, not a hold
    /// released (guardd still checks the thread's place before it answers).
    pub fn forget_api_held_procs(&mut self, pids: &[u32]) {
        let stopped: std::collections::HashSet<u32> = self
            .api_held_all()
            .into_iter()
            .map(|(_, e)| e.pid)
            .collect();
        for pid in pids {
            if !stopped.contains(pid) {
                let _ = self.api_held_procs.remove(pid);
            }
        }
    }

    /// Processes marked held by the API probes.
    pub fn api_held_procs(&self) -> Vec<u32> {
        self.api_held_procs.keys().filter_map(Result::ok).collect()
    }

    /// Tells the probes what to do with the connection's next writes.
    pub fn set_api_conn(
        &mut self,
        pid: u32,
        conn: u64,
        what: KernelConn,
    ) -> Result<(), KernelError> {
        let key = ApiConnKey { pid, _pad: 0, conn };
        let value = match what {
            KernelConn::Forget => {
                let _ = self.api_conns.remove(&key);
                return Ok(());
            }
            KernelConn::Expect(bytes) => bytes.min(API_HTTP2 - 1),
            KernelConn::Stop => 0,
            KernelConn::Opaque => API_OPAQUE,
            KernelConn::Http2 => API_HTTP2,
        };
        self.api_conns
            .insert(key, value, 0)
            .map_err(KernelError::map(guard_common::names::map::API_CONNS))
    }
}

fn cookie(hook: ApiHook, probed: &Probed) -> u64 {
    let field = match hook {
        ApiHook::SslWrite | ApiHook::SslWriteEx | ApiHook::SslWriteInternal => probed.ssl_shutdown,
        ApiHook::GoTlsWrite => probed.go_active_call,
        _ if hook.is_sql() => probed.pq_db,
        _ => None,
    };
    hook as u64 | u64::from(field.unwrap_or(0)) << API_COOKIE_FIELD_SHIFT
}

fn program_of(hook: ApiHook) -> &'static str {
    match hook {
        ApiHook::SslWrite
        | ApiHook::SslWriteEx
        | ApiHook::SslWriteInternal
        | ApiHook::GoTlsWrite
        | ApiHook::GnutlsRecordSend => program::API_TLS_WRITE,
        ApiHook::SslFree | ApiHook::GnutlsDeinit => program::API_TLS_FREE,
        ApiHook::Dlopen => program::API_DLOPEN_RETURN,
        ApiHook::SslNew | ApiHook::GnutlsInit => program::API_TLS_START,
        _ => program::API_SQL_QUERY,
    }
}

/// `api_SYMBOL_HASH` (bpffs refuses names with dots): one pin per function
/// and file, the same across restarts.
/// A file as probed: device, inode and change time (in nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub ctime_ns: i64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// A Go program's name holds its file's identity too: a binary rebuilt
/// under the same path is probed beside the old one, which may still run.
fn pin_name(hook: ApiHook, path: &Path, file: FileId) -> String {
    let hash = match hook {
        ApiHook::GoTlsWrite => {
            let FileId { dev, ino, ctime_ns } = file;
            let named = format!("{}#{dev}:{ino}:{ctime_ns}", path.display());
            super::uprobe_events::hash_of(Path::new(&named))
        }
        _ => super::uprobe_events::hash_of(path),
    };
    // Go's symbol has a `/` and parentheses: not for a file name.
    let symbol: String = (hook.symbol().chars())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("api_{symbol}_{hash:016x}")
}

/// `dev inode` of a `/proc/PID/maps` line as (major, minor, inode).
fn mapped_file(line: &str) -> Option<(u64, u64, u64)> {
    let mut fields = line.split_whitespace().skip(3);
    let (major, minor) = fields.next()?.split_once(':')?;
    let ino = fields.next()?.parse().ok()?;
    Some((
        u64::from_str_radix(major, 16).ok()?,
        u64::from_str_radix(minor, 16).ok()?,
        ino,
    ))
}
