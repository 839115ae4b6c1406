//! The BPF LSM's roots for a `fallback` entry of `[[protect]]` ("everything
//! outside the workspace"). The kernel's walk takes the outermost root it
//! meets, so such an entry cannot be one root at `/`: one approval would open
//! the whole disk, and it would hide every other entry's root below it.
//! Instead its paths are covered by the outermost directories and files that
//! hold no split point (a home, a workspace, an except path, another entry's
//! root; see `policy::protect::splits`): a directory that holds one is opened
//! and its entries are covered in turn. Entries created after a look are
//! covered at the next one (every 5 s).
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use guard_common::FileKey;

use crate::protected::file_key;

/// What to cover and where to stop.
pub struct Bounds<'a> {
    /// Left out with everything below them.
    pub excepted: &'a dyn Fn(&Path) -> bool,
    /// Never covered whole.
    pub splits: &'a [PathBuf],
    /// Roots of other entries: they protect what is below them themselves.
    pub named: &'a [PathBuf],
    /// Mount points: a file system mounted below a root is a root of its own
    /// (the kernel's walk ends at a file system's root).
    pub mounts: &'a [PathBuf],
    /// At most this many roots.
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct Cover {
    pub roots: Vec<(PathBuf, FileKey)>,
    /// Whether `limit` cut it short.
    pub truncated: bool,
}

/// Levels of directories opened at most below a fallback path.
const MAX_DEPTH: usize = 16;

pub fn cover(paths: &[PathBuf], bounds: &Bounds) -> Cover {
    let mut cover = Cover::default();
    let mut pending: Vec<(PathBuf, usize)> = paths.iter().map(|p| (p.clone(), 0)).collect();
    while let Some((path, depth)) = pending.pop() {
        if (bounds.excepted)(&path) || bounds.named.contains(&path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let holds_split = bounds.splits.iter().any(|s| s.starts_with(&path));
        if holds_split && meta.is_dir() && depth < MAX_DEPTH {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| (e.path(), depth + 1)));
            }
            continue;
        }
        if cover.roots.len() >= bounds.limit {
            cover.truncated = true;
            break;
        }
        cover
            .roots
            .push((path.clone(), file_key(meta.dev(), meta.ino())));
        for mount in bounds
            .mounts
            .iter()
            .filter(|m| m.starts_with(&path) && **m != path)
        {
            pending.push((mount.clone(), MAX_DEPTH));
        }
    }
    cover
}

/// The mount points of this mount namespace, from `/proc/self/mountinfo`.
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .filter(|p| p != Path::new("/"))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_holding_a_split_are_opened_and_the_rest_are_roots() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        let home = top.join("home/dev");
        for sub in [
            "home/dev/proj/app/src",
            "home/dev/.ssh",
            "home/dev/old",
            "home/other",
            "srv/data",
            "tmp",
        ] {
            std::fs::create_dir_all(top.join(sub)).unwrap();
        }
        std::fs::write(home.join(".bash_history"), "x").unwrap();
        std::fs::write(home.join("proj/notes"), "x").unwrap();
        let workspace = home.join("proj/app");
        let splits = [home.clone(), workspace.clone(), home.join(".ssh")];
        let excepts = [workspace.clone(), top.join("tmp")];
        let excepted = |path: &Path| excepts.iter().any(|e| path.starts_with(e));
        let bounds = Bounds {
            excepted: &excepted,
            splits: &splits,
            named: &[home.join(".ssh")],
            mounts: &[],
            limit: 100,
        };
        let mut roots: Vec<PathBuf> = cover(&[top.to_path_buf()], &bounds)
            .roots
            .into_iter()
            .map(|(p, _)| p.strip_prefix(top).unwrap().to_path_buf())
            .collect();
        roots.sort();
        let expected: Vec<PathBuf> = [
            "home/dev/.bash_history",
            "home/dev/old",
            "home/dev/proj/notes",
            "home/other",
            "srv",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(roots, expected);

        let small = Bounds { limit: 2, ..bounds };
        let cut = cover(&[top.to_path_buf()], &small);
        assert!(cut.truncated && cut.roots.len() == 2);
    }

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape_octal(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal(r"/a\\b"), r"/a\\b");
        assert!(!mount_points().contains(&PathBuf::from("/")));
    }
}
