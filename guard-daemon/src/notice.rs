//! The line written to a held process's stderr, so the agent (and the person
//! watching it) learns what happened. Only to a pipe or a terminal: a
//! regular file may be an artefact the command was meant to produce.
use std::{
    fs::File,
    io::Write as _,
    os::fd::{AsFd as _, OwnedFd},
};

use rustix::fs::{fcntl_getfl, fcntl_setfl, fstat, FileType, OFlags};

use crate::process::ProcessHandle;

/// Takes a copy of the process's stderr if it is a pipe or a terminal.
pub fn stderr_of(process: &ProcessHandle) -> Option<OwnedFd> {
    let fd = process.dup_fd(2).ok()?;
    let kind = FileType::from_raw_mode(fstat(&fd).ok()?.st_mode);
    let usable = kind == FileType::Fifo
        || (kind == FileType::CharacterDevice && rustix::termios::isatty(&fd));
    usable.then_some(fd)
}

/// Writes without ever blocking the daemon on a full pipe. O_NONBLOCK is
/// shared with the process's own descriptor, so it is put back afterwards.
pub fn write(stderr: &OwnedFd, text: &str) {
    let Ok(flags) = fcntl_getfl(stderr) else {
        return;
    };
    let _ = fcntl_setfl(stderr, flags | OFlags::NONBLOCK);
    if let Ok(clone) = stderr.try_clone() {
        let _ = File::from(clone).write_all(text.as_bytes());
    }
    let _ = fcntl_setfl(stderr.as_fd(), flags);
}
