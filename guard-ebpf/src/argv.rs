//! The exec gate's argv prefilter. guardd compiles, per watched program, the
//! arguments one of which every command a hold, deny or audit rule matches
//! must have (`push` for git's push rules, `--r`/`-r` for `rm --recursive`),
//! and writes them to `ARGV_WORDS` under the program's `ARGV_FILTERS` id. An
//! exec whose arguments hit none of them cannot match a rule, and runs
//! without a stop. Whatever this code cannot read whole stops (fail closed):
//! argv[0] other than the program's name or a path to it, more than `ARGV_MAX_ARGS`
//! arguments, an argument of `ARGV_LONG_ARG` bytes or more, a failed read.
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user_str},
    maps::lpm_trie::Key,
};
use guard_common::{ArgvFilter, ArgvWordKey, Comm, ARGV_LONG_ARG, ARGV_MAX_ARGS, ARGV_WORD_LEN};

use crate::maps::{ARGV_SCRATCH, ARGV_WORDS};

/// A lookup compares the id and every byte of the word key.
const KEY_BITS: u32 = 8 * (4 + ARGV_WORD_LEN as u32);
/// A read that filled the word key: the argument may be longer.
const FILLED: u64 = ARGV_WORD_LEN as u64 - 1;

/// Whether the argv at `start..end` (`mm->arg_start..arg_end` of the new
/// image) passes `filter`, the filter of `comm`.
#[inline(always)]
pub fn passes(comm: &Comm, filter: &ArgvFilter, start: u64, end: u64) -> bool {
    let mut word = ArgvWordKey {
        id: filter.id.to_be_bytes(),
        bytes: [0; ARGV_WORD_LEN],
    };
    // argv[0] must name the program the kernel took comm from: git, for
    // one, runs `git-push` when argv[0] says so.
    let Some(len) = read_arg(&mut word.bytes, start) else {
        return false;
    };
    if !is_own_name(&word.bytes, comm) && !ends_in_name(filter, start, len) {
        return false;
    }
    let mut at = start + len + 1;
    for _ in 1..ARGV_MAX_ARGS {
        if at >= end {
            return true;
        }
        word.bytes = [0; ARGV_WORD_LEN];
        let Some(len) = read_arg(&mut word.bytes, at) else {
            return false;
        };
        if ARGV_WORDS.get(Key::new(KEY_BITS, word)).is_some() {
            return false;
        }
        if filter.letters != 0
            && is_cluster(&word.bytes)
            && (len >= FILLED || cluster_bits(&word.bytes) & filter.letters != 0)
        {
            return false;
        }
        at += len + 1;
    }
    at >= end
}

/// Reads the argument at `at` into `bytes` (cut to 31 bytes and the NUL)
/// and gives its whole length; None when a read fails or it is too long.
#[inline(always)]
fn read_arg(bytes: &mut [u8; ARGV_WORD_LEN], at: u64) -> Option<u64> {
    let len = read_word(bytes, at)?;
    if len < FILLED {
        return Some(len);
    }
    full_length(at)
}

/// Reads the argument at `at` into `bytes` (cut to 31 bytes and the NUL);
/// its length as read, or None when the read fails.
#[inline(always)]
fn read_word(bytes: &mut [u8; ARGV_WORD_LEN], at: u64) -> Option<u64> {
    let read = unsafe {
        bpf_probe_read_user_str(
            bytes.as_mut_ptr().cast(),
            ARGV_WORD_LEN as u32,
            at as *const _,
        )
    };
    (read > 0).then(|| read as u64 - 1)
}

/// The length of a long argument, read whole into the per-CPU scratch
/// buffer; None when it fills the buffer or the read fails.
#[inline(always)]
fn full_length(at: u64) -> Option<u64> {
    let scratch = ARGV_SCRATCH.get_ptr_mut(0)?;
    let read =
        unsafe { bpf_probe_read_user_str(scratch.cast(), ARGV_LONG_ARG as u32, at as *const _) };
    (read > 0 && (read as usize) < ARGV_LONG_ARG).then(|| read as u64 - 1)
}

/// The key's 8-byte words, by constant index: the 6.1 verifier refuses
/// computed indices into a stack buffer.
#[inline(always)]
fn word_at(bytes: &[u8; ARGV_WORD_LEN], index: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
    u64::from_ne_bytes(word)
}

/// argv[0] (read into a zeroed key) is exactly comm: the same 15 bytes or
/// fewer, and nothing after them.
#[inline(always)]
fn is_own_name(bytes: &[u8; ARGV_WORD_LEN], comm: &Comm) -> bool {
    let mut first = [0u8; 8];
    let mut second = [0u8; 8];
    first.copy_from_slice(&comm[..8]);
    second.copy_from_slice(&comm[8..]);
    word_at(bytes, 0) == u64::from_ne_bytes(first)
        && word_at(bytes, 1) == u64::from_ne_bytes(second)
        && word_at(bytes, 2) == 0
        && word_at(bytes, 3) == 0
}

/// argv[0] (`len` bytes at `start`) is a path ending in `/NAME`: its last
/// 16 bytes read as two words, compared under a mask guardd made.
#[inline(always)]
fn ends_in_name(filter: &ArgvFilter, start: u64, len: u64) -> bool {
    if len <= filter.name_len as u64 {
        return false;
    }
    let Ok(tail) = (unsafe { bpf_probe_read_user::<[u64; 2]>((start + len - 16) as *const _) })
    else {
        return false;
    };
    tail[0] & filter.tail_mask[0] == filter.tail[0]
        && tail[1] & filter.tail_mask[1] == filter.tail[1]
}

/// `-x...`: a short-option cluster (not `--long`, not `-` alone).
#[inline(always)]
fn is_cluster(bytes: &[u8; ARGV_WORD_LEN]) -> bool {
    bytes[0] == b'-' && bytes[1] != b'-' && bytes[1] != 0
}

/// Bit `byte & 63` of every byte after the dash, without a branch per
/// byte; the key's zero padding sets bit 0, which guardd never asks for.
#[inline(always)]
fn cluster_bits(bytes: &[u8; ARGV_WORD_LEN]) -> u64 {
    let mut bits = 0u64;
    for index in 0..ARGV_WORD_LEN / 8 {
        let word = word_at(bytes, index);
        let mut shift = if index == 0 { 8 } else { 0 };
        while shift < 64 {
            bits |= 1 << ((word >> shift) & 63);
            shift += 8;
        }
    }
    bits
}
