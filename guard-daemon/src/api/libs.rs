//! Where the API probes go: every OpenSSL, GnuTLS and libpq the dynamic
//! loader knows (`ldconfig -p`), the libraries session processes map from
//! elsewhere (a venv's wheels bundle their own libssl and libpq), and
//! programs that carry OpenSSL themselves (Node.js exports `SSL_write`).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use guard_common::ApiHook;
use object::{Object, ObjectSymbol};

/// File-name prefixes of the client libraries.
const LIBRARIES: &[&str] = &["libssl.so", "libssl-", "libgnutls.so", "libpq.so", "libpq-"];
/// Programs known to carry OpenSSL statically.
const PROGRAMS: &[&str] = &["node", "nodejs"];
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
        if is_client_library(Path::new(name)) && line.contains("x86-64") {
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

/// The hooks whose functions `path` exports (a program without OpenSSL
/// exports none).
pub fn hooks_in(path: &Path) -> Vec<ApiHook> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    // Mapped, not read: node is a hundred megabytes, of which the dynamic
    // symbol table is a small part.
    let Ok(map) = (unsafe { memmap(&file) }) else {
        return Vec::new();
    };
    let Ok(object) = object::File::parse(&*map) else {
        return Vec::new();
    };
    let exported: BTreeSet<&str> = object
        .dynamic_symbols()
        .filter(|s| s.is_definition())
        .filter_map(|s| s.name().ok())
        .collect();
    ApiHook::ALL
        .into_iter()
        .filter(|hook| probed(*hook) && exported.contains(hook.symbol()))
        .collect()
}

/// libpq's synchronous calls run the asynchronous ones (`PQexec` sends with
/// `PQsendQuery`), so the latter carry every query once.
fn probed(hook: ApiHook) -> bool {
    !matches!(
        hook,
        ApiHook::PqExec | ApiHook::PqExecParams | ApiHook::PqPrepare
    )
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
        let hooks = hooks_in(&libssl);
        assert!(
            hooks.contains(&ApiHook::SslWriteEx),
            "{libssl:?}: {hooks:?}"
        );
        assert!(hooks.contains(&ApiHook::SslFree));
        assert!(hooks_in(Path::new("/bin/sh")).is_empty());
    }
}
