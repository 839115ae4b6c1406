//! Reading a gated call's arguments from the waiting thread, and resolving
//! its paths the way the kernel does: against the thread's root, cwd or
//! directory fd, with `..` and symlinks in the directories followed.
use std::{
    fs::File,
    os::unix::{
        ffi::{OsStrExt as _, OsStringExt as _},
        fs::FileExt as _,
    },
    path::{Component, Path, PathBuf},
};

/// The longest path the kernel takes (PATH_MAX, with its NUL).
const PATH_MAX: usize = 4096;

fn memory(tid: u32) -> std::io::Result<File> {
    File::open(format!("/proc/{tid}/mem"))
}

/// A NUL-terminated path at `address` in the thread's memory.
pub fn read_path(tid: u32, address: u64) -> std::io::Result<Vec<u8>> {
    let mem = memory(tid)?;
    let mut path = Vec::new();
    let mut chunk = [0u8; 256];
    while path.len() < PATH_MAX {
        // A short read happens at the end of a mapping; the NUL is before it.
        let read = mem.read_at(&mut chunk, address + path.len() as u64)?;
        if read == 0 {
            break;
        }
        if let Some(end) = chunk[..read].iter().position(|&b| b == 0) {
            path.extend_from_slice(&chunk[..end]);
            return Ok(path);
        }
        path.extend_from_slice(&chunk[..read]);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "path longer than PATH_MAX or unterminated",
    ))
}

pub fn read_u64(tid: u32, address: u64) -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    memory(tid)?.read_exact_at(&mut bytes, address)?;
    Ok(u64::from_ne_bytes(bytes))
}

/// The absolute path (in guardd's view) that `raw`, relative to `dirfd`,
/// names for thread `tid`. The directories are resolved through /proc's
/// links to the thread's root, cwd and fds; the last component only when
/// the call follows it. Names that do not resolve are kept as written,
/// with `.` and `..` folded.
pub fn resolve(tid: u32, dirfd: i32, raw: &[u8], follows: bool) -> PathBuf {
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
    let base = if path.is_absolute() {
        PathBuf::from(format!("/proc/{tid}/root"))
    } else if dirfd == super::syscalls::AT_FDCWD {
        PathBuf::from(format!("/proc/{tid}/cwd"))
    } else {
        PathBuf::from(format!("/proc/{tid}/fd/{dirfd}"))
    };
    let relative: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    let full = base.join(&relative);
    if follows {
        if let Ok(resolved) = real_path(&full, false) {
            return resolved;
        }
    }
    let (parent, name) = match (relative.parent(), relative.file_name()) {
        (Some(parent), Some(name)) => (base.join(parent), Some(name.to_owned())),
        // "", ".", ".." or "x/..": the whole path names a directory.
        _ => (full, None),
    };
    let parent = match real_path(&parent, true) {
        Ok(parent) => parent,
        // A directory that does not exist (the call will fail): fold the
        // rest onto the real base, not onto /proc's link.
        Err(_) => match real_path(&base, true) {
            Ok(base) => fold(&base.join(relative.parent().unwrap_or(Path::new("")))),
            // The thread exited (a zombie keeps /proc/TID, not its root or
            // cwd): the path as given is all there is.
            Err(_) => return fold(path),
        },
    };
    match name {
        Some(name) => parent.join(name),
        None => parent,
    }
}

/// Where `path` leads, symlinks and /proc's links followed: the kernel walks
/// it once (an O_PATH open) and names the result, cheaper than realpath's
/// walk per component.
fn real_path(path: &Path, directory: bool) -> std::io::Result<PathBuf> {
    use rustix::fs::{open, readlink, Mode, OFlags};
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if directory {
        flags |= OFlags::DIRECTORY;
    }
    let fd = open(path, flags, Mode::empty())?;
    let target = readlink(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
        Vec::new(),
    )?;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(
        target.into_bytes(),
    )))
}

/// `.` and `..` folded without the file system (for names that do not exist).
pub(super) fn fold(path: &Path) -> PathBuf {
    let mut folded = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                folded.pop();
            }
            other => folded.push(other),
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_threads_cwd_root_and_fds() {
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        let at_cwd = super::super::syscalls::AT_FDCWD;
        assert_eq!(resolve(me, at_cwd, b"src/../x", false), cwd.join("x"));
        assert_eq!(
            resolve(me, at_cwd, b"/etc/./passwd", false),
            Path::new("/etc/passwd")
        );
        // A directory that does not exist still folds onto the real cwd.
        assert_eq!(resolve(me, at_cwd, b"nope/../y", false), cwd.join("y"));
        let dir = std::fs::File::open("/usr").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        assert_eq!(resolve(me, fd, b"lib/x", false), Path::new("/usr/lib/x"));
    }

    #[test]
    fn a_zombies_absolute_paths_stay_as_given() {
        // Exited, not yet reaped: /proc/PID is there, its root and cwd are not.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        while procfs_state(pid) != Some('Z') {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let at_cwd = super::super::syscalls::AT_FDCWD;
        assert_eq!(
            resolve(pid, at_cwd, b"/tmp/x/../precious/new", true),
            Path::new("/tmp/precious/new")
        );
        assert_eq!(
            resolve(pid, at_cwd, b"/tmp/precious/f", false),
            Path::new("/tmp/precious/f")
        );
        child.wait().unwrap();
    }

    fn procfs_state(pid: u32) -> Option<char> {
        crate::procfs::stat(pid).ok().map(|stat| stat.state)
    }

    #[test]
    fn paths_are_read_from_memory_up_to_their_nul() {
        let text = b"/home/dev/.ssh/id_ed25519\0garbage";
        let read = read_path(std::process::id(), text.as_ptr() as u64).unwrap();
        assert_eq!(read, b"/home/dev/.ssh/id_ed25519");
        assert_eq!(fold(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
    }
}
