//! Watched programs known by their installed files, so that one run under
//! another name is still judged as itself: a hard link (same inode), a copy
//! or a memfd holding its bytes (same content, or for an ELF binary the
//! same build-id, so bytes appended do not make it another program). The
//! kernel stops such execs in sessions (a file not owned by root, with
//! other links than one, or a memfd); this says which program, if any, the
//! file is. A watched
//! `#!` script runs as its interpreter, so shells and those interpreters
//! given a file stop too, and the file they run is looked at (`scripts`).
mod scripts;

use std::{
    collections::HashMap,
    fs,
    io::Read as _,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    sync::Mutex,
};

use rustix::fs::{Mode, OFlags};

/// Where installed programs are looked for, before the policy's own
/// `defaults.program_dirs`.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/snap/bin",
    // The dynamic loader, which runs a program named in its argv.
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib",
    // git's exec path (`git-push`; git runs itself from there, as
    // `git maintenance` after a commit).
    "/usr/lib/git-core",
    "/usr/libexec/git-core",
    "/usr/local/libexec/git-core",
];

/// How many answers for unknown files are kept before they are forgotten.
const SEEN_LIMIT: usize = 4096;

/// A file's identity as stat tells it; a rewrite in place changes the times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        let ns = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone)]
struct Installed {
    name: String,
    path: PathBuf,
}

/// The installed files of the watched programs, found once per policy.
#[derive(Debug, Default)]
pub struct ProgramFiles {
    /// Every watched name: a command known by one of them keeps it.
    names: std::collections::HashSet<String>,
    by_inode: HashMap<(u64, u64), String>,
    by_size: HashMap<u64, Vec<Installed>>,
    /// ELF build-ids: the same build with bytes appended or stripped.
    by_build_id: HashMap<Vec<u8>, String>,
    /// Names of the executables that may run a copy of a watched script.
    runners: std::collections::HashSet<String>,
    /// Watched programs installed as `#!` scripts.
    scripts: std::collections::HashSet<String>,
    /// Whether a hard link of root's can only be root's doing: the kernel
    /// refuses users links to files they cannot write, and no program
    /// directory can be written by anyone but root.
    links_root_only: bool,
    /// The directories looked in, as the kernel keys them.
    dir_keys: Vec<guard_common::FileKey>,
    /// What an unknown file turned out to be, while it is unchanged.
    seen: Mutex<HashMap<FileStamp, Option<String>>>,
}

impl ProgramFiles {
    /// The installed files of every program `policy` watches.
    pub fn of(policy: &crate::policy::Policy) -> Self {
        let dirs: Vec<PathBuf> = SYSTEM_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(policy.program_dirs.iter().cloned())
            .collect();
        Self::find(&policy.watched_programs(), &dirs)
    }

    /// Finds each of `names` in `dirs` (symlinks followed to the file).
    pub fn find<S: AsRef<str>>(names: &[S], dirs: &[PathBuf]) -> Self {
        let mut files = Self::default();
        for name in names {
            let name = name.as_ref();
            files.names.insert(name.to_string());
            for dir in dirs {
                let Ok(path) = fs::canonicalize(dir.join(name)) else {
                    continue;
                };
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() || files.by_inode.contains_key(&(meta.dev(), meta.ino())) {
                    continue;
                }
                files
                    .by_inode
                    .insert((meta.dev(), meta.ino()), name.to_string());
                let interpreters = scripts::interpreter_names(&path, dirs);
                if !interpreters.is_empty() {
                    files.scripts.insert(name.to_string());
                }
                files.runners.extend(interpreters);
                if let Some(id) = build_id(&path) {
                    files
                        .by_build_id
                        .entry(id)
                        .or_insert_with(|| name.to_string());
                }
                files
                    .by_size
                    .entry(meta.size())
                    .or_default()
                    .push(Installed {
                        name: name.to_string(),
                        path,
                    });
            }
        }
        files.runners.extend(scripts::shell_names(dirs));
        files.links_root_only = fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .is_ok_and(|value| value.trim() == "1")
            && dirs.iter().all(|dir| {
                fs::metadata(dir).map_or(true, |meta| meta.uid() == 0 && meta.mode() & 0o022 == 0)
            });
        files.dir_keys = dirs
            .iter()
            .filter_map(|dir| fs::metadata(dir).ok().filter(fs::Metadata::is_dir))
            .map(|meta| crate::protected::file_key(meta.dev(), meta.ino()))
            .collect();
        files
            .dir_keys
            .sort_unstable_by_key(|key| (key.dev, key.ino));
        files.dir_keys.dedup();
        files
    }

    /// The directories programs are installed in (`/usr/bin` and the
    /// rest, `program_dirs`): the kernel lets a file of root's run unjudged
    /// only from one of them.
    pub fn dir_keys(&self) -> Vec<guard_common::FileKey> {
        self.dir_keys.clone()
    }

    /// The executable names (as the kernel sees the executed file) that may
    /// run a copy of a watched script: the shells, and the interpreters
    /// the watched `#!` scripts name.
    pub fn script_runners(&self) -> Vec<String> {
        let mut names: Vec<String> = self.runners.iter().cloned().collect();
        names.sort_unstable();
        names
    }

    /// How many installed files were found.
    pub fn len(&self) -> usize {
        self.by_inode.len()
    }

    /// Whether a file of root's with several links in a program directory
    /// is root's doing (see `links_root_only`).
    pub fn links_are_root_only(&self) -> bool {
        self.links_root_only
    }

    /// Whether a watched program is installed as a `#!` script here.
    pub fn is_script(&self, program: &str) -> bool {
        self.scripts.contains(program)
    }

    pub fn is_empty(&self) -> bool {
        self.by_inode.is_empty()
    }

    /// Whether `program` is a watched program's name.
    pub fn is_watched(&self, program: &str) -> bool {
        self.names.contains(program)
    }

    /// The watched program a command known as `program` is, when that name
    /// is not watched itself: `exe` is the executed file (`/proc/PID/exe`,
    /// which reaches it even when it is deleted or a memfd).
    pub fn identify_unless_watched(&self, program: &str, exe: &Path) -> Option<String> {
        if self.is_watched(program) {
            return None;
        }
        self.identify(exe)
    }

    /// The watched program the file at `path` is, or None. The path may be
    /// the agent's choice (a script operand): only a regular file is read,
    /// and the inode stat saw is the one compared (see `policy::files`).
    pub fn identify(&self, path: &Path) -> Option<String> {
        let handle = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let meta = fs::metadata(format!("/proc/self/fd/{}", handle.as_raw_fd())).ok()?;
        if !meta.is_file() {
            return None;
        }
        if let Some(name) = self.by_inode.get(&(meta.dev(), meta.ino())) {
            return Some(name.clone());
        }
        let stamp = FileStamp::of(&meta);
        if let Some(known) = self.seen.lock().ok()?.get(&stamp) {
            return known.clone();
        }
        let opened = Path::new("/proc/self/fd").join(handle.as_raw_fd().to_string());
        let found = (self.by_size.get(&meta.size()).into_iter().flatten())
            .find(|installed| same_content(&opened, &installed.path).unwrap_or(false))
            .map(|installed| installed.name.clone())
            .or_else(|| self.by_build_id.get(&build_id(&opened)?).cloned());
        if let Ok(mut seen) = self.seen.lock() {
            // Every unknown executable is remembered: an agent making
            // endless new ones must not grow guardd without bound.
            if seen.len() >= SEEN_LIMIT {
                seen.clear();
            }
            seen.insert(stamp, found.clone());
        }
        found
    }
}

/// The GNU build-id note of the ELF file at `path`: only the file header,
/// the program headers and the note segments are read (not the section or
/// symbol tables of a 100 MB binary).
fn build_id(path: &Path) -> Option<Vec<u8>> {
    use object::{
        elf::{FileHeader64, ELF_NOTE_GNU, NT_GNU_BUILD_ID},
        read::elf::{FileHeader as _, ProgramHeader as _},
        Endianness, ReadCache,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let cache = ReadCache::new(file);
    let header = FileHeader64::<Endianness>::parse(&cache).ok()?;
    let endian = header.endian().ok()?;
    for segment in header.program_headers(endian, &cache).ok()? {
        let Ok(Some(mut notes)) = segment.notes(endian, &cache) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == ELF_NOTE_GNU && note.n_type(endian) == NT_GNU_BUILD_ID {
                let id = note.desc();
                // A note too short to tell builds apart is no identity.
                return (id.len() >= 8).then(|| id.to_vec());
            }
        }
    }
    None
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let open = |path: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
    };
    let (mut a, mut b) = (open(a)?, open(b)?);
    let (mut left, mut right) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut a, &mut left)?;
        let m = read_full(&mut b, &mut right)?;
        if n != m || left[..n] != right[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_with_bytes_appended_is_known_by_its_build_id() {
        let (Ok(rm), Ok(echo)) = (fs::read("/usr/bin/rm"), fs::read("/usr/bin/echo")) else {
            return eprintln!("no /usr/bin/rm or echo here: skipped");
        };
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("rm"), &rm).unwrap();
        let files = ProgramFiles::find(&["rm"], std::slice::from_ref(&bin));
        assert!(
            build_id(&bin.join("rm")).is_some(),
            "rm here has no build-id"
        );
        let changed = dir.path().join("x");
        fs::write(&changed, [rm.as_slice(), b"\0"].concat()).unwrap();
        assert_eq!(files.identify(&changed).as_deref(), Some("rm"));
        let other = dir.path().join("y");
        fs::write(&other, [echo.as_slice(), b"\0"].concat()).unwrap();
        assert_eq!(files.identify(&other), None);
        assert_eq!(build_id(&dir.path().join("absent")), None);
        fs::write(dir.path().join("text"), b"#!/bin/sh\n").unwrap();
        assert_eq!(build_id(&dir.path().join("text")), None);
    }

    #[test]
    fn links_copies_and_strangers_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("terraform"), b"the terraform binary").unwrap();
        fs::write(bin.join("kubectl"), b"the kubectl binary!!").unwrap();
        let files = ProgramFiles::find(
            &["terraform", "kubectl", "absent"],
            std::slice::from_ref(&bin),
        );
        assert_eq!(files.len(), 2);

        let link = dir.path().join("tf");
        fs::hard_link(bin.join("terraform"), &link).unwrap();
        assert_eq!(files.identify(&link).as_deref(), Some("terraform"));

        let copy = dir.path().join("k");
        fs::copy(bin.join("kubectl"), &copy).unwrap();
        assert_eq!(files.identify(&copy).as_deref(), Some("kubectl"));

        // Same size, other bytes; and another size.
        let stranger = dir.path().join("x");
        fs::write(&stranger, b"the kubectl binary??").unwrap();
        assert_eq!(files.identify(&stranger), None);
        fs::write(dir.path().join("y"), b"short").unwrap();
        assert_eq!(files.identify(&dir.path().join("y")), None);

        // Rewritten in place into a copy: the cached answer is not reused.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&stranger, b"the kubectl binary!!").unwrap();
        assert_eq!(files.identify(&stranger).as_deref(), Some("kubectl"));
    }
}
