//! Where the API probes go: every OpenSSL, GnuTLS and libpq the dynamic
//! loader knows (`ldconfig -p`), the libraries session processes map from
//! elsewhere (a venv's wheels bundle their own libssl and libpq), and
//! programs that carry OpenSSL themselves (Node.js exports `SSL_write`),
//! and Go programs (their own `crypto/tls`, see `golang`).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use guard_common::ApiHook;
use object::{Object, ObjectSymbol};

use super::{golang, prologue};

/// File-name prefixes of the client libraries.
const LIBRARIES: &[&str] = &["libssl.so", "libssl-", "libgnutls.so", "libpq.so", "libpq-"];
/// The C libraries whose `dlopen` tells of libraries loaded later.
const LOADERS: &[&str] = &["libc.so.6", "libdl.so.2"];
/// Programs known to carry their TLS themselves: Node.js (OpenSSL), and
/// the Go infrastructure tools, probed before their first use (other Go
/// programs are, when a session runs them: see `exec_gate`).
const PROGRAMS: &[&str] = &[
    "node",
    "nodejs",
    "kubectl",
    "terraform",
    "tofu",
    "helm",
    "gh",
    "doctl",
    "eksctl",
    "pulumi",
];
/// Where such programs are looked for besides `PATH`.
const PROGRAM_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin"];

/// The client-library files of this system, by real path.
pub fn system_targets() -> Vec<PathBuf> {
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    let cache = Command::new("ldconfig").arg("-p").output();
    let cache = cache.map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    for line in cache.unwrap_or_default().lines() {
        let Some((name, path)) = line.trim().split_once(" => ") else {
            continue;
        };
        let name = name.split_whitespace().next().unwrap_or("");
        let wanted = is_client_library(Path::new(name)) || LOADERS.contains(&name);
        if wanted && line.contains("x86-64") {
            found.extend(std::fs::canonicalize(path).ok());
        }
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    let dirs = path_var.split(':').chain(PROGRAM_DIRS.iter().copied());
    for dir in dirs {
        for program in PROGRAMS {
            if let Ok(real) = std::fs::canonicalize(Path::new(dir).join(program)) {
                found.insert(real);
            }
        }
    }
    found.into_iter().collect()
}

/// The client libraries a process maps (`/proc/PID/maps`), by real path.
pub fn mapped_by(pid: u32) -> Vec<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        if path.starts_with('/') && is_client_library(Path::new(path)) {
            found.insert(PathBuf::from(path));
        }
    }
    found.into_iter().collect()
}

fn is_client_library(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    LIBRARIES.iter().any(|prefix| name.starts_with(prefix)) && name.contains(".so")
}

/// One probe: the hook it serves and where in the file it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePoint {
    pub hook: ApiHook,
    /// A file offset (a uprobe's address in its file).
    pub offset: u64,
}

/// What the probes need of one file: where its hooked functions are (a
/// program without OpenSSL has none), where OpenSSL keeps an `SSL`'s
/// `shutdown` flags and libpq a `PGconn`'s database name, when their
/// accessors say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Probed {
    pub points: Vec<ProbePoint>,
    pub ssl_shutdown: Option<u16>,
    pub pq_db: Option<u16>,
    /// Go's `tls.Conn.activeCall`.
    pub go_active_call: Option<u16>,
}

impl Probed {
    pub fn hooks(&self) -> impl Iterator<Item = ApiHook> + '_ {
        self.points.iter().map(|point| point.hook)
    }
}

pub fn probed_in(path: &Path) -> Probed {
    let Ok(file) = std::fs::File::open(path) else {
        return Probed::default();
    };
    // Mapped, not read: node is a hundred megabytes, of which the dynamic
    // symbol table is a small part.
    let Ok(map) = (unsafe { memmap(&file) }) else {
        return Probed::default();
    };
    let Ok(object) = object::File::parse(&*map) else {
        return Probed::default();
    };
    let code = Code(&object);
    let mut points: Vec<ProbePoint> = ApiHook::ALL
        .into_iter()
        .filter(|hook| probed(*hook, path))
        .filter_map(|hook| {
            let addr = code.symbol(hook.symbol())?;
            // Past an endbr64 onto an emulated push where there is one.
            let entry = code.at(addr, 8).and_then(prologue::emulated_entry);
            Some((hook, addr + entry.unwrap_or(0)))
        })
        .filter_map(|(hook, addr)| {
            let offset = code.file_offset(addr)?;
            Some(ProbePoint { hook, offset })
        })
        .collect();
    if let Some(internal) = ssl_write_internal(&code) {
        // One cheaper probe in place of the two wrappers' single-stepped ones.
        points.retain(|p| !internal.covers.contains(&p.hook));
        points.push(internal.point);
    }
    let mut go_active_call = None;
    match golang::inspect(&object) {
        golang::GoBinary::TlsWrite {
            address,
            active_call,
        } => {
            if let Some(offset) = code.file_offset(address) {
                points.push(ProbePoint {
                    hook: ApiHook::GoTlsWrite,
                    offset,
                });
                go_active_call = active_call;
            }
        }
        golang::GoBinary::Unsupported(why) => {
            tracing::warn!(
                "{}: a Go program the API gate cannot probe: {why}",
                path.display()
            );
        }
        golang::GoBinary::NotGo | golang::GoBinary::WithoutTls => {}
    }
    Probed {
        points,
        go_active_call,
        ssl_shutdown: accessor_offset(&object, "SSL_get_shutdown"),
        pq_db: accessor_offset(&object, "PQdb"),
    }
}

/// A probe on the function `SSL_write_ex` and `SSL_write` call, and which
/// of the two it stands for.
struct Internal {
    point: ProbePoint,
    covers: Vec<ApiHook>,
}

/// OpenSSL 3's `SSL_write_ex` is `sub $8,%rsp; call ssl_write_internal`,
/// whose first instruction is a push; `SSL_write` calls it too after its
/// own checks. None where the wrappers are not like that (or start with a
/// push themselves: then they are probed as they are).
fn ssl_write_internal(code: &Code<'_, '_>) -> Option<Internal> {
    let write_ex = code.symbol(ApiHook::SslWriteEx.symbol())?;
    let wrapper = code.at(write_ex, 16)?;
    if prologue::emulated_entry(wrapper).is_some() {
        return None;
    }
    let target = prologue::wrapped_call(wrapper, write_ex)?;
    let entry = prologue::emulated_entry(code.at(target, 8)?)?;
    let offset = code.file_offset(target + entry)?;
    let mut covers = vec![ApiHook::SslWriteEx];
    let write = code.symbol(ApiHook::SslWrite.symbol());
    if write.is_some_and(|at| {
        code.at(at, 64)
            .is_some_and(|c| prologue::calls(c, at, target))
    }) {
        covers.push(ApiHook::SslWrite);
    }
    Some(Internal {
        point: ProbePoint {
            hook: ApiHook::SslWriteInternal,
            offset,
        },
        covers,
    })
}

/// A file's code by virtual address.
struct Code<'d, 'f>(&'f object::File<'d>);

impl Code<'_, '_> {
    /// The address of an exported function.
    fn symbol(&self, name: &str) -> Option<u64> {
        self.0
            .dynamic_symbols()
            .find(|s| s.is_definition() && s.name() == Ok(name))
            .map(|s| s.address())
    }

    /// `len` bytes of the section holding `addr`, from it.
    fn at(&self, addr: u64, len: u64) -> Option<&[u8]> {
        use object::ObjectSection;
        let section = self.section_of(addr)?;
        let len = len.min(section.address() + section.size() - addr);
        section.data_range(addr, len).ok()?
    }

    fn file_offset(&self, addr: u64) -> Option<u64> {
        use object::ObjectSection;
        let section = self.section_of(addr)?;
        let (start, _) = section.file_range()?;
        Some(start + (addr - section.address()))
    }

    fn section_of(&self, addr: u64) -> Option<object::Section<'_, '_>> {
        use object::ObjectSection;
        self.0
            .sections()
            .find(|s| s.address() <= addr && addr < s.address() + s.size())
    }
}

/// The offset an accessor of its first argument's field reads
/// (`mov disp(%rdi),%eax` or `%rax` in its first bytes: `8b 47 d8` or
/// `8b 87 d32`, after any REX prefix): `SSL_get_shutdown`, `PQdb`. None when
/// it reads otherwise.
fn accessor_offset(object: &object::File<'_>, accessor: &str) -> Option<u16> {
    use object::ObjectSection;
    let symbol = object
        .dynamic_symbols()
        .find(|s| s.is_definition() && s.name() == Ok(accessor))?;
    let section = object.section_by_index(symbol.section_index()?).ok()?;
    let code = section.data_range(symbol.address(), 16).ok()??;
    let at = code
        .windows(2)
        .position(|w| w == [0x8b, 0x47] || w == [0x8b, 0x87])?;
    let offset = match code[at + 1] {
        0x47 => u32::from(*code.get(at + 2)?),
        _ => u32::from_le_bytes(code.get(at + 2..at + 6)?.try_into().ok()?),
    };
    u16::try_from(offset).ok().filter(|o| *o != 0)
}

/// libpq's synchronous calls run the asynchronous ones (`PQexec` sends with
/// `PQsendQuery`), so the latter carry every query once. `dlopen` is probed
/// where glibc has it (libdl only forwards to libc since glibc 2.34).
fn probed(hook: ApiHook, path: &Path) -> bool {
    match hook {
        ApiHook::PqExec | ApiHook::PqExecParams | ApiHook::PqPrepare => false,
        // Found by following SSL_write_ex (`ssl_write_internal`); Go's by
        // its own table.
        ApiHook::SslWriteInternal | ApiHook::GoTlsWrite => false,
        ApiHook::Dlopen => path.file_name().is_some_and(|name| {
            let name = name.to_string_lossy();
            name.starts_with("libc.so") || name.starts_with("libdl.so")
        }),
        _ => true,
    }
}

/// A read-only private mapping of `file`, unmapped on drop.
unsafe fn memmap(file: &std::fs::File) -> std::io::Result<Mapping> {
    use std::os::fd::AsFd;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::PRIVATE,
            file.as_fd(),
            0,
        )
    }?;
    Ok(Mapping { ptr, len })
}

struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl std::ops::Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_are_recognised() {
        assert!(is_client_library(Path::new(
            "/lib/x86_64-linux-gnu/libssl.so.3"
        )));
        assert!(is_client_library(Path::new(
            "/v/site-packages/psycopg2_binary.libs/libpq-a17e3caa.so.5.17"
        )));
        assert!(!is_client_library(Path::new("/lib/libssl3.so")));
        assert!(!is_client_library(Path::new("/lib/libcrypto.so.3")));
    }

    #[test]
    fn the_system_libssl_exports_the_writes() {
        let Some(libssl) = system_targets()
            .into_iter()
            .find(|p| p.to_string_lossy().contains("libssl.so"))
        else {
            return; // no OpenSSL on this machine
        };
        let probed = probed_in(&libssl);
        let hooks: Vec<ApiHook> = probed.hooks().collect();
        let writes = [ApiHook::SslWriteEx, ApiHook::SslWriteInternal];
        assert!(
            writes.iter().any(|w| hooks.contains(w)),
            "{libssl:?}: {probed:?}"
        );
        assert!(hooks.contains(&ApiHook::SslFree));
        // Every write probe sits on an instruction the kernel emulates where
        // one is found: Debian's OpenSSL 3 through its internal write.
        let bytes = std::fs::read(&libssl).unwrap();
        for point in &probed.points {
            let at = &bytes[point.offset as usize..][..8];
            if point.hook == ApiHook::SslWriteInternal {
                assert_eq!(prologue::emulated_entry(at), Some(0), "{point:?}");
                assert!(!hooks.contains(&ApiHook::SslWriteEx), "{hooks:?}");
            }
        }
        // OpenSSL 3.0 and 3.1 keep it at 0x44; a later one may move it.
        assert!(probed.ssl_shutdown.is_some(), "{probed:?}");
        assert_eq!(probed_in(Path::new("/bin/sh")), Probed::default());
    }

    #[test]
    fn the_system_libpq_says_where_a_connection_keeps_its_database() {
        let Some(libpq) = system_targets()
            .into_iter()
            .find(|p| p.to_string_lossy().contains("libpq.so"))
        else {
            return; // no libpq on this machine
        };
        let probed = probed_in(&libpq);
        assert!(probed.pq_db.is_some(), "{probed:?}");
        assert_eq!(probed.ssl_shutdown, None);
    }
}
