//! Go programs carry their own TLS (`crypto/tls`), invisible to the OpenSSL
//! probes. A Go binary's TLS write is found by name: in its symbol table,
//! or, stripped, in the pclntab every Go binary keeps for its runtime
//! (stack traces need function names). Go 1.18 and later only: their
//! pclntab layout, and the register ABI the probe reads (receiver in RAX,
//! the buffer's pointer and length in RBX and RCX).
use object::{Object, ObjectSection, ObjectSymbol};

/// The function every Go TLS client writes through.
pub const TLS_WRITE: &str = "crypto/tls.(*Conn).Write";

/// What a file is to the Go write probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoBinary {
    NotGo,
    /// A Go binary the probe cannot serve (why).
    Unsupported(String),
    /// A Go binary without `crypto/tls` (its write linked out).
    WithoutTls,
    /// The TLS write's virtual address, and where `Conn.activeCall` is
    /// (when found): its low bit makes `Write` return `net.ErrClosed`.
    TlsWrite {
        address: u64,
        active_call: Option<u16>,
    },
}

pub fn inspect(object: &object::File<'_>) -> GoBinary {
    let pclntab = object
        .section_by_name(".gopclntab")
        .or_else(|| object.section_by_name(".data.rel.ro.gopclntab"));
    let is_go = pclntab.is_some()
        || object.section_by_name(".go.buildinfo").is_some()
        || object.section_by_name(".note.go.buildid").is_some();
    if !is_go {
        return GoBinary::NotGo;
    }
    let from_symbols = object
        .symbols()
        .find(|s| s.is_definition() && s.name() == Ok(TLS_WRITE))
        .map(|s| s.address());
    let address = match (from_symbols, pclntab) {
        (Some(address), _) => Ok(Some(address)),
        (None, Some(section)) => match section.data() {
            Ok(data) => function_in_pclntab(data, TLS_WRITE),
            Err(err) => Err(format!("its pclntab is unreadable: {err}")),
        },
        (None, None) => Err("stripped, and no pclntab section".into()),
    };
    match address {
        Err(why) => GoBinary::Unsupported(why),
        Ok(None) => GoBinary::WithoutTls,
        Ok(Some(address)) => GoBinary::TlsWrite {
            address,
            active_call: code_at(object, address, 160).and_then(active_call_offset),
        },
    }
}

/// The entry address of function `name` in a Go 1.18+ pclntab: a header of
/// words (function count, text start, offsets of the name table and the
/// function table), then (entry offset, record offset) pairs whose records
/// start with the entry offset and the name's offset.
fn function_in_pclntab(pcln: &[u8], name: &str) -> Result<Option<u64>, String> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(pcln.get(at..at + 4)?.try_into().ok()?))
    };
    let word = |index: usize| -> Option<usize> {
        let at = 8 + 8 * index;
        usize::try_from(u64::from_le_bytes(pcln.get(at..at + 8)?.try_into().ok()?)).ok()
    };
    let magic = u32_at(0).ok_or("its pclntab is truncated")?;
    if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
        return Err(format!(
            "built by a Go before 1.18 (pclntab magic {magic:#x})"
        ));
    }
    if pcln.get(7) != Some(&8) {
        return Err("not a 64-bit Go binary".into());
    }
    let broken = || "its pclntab header is broken".to_string();
    let (count, text, names, table) = (
        word(0).ok_or_else(broken)?,
        word(2).ok_or_else(broken)?,
        word(3).ok_or_else(broken)?,
        word(7).ok_or_else(broken)?,
    );
    let wanted = name.as_bytes();
    for index in 0..count {
        let pair = table + 8 * index;
        let (Some(entry), Some(record)) = (u32_at(pair), u32_at(pair + 4)) else {
            return Err(broken());
        };
        let Some(name_offset) = u32_at(table + record as usize + 4) else {
            return Err(broken());
        };
        let start = names + name_offset as usize;
        let Some(found) = pcln.get(start..start + wanted.len() + 1) else {
            continue;
        };
        if &found[..wanted.len()] == wanted && found[wanted.len()] == 0 {
            return Ok(Some(text as u64 + u64::from(entry)));
        }
    }
    Ok(None)
}

fn code_at<'d>(object: &object::File<'d>, address: u64, len: u64) -> Option<&'d [u8]> {
    let section = object
        .sections()
        .find(|s| s.address() <= address && address < s.address() + s.size())?;
    let len = len.min(section.address() + section.size() - address);
    section.data_range(address, len).ok()?
}

/// `Write` starts by loading `c.activeCall` from its receiver and testing
/// its low bit (`mov disp(%rax),%r32; bt $0,%r32`): the displacement.
fn active_call_offset(code: &[u8]) -> Option<u16> {
    (0..code.len()).find_map(|at| {
        let rex_r = at > 0 && code[at - 1] == 0x44;
        let (opcode, modrm) = (code[at], *code.get(at + 1)?);
        // mod 10 (disp32) or 01 (disp8), base RAX.
        if opcode != 0x8b || modrm & 0x07 != 0 || !matches!(modrm >> 6, 1 | 2) {
            return None;
        }
        let (disp, next) = match modrm >> 6 {
            1 => (u32::from(*code.get(at + 2)?), at + 3),
            _ => (
                u32::from_le_bytes(code.get(at + 2..at + 6)?.try_into().ok()?),
                at + 6,
            ),
        };
        let reg = (modrm >> 3) & 0x07;
        let bt = match rex_r {
            true => code.get(next..next + 5)? == [0x41, 0x0f, 0xba, 0xe0 | reg, 0x00],
            false => code.get(next..next + 4)? == [0x0f, 0xba, 0xe0 | reg, 0x00],
        };
        bt.then(|| u16::try_from(disp).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_call_load_and_bit_test_are_found() {
        // Go 1.24's Write: lea/cmp/jbe, push, ..., mov 0x360(%rax),%edx; bt $0,%edx.
        let code = [
            0x4c, 0x8d, 0x64, 0x24, 0xb0, 0x4d, 0x3b, 0x66, 0x10, 0x8b, 0x90, 0x60, 0x03, 0x00,
            0x00, 0x0f, 0xba, 0xe2, 0x00, 0x72, 0x10,
        ];
        assert_eq!(active_call_offset(&code), Some(0x360));
        // Loaded into r8d: a REX prefix on each.
        let code = [
            0x90, 0x44, 0x8b, 0x80, 0x58, 0x01, 0x00, 0x00, 0x41, 0x0f, 0xba, 0xe0, 0x00, 0x72,
            0x10, 0x90,
        ];
        assert_eq!(active_call_offset(&code), Some(0x158));
        // A load not followed by the bit test is not it.
        let code = [
            0x8b, 0x90, 0x60, 0x03, 0x00, 0x00, 0x85, 0xd2, 0x90, 0x90, 0x90, 0x90, 0x90,
        ];
        assert_eq!(active_call_offset(&code), None);
    }

    #[test]
    fn a_pclntab_is_searched_by_name() {
        // Header: magic, pads, minLC 1, ptrsize 8; nfunc, nfiles, text start,
        // name table offset, cu, file table, pc table, function table offset.
        let mut pcln = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        let names_at = 72u64;
        let names = b"main.main\0crypto/tls.(*Conn).Write\0";
        let table_at = names_at + names.len() as u64;
        for word in [2u64, 0, 0x401000, names_at, 0, 0, 0, table_at] {
            pcln.extend_from_slice(&word.to_le_bytes());
        }
        pcln.extend_from_slice(names);
        // Two (entry, record) pairs and an end entry; records: entry, name offset.
        let records_at = 8 * 3u32;
        for (entry, record) in [(0x10u32, records_at), (0x2000, records_at + 8), (0x3000, 0)] {
            pcln.extend_from_slice(&entry.to_le_bytes());
            pcln.extend_from_slice(&record.to_le_bytes());
        }
        for (entry, name) in [(0x10u32, 0u32), (0x2000, 10)] {
            pcln.extend_from_slice(&entry.to_le_bytes());
            pcln.extend_from_slice(&name.to_le_bytes());
        }
        assert_eq!(
            function_in_pclntab(&pcln, TLS_WRITE),
            Ok(Some(0x401000 + 0x2000))
        );
        assert_eq!(function_in_pclntab(&pcln, "main.other"), Ok(None));
        pcln[0] = 0xfa;
        assert!(function_in_pclntab(&pcln, TLS_WRITE)
            .unwrap_err()
            .contains("before 1.18"));
        assert!(function_in_pclntab(&pcln[..20], TLS_WRITE).is_err());
    }

    #[test]
    fn a_stripped_go_binary_on_this_host_is_found() {
        // kubectl and terraform are stripped Go binaries where installed.
        for path in ["/usr/bin/kubectl", "/usr/local/bin/terraform"] {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let object = object::File::parse(&*bytes).unwrap();
            match inspect(&object) {
                GoBinary::TlsWrite {
                    address,
                    active_call,
                } => {
                    assert!(address > 0x400000, "{path}");
                    assert!(active_call.is_some(), "{path}");
                }
                other => panic!("{path}: {other:?}"),
            }
        }
    }
}
