//! agent-guard's own files, which session processes may not change where the
//! BPF LSM runs: its binaries, policy, state, audit log, socket and pins.
//! The kernel knows files by device and inode, so the set is recomputed
//! whenever a file may have been replaced (start and every policy reload).
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use guard_common::{FileKey, PROTECT_ENTRIES, PROTECT_FILE};

/// systemd unit files, wherever the package or an admin put them.
const UNIT_FILES: &[&str] = &[
    "/etc/systemd/system/agent-guard.service",
    "/lib/systemd/system/agent-guard.service",
    "/usr/lib/systemd/system/agent-guard.service",
];

#[derive(Debug, Clone, Default)]
pub struct OwnFiles {
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
}

impl OwnFiles {
    /// Paths with their `PROTECT_*` flags. Directories whose entries are
    /// replaced atomically (state, policy.d, pins) protect their entries too.
    pub fn paths(&self) -> Vec<(PathBuf, u32)> {
        let both = PROTECT_FILE | PROTECT_ENTRIES;
        let mut paths = vec![
            (self.state_dir.clone(), both),
            (self.pin_dir.clone(), both),
            (self.pin_dir.join("maps"), both),
            (self.pin_dir.join("links"), both),
            (self.audit_log.clone(), PROTECT_FILE),
            (self.socket.clone(), PROTECT_FILE),
        ];
        if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
            paths.push((exe.with_file_name("guardctl"), PROTECT_FILE));
            paths.push((exe, PROTECT_FILE));
        }
        if let Some(config) = &self.config {
            paths.push((config.clone(), PROTECT_FILE));
            let dropins = config.parent().unwrap_or(Path::new(".")).join("policy.d");
            paths.push((dropins, both));
        }
        paths.extend(UNIT_FILES.iter().map(|p| (PathBuf::from(p), PROTECT_FILE)));
        paths
    }

    /// The paths of the built-in `[[protect]]` entry `agent-guard-self`:
    /// the config file, its `policy.d`, the pins, the state, the audit log and
    /// the socket, absolute and with symlinks resolved as the gate resolves
    /// paths. The binaries are left to the LSM and to the `system` entry
    /// (`/usr`): a checkout that builds guardd inside a session would
    /// otherwise be refused its own build.
    pub fn gate_paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some(config) = &self.config {
            paths.push(absolute(config));
            paths.push(absolute(&self.policy_d().unwrap_or_default()));
        }
        for path in [
            &self.pin_dir,
            &self.state_dir,
            &self.audit_log,
            &self.socket,
        ] {
            paths.push(absolute(path));
        }
        paths.dedup();
        paths
    }

    /// The `policy.d` directory beside the config file, if there is one.
    pub fn policy_d(&self) -> Option<PathBuf> {
        let config = self.config.as_ref()?;
        Some(config.parent().unwrap_or(Path::new(".")).join("policy.d"))
    }

    /// The config file and its `policy.d`, absolute and resolved: what
    /// guardd reloads.
    pub fn policy_paths(&self) -> Option<PolicyPaths> {
        Some(PolicyPaths {
            config: absolute(self.config.as_ref()?),
            dropins: absolute(&self.policy_d()?),
        })
    }

    /// The kernel keys of the paths that exist now.
    pub fn keys(&self) -> Vec<(FileKey, u32)> {
        let mut keys: Vec<(FileKey, u32)> = Vec::new();
        for (path, flags) in self.paths() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let key = file_key(meta.dev(), meta.ino());
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => *existing |= flags,
                None => keys.push((key, flags)),
            }
        }
        keys
    }
}

/// The files guardd reloads the policy from.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyPaths {
    pub config: PathBuf,
    pub dropins: PathBuf,
}

impl PolicyPaths {
    /// Whether `path` (absolute, resolved) is the config file, `policy.d`
    /// or a file in it.
    pub fn contains(&self, path: &Path) -> bool {
        path == self.config || path == self.dropins || path.parent() == Some(&self.dropins)
    }
}

/// `path` made absolute, with symlinks resolved as far as it exists (the
/// gate compares the paths it resolves with these).
pub fn absolute(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(path),
        _ => path,
    }
}

/// A file's key as the kernel sees it: `super_block.s_dev` is
/// `major << 20 | minor`, not the encoding stat(2) returns.
pub fn file_key(st_dev: u64, ino: u64) -> FileKey {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    FileKey {
        dev: (major << 20) | minor,
        _pad: 0,
        ino,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        // 8:1 (sda1) and a large minor, as on NVMe partitions and tmpfs.
        assert_eq!(file_key(libc::makedev(8, 1), 5).dev, (8 << 20) | 1);
        assert_eq!(file_key(libc::makedev(259, 300), 5).dev, (259 << 20) | 300);
        assert_eq!(file_key(libc::makedev(0, 45), 7).ino, 7);
    }

    #[test]
    fn existing_files_get_keys_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("policy.toml");
        std::fs::write(&config, "").unwrap();
        std::fs::create_dir(dir.path().join("policy.d")).unwrap();
        let files = OwnFiles {
            config: Some(config.clone()),
            state_dir: dir.path().to_path_buf(),
            audit_log: config.clone(),
            socket: dir.path().join("absent.sock"),
            pin_dir: dir.path().join("absent-pins"),
        };
        let keys = files.keys();
        let meta = std::fs::metadata(&config).unwrap();
        let config_key = file_key(meta.dev(), meta.ino());
        let flags = keys.iter().find(|(k, _)| *k == config_key).unwrap().1;
        assert_eq!(flags, PROTECT_FILE);
        let dir_meta = std::fs::metadata(dir.path()).unwrap();
        let dir_key = file_key(dir_meta.dev(), dir_meta.ino());
        let dir_flags = keys.iter().find(|(k, _)| *k == dir_key).unwrap().1;
        assert_eq!(dir_flags, PROTECT_FILE | PROTECT_ENTRIES);
        // Absent paths (the socket, the pins) have no key; policy.d and the binary do.
        assert!(keys.len() >= 3);
        assert_eq!(keys.iter().filter(|(k, _)| *k == config_key).count(), 1);
    }
}
