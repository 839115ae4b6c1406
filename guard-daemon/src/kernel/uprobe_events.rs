//! Uprobes that trap only in the processes guardd follows. A uprobe defined
//! in tracefs (`uprobe_events`) and used through perf events writes its
//! breakpoint only into the memory of the tasks its events are opened on
//! (and, with `inherit`, of every task they clone from then on), unless an
//! event watches every task. Its BPF programs run on every hit, whichever
//! event placed the breakpoint. aya's uprobes are perf-PMU probes with one
//! uprobe per event, which cannot be shared that way, hence the raw calls.
use std::{
    collections::hash_map::DefaultHasher,
    ffi::CString,
    fs,
    hash::{Hash, Hasher},
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use super::offsets::TRACEFS;

/// The tracefs group of the probes of the guardd pinning under `pin_dir`:
/// two guardds (tests, a second instance) never share one.
pub fn group_of(pin_dir: &Path) -> String {
    format!("agent_guard_{:016x}", hash_of(pin_dir))
}

pub(super) fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Defines `group/event` as a probe on each (file, file offset) of
/// `points`, one event they all share, or finds it defined by an earlier
/// run (its name says which points); returns its id.
pub(super) fn define(group: &str, event: &str, points: &[(&Path, u64)]) -> io::Result<u64> {
    let id_file = format!("{TRACEFS}/events/{group}/{event}/id");
    if let Ok(id) = read_id(&id_file) {
        return Ok(id);
    }
    for (path, offset) in points {
        let path_bytes = path.as_os_str().as_bytes();
        if path_bytes
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            // uprobe_events splits on white space.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a path with white space cannot be probed through tracefs",
                    path.display()
                ),
            ));
        }
        let line = format!("p:{group}/{event} {}:{offset:#x}\n", path.display());
        if let Err(err) = write_uprobe_events(&line) {
            // Never left with part of its points: a later run would reuse it.
            let _ = write_uprobe_events(&format!("-:{group}/{event}\n"));
            return Err(err);
        }
    }
    read_id(&id_file)
}

/// Removes every probe of `group` (once nothing uses them); returns what
/// could not be removed, with why.
pub(super) fn remove_group(group: &str) -> Vec<(String, io::Error)> {
    let Ok(dir) = fs::read_dir(format!("{TRACEFS}/events/{group}")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|entry| entry.path().join("id").exists())
        .filter_map(|entry| {
            let event = format!("{group}/{}", entry.file_name().to_string_lossy());
            write_uprobe_events(&format!("-:{event}\n"))
                .err()
                .map(|err| (event, err))
        })
        .collect()
}

fn read_id(path: &str) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {text:?}")))
}

fn write_uprobe_events(line: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(format!("{TRACEFS}/uprobe_events"))?;
    file.write_all(line.as_bytes())
}

/// A perf event of tracepoint `id` on task `tid`, never enabled (it samples
/// nothing: it only places the breakpoints and carries programs), cloned
/// into every task `tid` clones from now on when `inherit`, and taken from
/// a task at its exec when `at_exec` (EINVAL before 5.13).
pub(super) fn open_event(id: u64, tid: u32, inherit: bool, at_exec: bool) -> io::Result<OwnedFd> {
    const PERF_TYPE_TRACEPOINT: u64 = 2;
    const PERF_ATTR_SIZE_VER0: u64 = 64;
    const DISABLED: u64 = 1;
    const INHERIT: u64 = 1 << 1;
    const REMOVE_ON_EXEC: u64 = 1 << 36;
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    // struct perf_event_attr as of its first version: type, size, config,
    // sample_period, sample_type, read_format, the flag bits, the rest 0.
    let mut attr = [0u64; 8];
    attr[0] = PERF_TYPE_TRACEPOINT | PERF_ATTR_SIZE_VER0 << 32;
    attr[1] = id;
    attr[5] =
        DISABLED | if inherit { INHERIT } else { 0 } | if at_exec { REMOVE_ON_EXEC } else { 0 };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            tid as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    owned(fd)
}

/// Attaches `program` to perf event `event` (a `bpf_perf_link`), with
/// `cookie` for `bpf_get_attach_cookie`.
pub(super) fn link(
    program: BorrowedFd<'_>,
    event: BorrowedFd<'_>,
    cookie: u64,
) -> io::Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PERF_EVENT: u64 = 41;
    // union bpf_attr's link_create: prog_fd, target_fd, attach_type,
    // flags, then perf_event.bpf_cookie.
    let mut attr = [0u64; 8];
    attr[0] = program.as_raw_fd() as u32 as u64 | (event.as_raw_fd() as u32 as u64) << 32;
    attr[1] = BPF_PERF_EVENT;
    attr[2] = cookie;
    owned(bpf(BPF_LINK_CREATE, &mut attr))
}

/// Pins the BPF object `fd` at `path` on bpffs.
pub(super) fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // pathname, bpf_fd, file_flags.
    let mut attr = [0u64; 4];
    attr[0] = path.as_ptr() as u64;
    attr[1] = fd.as_raw_fd() as u32 as u64;
    if bpf(BPF_OBJ_PIN, &mut attr) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// bpf(2) with `attr` as its `union bpf_attr`.
fn bpf(command: libc::c_long, attr: &mut [u64]) -> libc::c_long {
    // SAFETY: attr is as long as the size given, and each command reads
    // only the fields its callers set.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    }
}

fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}
