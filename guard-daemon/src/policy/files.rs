//! Reading a file that a stopped command names or reads its configuration
//! from (a git config, an aws alias file, a saved terraform plan). guardd
//! reads it as root while the agent chooses the path, so: regular files only,
//! checked on a descriptor that opens nothing (`O_PATH`: a FIFO would stall
//! every judgement, and opening some devices acts, `/dev/watchdog` arms the
//! watchdog), then read through that same inode, at most `limit` bytes.
use std::{
    io::Read as _,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::Path,
};

use rustix::fs::{FileType, Mode, OFlags};

/// Enough for any configuration file a judgement reads.
pub const CONFIG_LIMIT: u64 = 1 << 20;

/// The bytes of the regular file at `path` (symlinks followed), or why not.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let handle = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let stat = rustix::fs::fstat(&handle)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if stat.st_size as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    // The inode checked above, not whatever the path names by now.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// A configuration file as text; None when it cannot be read as one.
pub fn read_config(path: &Path) -> Option<String> {
    String::from_utf8(read_regular(path, CONFIG_LIMIT).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(&file, "[core]\n").unwrap();
        assert_eq!(read_config(&file).as_deref(), Some("[core]\n"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_config(&link).as_deref(), Some("[core]\n"));

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let started = std::time::Instant::now();
        let err = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(read_regular(Path::new("/dev/zero"), 10).is_err());
        assert!(read_regular(dir.path(), 10).is_err());

        std::fs::write(&file, vec![b'x'; 11]).unwrap();
        assert!(read_regular(&file, 10).is_err());
        assert_eq!(read_regular(&file, 11).unwrap().len(), 11);
    }
}
