//! What the daemon reads about a process from /proc.
use std::{
    collections::HashMap,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// The controlling terminal's device number (0: none).
    pub tty_nr: u32,
    /// Clock ticks after boot; with the pid it names one process for good.
    pub start_time: u64,
}

impl Stat {
    /// Stopped by a signal ('T') or in a ptrace stop ('t'): how a hold looks.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// A /proc file's contents. Unlike `fs::read`, no stat first to size the
/// buffer (/proc files say 0): one syscall less on every stop.
fn read(path: String) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        let room = buf.len() - len;
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            // These files fill a read as far as they reach: a short read is
            // the end, and a second read to see 0 would be one syscall more.
            Ok(n) if n < room => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

pub fn stat(pid: u32) -> std::io::Result<Stat> {
    parse_stat(&read(format!("/proc/{pid}/stat"))?)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable stat"))
}

fn parse_stat(raw: &[u8]) -> Option<Stat> {
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    let comm = String::from_utf8_lossy(raw.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(raw.get(close + 2..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state) of proc_pid_stat(5).
    Some(Stat {
        comm,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        tty_nr: fields.get(4)?.parse::<i32>().ok()? as u32,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub fn cmdline(pid: u32) -> std::io::Result<Vec<Vec<u8>>> {
    let raw = read(format!("/proc/{pid}/cmdline"))?;
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    Ok(raw.split(|&b| b == 0).map(<[u8]>::to_vec).collect())
}

/// The argv of `pid`'s parent when the parent runs the very file `pid` runs
/// (same device and inode: `git stash` starting its own `git reset`).
pub fn parent_running_same_file(pid: u32) -> Option<Vec<String>> {
    let parent = stat(pid).ok()?.ppid;
    let file = |pid: u32| fs::metadata(format!("/proc/{pid}/exe")).ok();
    let (ours, theirs) = (file(pid)?, file(parent)?);
    if (ours.dev(), ours.ino()) != (theirs.dev(), theirs.ino()) {
        return None;
    }
    let argv = cmdline(parent).ok()?;
    Some(
        argv.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

pub fn link(pid: u32, name: &str) -> String {
    fs::read_link(format!("/proc/{pid}/{name}"))
        .map(|path| crate::escape::escape_bytes(path.as_os_str().as_bytes()))
        .unwrap_or_default()
}

pub fn uid(pid: u32) -> std::io::Result<u32> {
    Ok(fs::metadata(format!("/proc/{pid}"))?.uid())
}

/// A numeric field of `/proc/PID/status` (`Tgid`, `TracerPid`).
fn status_number(pid: u32, field: &str) -> std::io::Result<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no {field} in status"),
            )
        })
}

/// The process (thread group) a thread belongs to.
pub fn tgid(tid: u32) -> std::io::Result<u32> {
    status_number(tid, "Tgid")
}

/// The pid of the process tracing `pid` (ptrace), if any.
pub fn tracer(pid: u32) -> Option<u32> {
    status_number(pid, "TracerPid")
        .ok()
        .filter(|&tracer| tracer != 0)
}

/// Threads of a process (the tids the kernel's session map is keyed by).
pub fn threads(pid: u32) -> Vec<u32> {
    numeric_entries(&format!("/proc/{pid}/task"))
}

pub fn all_pids() -> Vec<u32> {
    numeric_entries("/proc")
}

fn numeric_entries(dir: &str) -> Vec<u32> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `pid` and every process below it, parents before children.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Ok(stat) = stat(pid) {
            children.entry(stat.ppid).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        if let Some(kids) = children.get(&tree[next]) {
            tree.extend(kids.iter().copied().filter(|kid| *kid != root));
        }
        next += 1;
    }
    tree
}

/// `(pid, comm)` from `pid` up to (not including) pid 0.
pub fn ancestry(pid: u32) -> Vec<(u32, String)> {
    let mut chain = Vec::new();
    let mut current = pid;
    while current != 0 && chain.len() < 64 {
        let Ok(stat) = stat(current) else { break };
        chain.push((current, stat.comm));
        current = stat.ppid;
    }
    chain
}

/// The program a stopped exec is judged as, and its argv. For a `#!` script
/// the kernel's argv starts with the interpreter (and its optional argument),
/// but `comm` is the script's name: judge the script, so a shell-script
/// `terraform` is `terraform`, not `sh`.
pub fn judged_command(comm: &str, exe: &str, argv: &[Vec<u8>]) -> (String, Vec<Vec<u8>>) {
    let basename = |path: &[u8]| -> String {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        String::from_utf8_lossy(name).into_owned()
    };
    let is_comm = |name: &str| !name.is_empty() && truncate_comm(name) == comm;
    if let Some(first) = argv.first() {
        if !is_comm(&basename(first)) && !is_comm(&basename(exe.as_bytes())) {
            if let Some(at) = argv.iter().take(3).position(|arg| is_comm(&basename(arg))) {
                return (basename(&argv[at]), argv[at..].to_vec());
            }
        }
        if is_comm(&basename(first)) {
            return (basename(first), argv.to_vec());
        }
    }
    let exe_name = basename(exe.as_bytes());
    if is_comm(&exe_name) {
        return (exe_name, argv.to_vec());
    }
    (comm.to_string(), argv.to_vec())
}

fn truncate_comm(name: &str) -> &str {
    let mut end = name.len().min(guard_common::COMM_LEN - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Selected environment variables (those that say where a command acts).
pub fn environ(pid: u32, names: &[&str]) -> Vec<(String, String)> {
    let Ok(raw) = read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    raw.split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            names
                .contains(&key)
                .then(|| (key.to_string(), value.to_string()))
        })
        .collect()
}

/// The process's groups: its gid and its supplementary groups.
pub fn groups(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut groups = Vec::new();
    for line in status.lines() {
        let ids = if let Some(gids) = line.strip_prefix("Gid:") {
            gids.split_whitespace().take(1).collect::<Vec<_>>()
        } else if let Some(list) = line.strip_prefix("Groups:") {
            list.split_whitespace().collect()
        } else {
            continue;
        };
        groups.extend(ids.iter().filter_map(|id| id.parse::<u32>().ok()));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn stat_survives_odd_comm() {
        let raw = b"42 (a) b (c) T 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 9876 0 0";
        let stat = parse_stat(raw).unwrap();
        assert_eq!(stat.comm, "a) b (c");
        assert_eq!(stat.state, 'T');
        assert_eq!(stat.ppid, 7);
        assert_eq!(stat.start_time, 9876);
    }

    #[test]
    fn scripts_are_judged_as_the_script() {
        let argv = args(&["/bin/sh", "/tmp/t/terraform", "destroy"]);
        let (program, judged) = judged_command("terraform", "/usr/bin/dash", &argv);
        assert_eq!(program, "terraform");
        assert_eq!(judged, args(&["/tmp/t/terraform", "destroy"]));

        let argv = args(&["/usr/bin/env", "bash", "/x/kubectl", "delete", "ns"]);
        let (program, judged) = judged_command("kubectl", "/usr/bin/env", &argv);
        assert_eq!(program, "kubectl");
        assert_eq!(judged[0], b"/x/kubectl");
    }

    #[test]
    fn binaries_keep_their_argv() {
        let argv = args(&["rm", "-rf", "x"]);
        assert_eq!(
            judged_command("rm", "/usr/bin/rm", &argv),
            ("rm".into(), argv.clone())
        );
        // exec -a: argv[0] lies, the exe does not.
        let argv = args(&["innocent", "-rf", "x"]);
        assert_eq!(judged_command("rm", "/usr/bin/rm", &argv).0, "rm");
        // Names longer than comm are matched on their first 15 bytes.
        let argv = args(&["/opt/bin/terraform-wrapper-x", "destroy"]);
        assert_eq!(
            judged_command("terraform-wrapp", "/opt/bin/terraform-wrapper-x", &argv).0,
            "terraform-wrapper-x"
        );
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let stat = stat(me).unwrap();
        assert!(matches!(stat.state, 'R' | 'S'), "{}", stat.state);
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(threads(me).contains(&me));
        assert_eq!(ancestry(me)[0].0, me);
        assert!(process_tree(stat.ppid).contains(&me));
    }
}
