//! Where on a function a uprobe costs least. The kernel emulates a `push`
//! at the probe point, but runs most other first instructions (`sub
//! $N,%rsp`) out of line under a single-step, which is a second trap: on
//! this kind of VM a probe on OpenSSL's `SSL_write` (`sub $0x18,%rsp`) added
//! ~5 us to a 1 KiB write, one on the `push %r14` of the function it calls
//! ~1.5 us.

/// `endbr64`, first in functions built for CET; the probe goes past it.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

fn past_endbr(code: &[u8]) -> usize {
    if code.starts_with(&ENDBR64) {
        ENDBR64.len()
    } else {
        0
    }
}

/// The offset into `code` (a function's first bytes) of a first instruction
/// the kernel emulates: a register push, after an optional `endbr64`.
pub fn emulated_entry(code: &[u8]) -> Option<u64> {
    let at = past_endbr(code);
    match code.get(at..)? {
        [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..] => Some(at as u64),
        _ => None,
    }
}

/// Where a thin wrapper at `addr` goes on to: `[endbr64] [sub $imm8,%rsp]`
/// then a `call` or `jmp` with a 32-bit displacement, its arguments untouched.
pub fn wrapped_call(code: &[u8], addr: u64) -> Option<u64> {
    let mut at = past_endbr(code);
    if code.get(at..at + 3) == Some(&[0x48, 0x83, 0xec]) {
        at += 4;
    }
    if !matches!(code.get(at)?, 0xe8 | 0xe9) {
        return None;
    }
    let displacement = i32::from_le_bytes(code.get(at + 1..at + 5)?.try_into().ok()?);
    Some(
        addr.wrapping_add(at as u64 + 5)
            .wrapping_add_signed(i64::from(displacement)),
    )
}

/// Whether `code` (at `addr`) holds a `call` of `target`.
pub fn calls(code: &[u8], addr: u64, target: u64) -> bool {
    code.windows(5).enumerate().any(|(at, bytes)| {
        let displacement = i32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        bytes[0] == 0xe8
            && addr
                .wrapping_add(at as u64 + 5)
                .wrapping_add_signed(i64::from(displacement))
                == target
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_emulated_and_other_first_instructions_are_not() {
        assert_eq!(emulated_entry(&[0x41, 0x56, 0x41, 0x55]), Some(0));
        assert_eq!(emulated_entry(&[0x55, 0x48, 0x89, 0xe5]), Some(0));
        assert_eq!(emulated_entry(&[0xf3, 0x0f, 0x1e, 0xfa, 0x53]), Some(4));
        assert_eq!(emulated_entry(&[0x48, 0x83, 0xec, 0x18]), None);
        assert_eq!(emulated_entry(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83]), None);
        assert_eq!(emulated_entry(&[0x41]), None);
    }

    #[test]
    fn a_wrapper_is_followed_to_the_function_it_calls() {
        // OpenSSL 3.0's SSL_write_ex at 0x35a10: sub $0x8,%rsp; call 0x355a0.
        let code = [0x48, 0x83, 0xec, 0x08, 0xe8, 0x87, 0xfb, 0xff, 0xff, 0x31];
        assert_eq!(wrapped_call(&code, 0x35a10), Some(0x355a0));
        // A tail call past an endbr64.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0xe9, 0x10, 0x00, 0x00, 0x00];
        assert_eq!(wrapped_call(&code, 0x1000), Some(0x1019));
        // Work before the call: not a thin wrapper.
        let code = [0x48, 0x83, 0xec, 0x18, 0x64, 0x48, 0x8b, 0x04];
        assert_eq!(wrapped_call(&code, 0x35980), None);
        // SSL_write calls the same function further in.
        let write = [
            0x48, 0x89, 0xe1, 0x48, 0x63, 0xd2, 0xe8, 0xfd, 0xfb, 0xff, 0xff, 0x85,
        ];
        assert!(calls(&write, 0x35998, 0x355a0));
        assert!(!calls(&write, 0x35998, 0x355b0));
    }
}
