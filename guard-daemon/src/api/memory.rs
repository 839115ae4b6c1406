//! The stopped process's memory: what a held call was about to send, read
//! with `process_vm_readv`; whether another process could still change it;
//! and the one write guardd makes, to shut a denied OpenSSL connection.
use guard_common::{ApiHeldEntry, API_COOKIE_FIELD_SHIFT};

/// `len` bytes at `addr` in process `pid`.
pub fn read_memory(pid: u32, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; len];
    let mut local = [std::io::IoSliceMut::new(&mut buffer)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let read = nix::sys::uio::process_vm_readv(
        nix::unistd::Pid::from_raw(pid as i32),
        &mut local,
        &remote,
    )?;
    buffer.truncate(read);
    Ok(buffer)
}

/// The C string at `addr` in process `pid`, read by pages up to `limit`.
pub fn read_c_string(pid: u32, addr: u64, limit: usize) -> Result<String, String> {
    let mut text = Vec::new();
    let mut at = addr;
    while text.len() < limit {
        // Up to the end of the page: the next one may not be mapped.
        let chunk = 4096 - (at % 4096) as usize;
        let bytes =
            read_memory(pid, at, chunk).map_err(|err| format!("query unreadable: {err}"))?;
        if let Some(end) = bytes.iter().position(|b| *b == 0) {
            text.extend_from_slice(&bytes[..end]);
            return Ok(String::from_utf8_lossy(&text).into_owned());
        }
        if bytes.is_empty() {
            break;
        }
        text.extend_from_slice(&bytes);
        at += bytes.len() as u64;
    }
    Err(format!(
        "a query longer than the {limit} bytes guardd reads"
    ))
}

/// Whether `[addr, addr + len)` lies in a writable shared mapping of `pid`
/// (another process may change it after guardd read it). An address
/// /proc does not show counts as shared.
pub fn shared_writable(pid: u32, addr: u64, len: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return true;
    };
    let end = addr.saturating_add(len as u64);
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((from, to)) = range.split_once('-') else {
            continue;
        };
        let (Ok(from), Ok(to)) = (u64::from_str_radix(from, 16), u64::from_str_radix(to, 16))
        else {
            continue;
        };
        if addr >= from && addr < to {
            let shared =
                perms.as_bytes().get(3) == Some(&b's') && perms.as_bytes().get(1) == Some(&b'w');
            // A buffer running into the next mapping is judged by that one too.
            return shared || (end > to && shared_writable(pid, to, (end - to) as usize));
        }
    }
    true
}

/// The database name of a stopped libpq query's connection, where the
/// probe's cookie says where `PQdb` reads it; None where it cannot be read.
pub fn pq_database(entry: &ApiHeldEntry) -> Option<String> {
    let offset = u64::from(entry.hook >> API_COOKIE_FIELD_SHIFT);
    if offset == 0 || entry.conn == 0 {
        return None;
    }
    let pointer = read_memory(entry.pid, entry.conn + offset, 8).ok()?;
    let pointer = u64::from_le_bytes(pointer.try_into().ok()?);
    let name = read_c_string(entry.pid, pointer, 256).ok()?;
    (!name.is_empty()).then_some(name)
}

/// The low bit of the connection's closing flags: OpenSSL's
/// `SSL_SENT_SHUTDOWN`, Go's closed bit of `tls.Conn.activeCall`.
const CLOSED_BIT: u32 = 1;

/// Marks a stopped TLS write's connection closed, where the probe's cookie
/// says where its flags are: an OpenSSL write then fails inside OpenSSL
/// with `PROTOCOL_IS_SHUTDOWN`, a Go one returns `net.ErrClosed`, and the
/// client drops the connection (a bare error return leaves some clients,
/// Node's among them, waiting to write again forever).
pub fn mark_closed(entry: &ApiHeldEntry) -> Result<(), String> {
    let offset = u64::from(entry.hook >> API_COOKIE_FIELD_SHIFT);
    if offset == 0 {
        return Err("where this TLS library keeps its closing flags is not known".into());
    }
    let at = entry.conn + offset;
    let bytes = read_memory(entry.pid, at, 4).map_err(|err| err.to_string())?;
    let flags = u32::from_le_bytes(bytes.try_into().map_err(|_| "short read".to_string())?);
    tracing::debug!(
        pid = entry.pid,
        at,
        flags,
        "marking a TLS connection closed"
    );
    let flags = (flags | CLOSED_BIT).to_le_bytes();
    let local = [std::io::IoSlice::new(&flags)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: at as usize,
        len: 4,
    }];
    let pid = nix::unistd::Pid::from_raw(entry.pid as i32);
    match nix::sys::uio::process_vm_writev(pid, &local, &remote) {
        Ok(4) => Ok(()),
        Ok(n) => Err(format!("wrote {n} of 4 bytes")),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_is_told_from_private() {
        let pid = std::process::id();
        let private = [7u8; 64];
        assert!(!shared_writable(
            pid,
            private.as_ptr() as u64,
            private.len()
        ));
        assert_eq!(
            read_memory(pid, private.as_ptr() as u64, 4).unwrap(),
            [7; 4]
        );
        let file = rustix::fs::memfd_create("api-test", rustix::fs::MemfdFlags::empty()).unwrap();
        rustix::fs::ftruncate(&file, 4096).unwrap();
        let shared = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                4096,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )
        }
        .unwrap();
        assert!(shared_writable(pid, shared as u64 + 10, 100));
        unsafe { rustix::mm::munmap(shared, 4096).unwrap() };
    }

    #[test]
    fn c_strings_stop_at_their_nul() {
        let text = b"DROP TABLE t\0garbage";
        let read = read_c_string(std::process::id(), text.as_ptr() as u64, 1 << 20).unwrap();
        assert_eq!(read, "DROP TABLE t");
    }
}
