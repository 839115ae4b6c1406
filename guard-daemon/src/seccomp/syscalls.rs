//! The system calls the gate sees, what each does to which path arguments;
//! shared by the launcher's filter and guardd's decoding of notifications.
use crate::policy::protect::Operation;

/// A path argument: the directory fd argument it is relative to (None: the
/// cwd for relative paths), and the argument holding the pointer.
pub type PathArg = (Option<usize>, usize);

pub struct Gated {
    pub name: &'static str,
    pub operation: Operation,
    pub paths: &'static [PathArg],
    /// The argument with open(2) flags: only opens that write are gated.
    pub open_flags: Option<usize>,
    /// Whether the last path component is followed if it is a symlink.
    pub follows: bool,
}

pub const AT_FDCWD: i32 = -100;
pub const AT_REMOVEDIR: u64 = 0x200;
/// Open flags that make an open destructive: write access, creation, truncation.
pub const WRITE_FLAGS: [u64; 4] = [
    libc::O_WRONLY as u64,
    libc::O_RDWR as u64,
    libc::O_CREAT as u64,
    libc::O_TRUNC as u64,
];

const fn gated(
    name: &'static str,
    operation: Operation,
    paths: &'static [PathArg],
    follows: bool,
) -> Gated {
    Gated {
        name,
        operation,
        paths,
        open_flags: None,
        follows,
    }
}

/// openat2's flags live in the `open_how` it points to; it is notified
/// whatever they are and the flags are read from its memory.
pub const OPENAT2: &str = "openat2";

pub const GATED: &[Gated] = &[
    gated("unlink", Operation::Unlink, &[(None, 0)], false),
    // unlinkat with AT_REMOVEDIR is an rmdir.
    gated("unlinkat", Operation::Unlink, &[(Some(0), 1)], false),
    gated("rmdir", Operation::Rmdir, &[(None, 0)], false),
    gated("rename", Operation::Rename, &[(None, 0), (None, 1)], false),
    gated(
        "renameat",
        Operation::Rename,
        &[(Some(0), 1), (Some(2), 3)],
        false,
    ),
    gated(
        "renameat2",
        Operation::Rename,
        &[(Some(0), 1), (Some(2), 3)],
        false,
    ),
    // A hard link gives the file a name outside its protection (`ln ~/x
    // /tmp/h; : > /tmp/h` empties ~/x): judged as renaming it away. linkat
    // follows a symlink with AT_SYMLINK_FOLLOW; judged followed either way.
    gated("link", Operation::Rename, &[(None, 0)], false),
    gated("linkat", Operation::Rename, &[(Some(0), 1)], true),
    gated("truncate", Operation::Truncate, &[(None, 0)], true),
    Gated {
        open_flags: Some(1),
        ..gated("open", Operation::Write, &[(None, 0)], true)
    },
    Gated {
        open_flags: Some(2),
        ..gated("openat", Operation::Write, &[(Some(0), 1)], true)
    },
    gated(OPENAT2, Operation::Write, &[(Some(0), 1)], true),
    gated("creat", Operation::Write, &[(None, 0)], true),
    gated("chmod", Operation::Chmod, &[(None, 0)], true),
    gated("fchmodat", Operation::Chmod, &[(Some(0), 1)], true),
    gated("chown", Operation::Chown, &[(None, 0)], true),
    gated("lchown", Operation::Chown, &[(None, 0)], false),
    gated("fchownat", Operation::Chown, &[(Some(0), 1)], true),
];

/// The gated call with this number on this machine's architecture.
pub fn by_number(number: i32) -> Option<&'static Gated> {
    static NUMBERS: std::sync::OnceLock<std::collections::HashMap<i32, &'static Gated>> =
        std::sync::OnceLock::new();
    NUMBERS
        .get_or_init(|| {
            GATED
                .iter()
                .filter_map(|gated| {
                    let number = libseccomp::ScmpSyscall::from_name(gated.name).ok()?;
                    Some((number.as_raw_syscall(), gated))
                })
                .collect()
        })
        .get(&number)
        .copied()
}

/// Whether open flags ask for anything the gate guards.
pub fn writes(flags: u64) -> bool {
    WRITE_FLAGS.iter().any(|bit| flags & bit != 0)
}

/// Whether an open with `flags` follows a symbolic link in its last
/// component: not with O_NOFOLLOW, nor with O_CREAT | O_EXCL, which fails
/// on any name that exists (so the file it makes is the name itself).
pub fn open_follows(flags: u64) -> bool {
    let exclusive = (libc::O_CREAT | libc::O_EXCL) as u64;
    flags & libc::O_NOFOLLOW as u64 == 0 && flags & exclusive != exclusive
}

/// The calls that reach a process outside the session (the escape checks):
/// the target is a pid (argument), a pidfd of the caller, or a socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// ptrace(PTRACE_ATTACH or PTRACE_SEIZE, pid, ...): only those requests
    /// are notified (the filter compares argument 0).
    Ptrace,
    /// process_vm_writev(pid, ...).
    ProcessVmWritev,
    /// pidfd_getfd(pidfd, targetfd, flags).
    PidfdGetfd,
    /// connect(fd, addr, addrlen): AF_UNIX addresses are judged.
    Connect,
}

pub const PTRACE_ATTACH: u64 = 16;
pub const PTRACE_SEIZE: u64 = 0x4206;

pub const ESCAPES: &[(&str, Escape)] = &[
    ("ptrace", Escape::Ptrace),
    ("process_vm_writev", Escape::ProcessVmWritev),
    ("pidfd_getfd", Escape::PidfdGetfd),
    ("connect", Escape::Connect),
];

/// The escape check for this system call number, if it is one.
pub fn escape_by_number(number: i32) -> Option<(&'static str, Escape)> {
    static NUMBERS: std::sync::OnceLock<std::collections::HashMap<i32, (&'static str, Escape)>> =
        std::sync::OnceLock::new();
    NUMBERS
        .get_or_init(|| {
            ESCAPES
                .iter()
                .filter_map(|&(name, escape)| {
                    let number = libseccomp::ScmpSyscall::from_name(name).ok()?;
                    Some((number.as_raw_syscall(), (name, escape)))
                })
                .collect()
        })
        .get(&number)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_follows_its_last_link_unless_nofollow_or_exclusive_create() {
        let flags = |f: i32| f as u64;
        assert!(open_follows(flags(libc::O_WRONLY | libc::O_TRUNC)));
        assert!(open_follows(flags(libc::O_RDWR | libc::O_CREAT)));
        assert!(
            open_follows(flags(libc::O_WRONLY | libc::O_EXCL)),
            "O_EXCL alone"
        );
        assert!(!open_follows(flags(libc::O_WRONLY | libc::O_NOFOLLOW)));
        assert!(!open_follows(flags(
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL
        )));
    }
}
