//! Frozen holds. A held process is moved into a cgroup v2 leaf of its own and
//! the leaf is frozen (`cgroup.freeze`): a frozen task does not return to
//! user space, whatever signals it gets (SIGCONT included) and whether or not
//! guardd runs, until it is thawed or killed. Approval moves it back to the
//! cgroup it came from (or the nearest living ancestor); a denial kills it.
//!
//! The leaves live under `<cgroup2 mount>/agent-guard/<pin dir, escaped>/`,
//! owned by root: the agent (the held process's uid) can neither write
//! `cgroup.freeze` there nor move the process out, since a move needs write
//! access to the common ancestor's `cgroup.procs` (the root cgroup's).
use std::{
    collections::HashSet,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The directory under the cgroup2 mount that holds every guardd's leaves.
const TOP: &str = "agent-guard";

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct FreezeError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

/// Where this guardd freezes holds.
#[derive(Debug)]
pub struct Freezer {
    /// The cgroup2 mount point (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on a hybrid host).
    mount: PathBuf,
    /// This guardd's directory of leaves.
    base: PathBuf,
    /// Whether leaves have `cgroup.kill` (Linux 5.14).
    kill_file: bool,
}

/// A held process's leaf, and the cgroup (v2 path) it came from; kept in the
/// state file, so that a restarted guardd finds both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frozen {
    pub cgroup: PathBuf,
    pub origin: String,
}

impl Freezer {
    /// The freezer of the guardd pinning under `pin_dir`, or why there is
    /// none here (no cgroup2 mount, a kernel without `cgroup.freeze`, a
    /// read-only cgroup file system).
    pub fn detect(pin_dir: &Path) -> Result<Self, String> {
        let mount = cgroup2_mount().ok_or("no cgroup2 file system is mounted")?;
        let name = pin_dir
            .to_string_lossy()
            .trim_matches('/')
            .replace('/', "-");
        let base = mount
            .join(TOP)
            .join(if name.is_empty() { "root" } else { &name });
        fs::create_dir_all(&base).map_err(|err| format!("{}: {err}", base.display()))?;
        if !base.join("cgroup.freeze").exists() {
            return Err(format!(
                "{} has no cgroup.freeze (Linux 5.2 or later has it)",
                mount.display()
            ));
        }
        Ok(Self {
            kill_file: base.join("cgroup.kill").exists(),
            mount,
            base,
        })
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Freezes process `pid` in a new leaf named `id`: the leaf is frozen
    /// first, so the process is frozen the moment it arrives.
    pub fn freeze(&self, pid: u32, id: &str) -> Result<Frozen, FreezeError> {
        let origin = cgroup_of(pid).map_err(|source| FreezeError {
            what: "reading the cgroup of",
            path: format!("/proc/{pid}/cgroup").into(),
            source,
        })?;
        let cgroup = self.base.join(id);
        match fs::create_dir(&cgroup) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                return Err(FreezeError {
                    what: "creating",
                    path: cgroup,
                    source: err,
                })
            }
            _ => {}
        }
        let frozen = Frozen { cgroup, origin };
        let moved = write(&frozen.cgroup.join("cgroup.freeze"), "1")
            .and_then(|()| write(&frozen.cgroup.join("cgroup.procs"), &pid.to_string()));
        if let Err(err) = moved {
            let _ = fs::remove_dir(&frozen.cgroup);
            return Err(err);
        }
        Ok(frozen)
    }

    /// Whether `pid` is in `frozen`'s leaf now (a restart's check that the
    /// hold it saved still holds).
    pub fn holds(&self, frozen: &Frozen, pid: u32) -> bool {
        cgroup_of(pid)
            .is_ok_and(|path| self.mount.join(path.trim_start_matches('/')) == frozen.cgroup)
    }

    /// Lets a frozen process go: back into the cgroup it came from, or its
    /// nearest ancestor that takes it (a removed cgroup, or one that has
    /// controllers for its children, does not). Where none does, it is
    /// thawed where it is. Returns where it runs.
    pub fn release(&self, frozen: &Frozen, pid: u32) -> Result<String, FreezeError> {
        let mut path = Some(frozen.origin.as_str());
        while let Some(candidate) = path {
            let procs = self
                .mount
                .join(candidate.trim_start_matches('/'))
                .join("cgroup.procs");
            match write(&procs, &pid.to_string()) {
                Ok(()) => {
                    let _ = fs::remove_dir(&frozen.cgroup);
                    return Ok(candidate.to_string());
                }
                // Gone already: nothing to release.
                Err(err) if err.source.raw_os_error() == Some(libc::ESRCH) => {
                    return Ok(String::new())
                }
                Err(_) => path = parent(candidate),
            }
        }
        write(&frozen.cgroup.join("cgroup.freeze"), "0")?;
        Ok(frozen.cgroup.display().to_string())
    }

    /// Kills every process in the leaf (`cgroup.kill` where the kernel has
    /// it; the caller's SIGKILL does the same elsewhere). Fatal signals end
    /// frozen tasks.
    pub fn kill(&self, frozen: &Frozen) {
        if self.kill_file {
            if let Err(err) = write(&frozen.cgroup.join("cgroup.kill"), "1") {
                tracing::warn!("{err}");
            }
        }
    }

    /// Removes the leaves no hold in `keep` uses and no process is in (an
    /// ended hold's leaf is removed once its process has exited).
    pub fn sweep(&self, keep: &HashSet<&Path>) {
        for leaf in self.leaves() {
            if !keep.contains(leaf.as_path()) {
                let _ = fs::remove_dir(&leaf);
            }
        }
    }

    /// Every leaf of this guardd, with the processes in it.
    pub fn frozen_processes(&self) -> Vec<(PathBuf, Vec<u32>)> {
        self.leaves()
            .into_iter()
            .map(|leaf| {
                let pids = fs::read_to_string(leaf.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect();
                (leaf, pids)
            })
            .collect()
    }

    /// Removes this guardd's directory and, if no other guardd uses it, the
    /// top one (teardown, after the processes were killed).
    pub fn remove_all(&self) {
        for leaf in self.leaves() {
            for _ in 0..50 {
                // A killed task leaves its cgroup a moment after the signal.
                if fs::remove_dir(&leaf).is_ok() || !leaf.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = fs::remove_dir(&self.base);
        let _ = fs::remove_dir(self.mount.join(TOP));
    }

    fn leaves(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.base)
            .map(|dir| {
                dir.flatten()
                    .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|entry| entry.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The first cgroup2 mount point in this mount namespace.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        // `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`
        let (fields, tail) = line.split_once(" - ")?;
        let point = fields.split(' ').nth(4)?;
        (tail.split(' ').next()? == "cgroup2").then(|| PathBuf::from(point.replace("\\040", " ")))
    })
}

/// The cgroup2 path of `pid` (`/user.slice/...`), from its `0::` line.
fn cgroup_of(pid: u32) -> io::Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 line"))
}

fn parent(path: &str) -> Option<&str> {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) if path != "/" => Some("/"),
        Some((up, _)) if !up.is_empty() => Some(up),
        _ => None,
    }
}

/// One write(2) of `text`: a cgroup file takes each write as one command.
fn write(path: &Path, text: &str) -> Result<(), FreezeError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|source| FreezeError {
            what: "writing",
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_walks_up_to_the_root_cgroup() {
        assert_eq!(parent("/user.slice/user-1000.slice"), Some("/user.slice"));
        assert_eq!(parent("/user.slice"), Some("/"));
        assert_eq!(parent("/"), None);
    }
}
