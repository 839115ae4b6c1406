//! Frozen holds. A held process is moved into a cgroup leaf of its own and
//! the leaf is frozen (cgroup v2 `cgroup.freeze`, or the v1 freezer's
//! `freezer.state` where only v1 is mounted): a frozen task does not return
//! to user space, whatever signals it gets (SIGCONT included) and whether or
//! not guardd runs, until it is thawed or killed. Approval moves it back to
//! the cgroup it came from (or the nearest living ancestor); a denial kills it.
//!
//! The leaves live under `<hierarchy mount>/agent-guard/<pin dir, escaped>/`,
//! owned by root: the agent (the held process's uid) can neither write the
//! freeze file there nor move the process out, since a move needs write
//! access to the common ancestor's `cgroup.procs` (v2) or to a root-owned
//! cgroup's (v1).
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

/// Which freezer holds execs: the cgroup v2 one, else v1 (`auto`), or v1
/// where both are mounted (`v1`: tests of the v1 freezer on a hybrid host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    #[default]
    Auto,
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// With `cgroup.kill` (Linux 5.14) or not: read from the leaves' directory.
    V2 {
        kill_file: bool,
    },
    V1,
}

impl Version {
    fn freeze_file(self) -> &'static str {
        match self {
            Version::V2 { .. } => "cgroup.freeze",
            Version::V1 => "freezer.state",
        }
    }

    fn state(self, frozen: bool) -> &'static str {
        match (self, frozen) {
            (Version::V2 { .. }, true) => "1",
            (Version::V2 { .. }, false) => "0",
            (Version::V1, true) => "FROZEN",
            (Version::V1, false) => "THAWED",
        }
    }
}

/// Where this guardd freezes holds.
#[derive(Debug)]
pub struct Freezer {
    /// The hierarchy's mount point (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on a hybrid host; `/sys/fs/cgroup/freezer` for v1).
    mount: PathBuf,
    /// This guardd's directory of leaves.
    base: PathBuf,
    version: Version,
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
    /// none here (no cgroup2 or v1 freezer mount, a kernel without
    /// `cgroup.freeze`, a read-only cgroup file system).
    pub fn detect(pin_dir: &Path, choice: Choice) -> Result<Self, String> {
        let v1 = || {
            let mount = v1_mount().ok_or("no cgroup v1 freezer hierarchy is mounted")?;
            Self::at(mount, pin_dir, Version::V1, true)
        };
        if choice == Choice::V1 {
            return v1();
        }
        let v2 = cgroup2_mount()
            .ok_or_else(|| "no cgroup2 file system is mounted".to_string())
            .and_then(|mount| Self::at(mount, pin_dir, Version::V2 { kill_file: false }, true));
        v2.or_else(|v2_why| v1().map_err(|v1_why| format!("{v2_why}; {v1_why}")))
    }

    /// The freezers that have leaves of the guardd pinning under `pin_dir`
    /// (teardown: whichever hierarchy that guardd used).
    pub fn existing(pin_dir: &Path) -> Vec<Self> {
        let v2 = cgroup2_mount().map(|mount| (mount, Version::V2 { kill_file: false }));
        let v1 = v1_mount().map(|mount| (mount, Version::V1));
        [v2, v1]
            .into_iter()
            .flatten()
            .filter_map(|(mount, version)| Self::at(mount, pin_dir, version, false).ok())
            .collect()
    }

    fn at(mount: PathBuf, pin_dir: &Path, version: Version, create: bool) -> Result<Self, String> {
        let name = pin_dir
            .to_string_lossy()
            .trim_matches('/')
            .replace('/', "-");
        let base = mount
            .join(TOP)
            .join(if name.is_empty() { "root" } else { &name });
        if create {
            fs::create_dir_all(&base).map_err(|err| format!("{}: {err}", base.display()))?;
        } else if !base.is_dir() {
            return Err(format!("{} is not there", base.display()));
        }
        if !base.join(version.freeze_file()).exists() {
            return Err(format!(
                "{} has no {} (cgroup v2: Linux 5.2 or later has it)",
                mount.display(),
                version.freeze_file()
            ));
        }
        let version = match version {
            Version::V2 { .. } => Version::V2 {
                kill_file: base.join("cgroup.kill").exists(),
            },
            v1 => v1,
        };
        Ok(Self {
            mount,
            base,
            version,
        })
    }

    /// Whether this is the v1 freezer: a task frozen there cannot be
    /// ptrace-attached (the attach waits for a trap it cannot reach), so
    /// guardd traces before freezing and does not trace a re-adopted one.
    pub fn is_v1(&self) -> bool {
        self.version == Version::V1
    }

    /// Writes the leaf's freeze file: frozen, or thawed in place.
    fn set_state(&self, leaf: &Path, frozen: bool) -> Result<(), FreezeError> {
        let version = self.version;
        write(&leaf.join(version.freeze_file()), version.state(frozen))
    }

    /// "cgroup v2 freezer" or "cgroup v1 freezer".
    pub fn name(&self) -> &'static str {
        match self.version {
            Version::V2 { .. } => "cgroup v2 freezer",
            Version::V1 => "cgroup v1 freezer",
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Freezes process `pid` in a new leaf named `id`: the leaf is frozen
    /// first, so the process is frozen the moment it arrives.
    pub fn freeze(&self, pid: u32, id: &str) -> Result<Frozen, FreezeError> {
        let origin = cgroup_of(pid, self.version).map_err(|source| FreezeError {
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
        let moved = self
            .set_state(&frozen.cgroup, true)
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
        cgroup_of(pid, self.version)
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
        self.set_state(&frozen.cgroup, false)?;
        Ok(frozen.cgroup.display().to_string())
    }

    /// Kills every process in the leaf: `cgroup.kill` where the kernel has
    /// it (v2 frozen tasks die of a fatal signal; the caller's SIGKILL does
    /// the same elsewhere). A v1 frozen task dies only once thawed: each gets
    /// SIGKILL first, and the leaf is thawed only if every one got it.
    /// Called before the caller's own kill, which may wait for the exit.
    pub fn kill(&self, frozen: &Frozen) {
        self.kill_leaf(&frozen.cgroup);
    }

    fn kill_leaf(&self, leaf: &Path) {
        let result = match self.version {
            Version::V2 { kill_file: true } => write(&leaf.join("cgroup.kill"), "1"),
            Version::V2 { kill_file: false } => Ok(()),
            Version::V1 => {
                let killed = pids_in(leaf).into_iter().all(|pid| {
                    let sent = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    sent == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
                });
                match killed {
                    true => self.set_state(leaf, false),
                    false => {
                        tracing::error!("{}: SIGKILL refused: left frozen", leaf.display());
                        Ok(())
                    }
                }
            }
        };
        if let Err(err) = result {
            tracing::warn!("{err}");
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
                let pids = pids_in(&leaf);
                (leaf, pids)
            })
            .collect()
    }

    /// Kills what is still in this guardd's leaves and removes them, its
    /// directory and, if no other guardd uses it, the top one (teardown).
    pub fn remove_all(&self) {
        for leaf in self.leaves() {
            self.kill_leaf(&leaf);
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

/// The first cgroup v1 hierarchy with the freezer controller.
fn v1_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (fields, tail) = line.split_once(" - ")?;
        let point = fields.split(' ').nth(4)?;
        let mut tail = tail.split(' ');
        let (kind, options) = (tail.next()?, tail.nth(1)?);
        (kind == "cgroup" && options.split(',').any(|o| o == "freezer"))
            .then(|| PathBuf::from(point.replace("\\040", " ")))
    })
}

/// The path of `pid` in the hierarchy (`/user.slice/...`): its `0::` line
/// for v2, the line naming `freezer` for v1.
fn cgroup_of(pid: u32, version: Version) -> io::Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let ours = match version {
                Version::V2 { .. } => line.starts_with("0::"),
                Version::V1 => controllers.split(',').any(|c| c == "freezer"),
            };
            ours.then(|| path.to_string())
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no line of its hierarchy"))
}

/// The processes in a leaf.
fn pids_in(leaf: &Path) -> Vec<u32> {
    fs::read_to_string(leaf.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
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
