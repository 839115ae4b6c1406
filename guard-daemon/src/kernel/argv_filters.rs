//! Writes the policy's argv prefilters (`policy/prefilter.rs`) into the
//! kernel's `ARGV_FILTERS` and `ARGV_WORDS`. A changed filter gets a new id:
//! its words are written first and the program switches to them in one map
//! update, so an exec never sees half a filter. A filter that does not fit
//! is not written, and its program stops on every exec.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use aya::maps::lpm_trie::Key;
use guard_common::{
    comm_key, names::map, ArgvFilter, ArgvWordKey, Comm, ARGV_WORD_LEN, COUNT_PREFILTER_PASSED,
};

use super::{Kernel, KernelError};
use crate::policy::prefilter::{kernel_words, Prefilter};

/// A filter as written: its value and its words (bytes, whole word).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Written {
    value: ArgvFilter,
    words: BTreeSet<(Vec<u8>, bool)>,
}

/// The prefilters written and the programs whose filter could not be.
#[derive(Debug, Default)]
pub(super) struct ArgvFilters {
    written: HashMap<Comm, Written>,
    next_id: u32,
    /// Program -> why its filter is not in the kernel (it stops always).
    pub failed: BTreeMap<String, String>,
}

impl ArgvFilters {
    /// Starts after the ids of filters pinned by an earlier guardd.
    pub(super) fn after(ids: impl Iterator<Item = u32>) -> Self {
        Self {
            next_id: ids.max().map_or(1, |id| id.wrapping_add(1).max(1)),
            ..Self::default()
        }
    }
}

fn word_key(id: u32, bytes: &[u8], whole: bool) -> Key<ArgvWordKey> {
    let mut data = ArgvWordKey {
        id: id.to_be_bytes(),
        bytes: [0; ARGV_WORD_LEN],
    };
    data.bytes[..bytes.len()].copy_from_slice(bytes);
    // A whole word is compared with its NUL.
    let len = bytes.len() + usize::from(whole);
    Key::new(8 * (4 + len) as u32, data)
}

/// The argv[0] test of a path to `program`: `/NAME` at the end of the
/// last 16 bytes, the bytes before it masked off.
fn path_tail(program: &str) -> ArgvFilter {
    let mut tail = [0u8; 16];
    let mut mask = [0u8; 16];
    let name = format!("/{program}");
    let at = 16 - name.len().min(16);
    tail[at..].copy_from_slice(&name.as_bytes()[..16 - at]);
    mask[at..].fill(0xff);
    let words = |bytes: [u8; 16]| {
        let (low, high) = bytes.split_at(8);
        [
            u64::from_ne_bytes(low.try_into().unwrap()),
            u64::from_ne_bytes(high.try_into().unwrap()),
        ]
    };
    ArgvFilter {
        name_len: program.len() as u32,
        tail: words(tail),
        tail_mask: words(mask),
        ..ArgvFilter::default()
    }
}

impl Kernel {
    /// Makes the kernel's prefilters those of `prefilters` (programs not in
    /// it, or not `Args`, stop on every exec).
    pub fn set_argv_filters(&mut self, prefilters: &BTreeMap<String, Prefilter>) {
        let mut written: HashMap<Comm, Written> = HashMap::new();
        let mut failed = BTreeMap::new();
        for (program, prefilter) in prefilters {
            let Prefilter::Args(filter) = prefilter else {
                continue;
            };
            let comm = comm_key(program.as_bytes());
            let words: BTreeSet<(Vec<u8>, bool)> = kernel_words(filter)
                .map(|(bytes, whole)| (bytes.to_vec(), whole))
                .collect();
            let mut value = ArgvFilter {
                letters: filter.letters(),
                ..path_tail(program)
            };
            match self.argv_filters.written.get(&comm) {
                Some(now)
                    if now.words == words
                        && ArgvFilter {
                            id: now.value.id,
                            ..value
                        } == now.value =>
                {
                    written.insert(comm, now.clone());
                }
                _ => match self.write_filter(comm, words, &mut value) {
                    Ok(filter) => {
                        written.insert(comm, filter);
                    }
                    Err(why) => {
                        failed.insert(program.clone(), why.to_string());
                    }
                },
            }
        }
        // Programs no longer prefiltered stop from here on; then the words
        // no filter uses go (also those an earlier guardd pinned).
        let stale: Vec<Comm> = (self.argv_filter_map.keys())
            .filter_map(Result::ok)
            .filter(|comm| !written.contains_key(comm))
            .collect();
        for comm in stale {
            let _ = self.argv_filter_map.remove(&comm);
        }
        let ids: BTreeSet<[u8; 4]> = written.values().map(|w| w.value.id.to_be_bytes()).collect();
        let unused: Vec<Key<ArgvWordKey>> = (self.argv_words.keys())
            .take(2 * guard_common::MAX_ARGV_WORDS as usize)
            .filter_map(Result::ok)
            .filter(|key| !ids.contains(&key.data().id))
            .collect();
        for key in unused {
            let _ = self.argv_words.remove(&key);
        }
        self.argv_filters.written = written;
        self.argv_filters.failed = failed;
    }

    /// Writes one filter under a new id and points `comm` at it.
    fn write_filter(
        &mut self,
        comm: Comm,
        words: BTreeSet<(Vec<u8>, bool)>,
        value: &mut ArgvFilter,
    ) -> Result<Written, KernelError> {
        let id = self.argv_filters.next_id;
        self.argv_filters.next_id = id.wrapping_add(1).max(1);
        value.id = id;
        let value = *value;
        let written = (words.iter())
            .try_for_each(|(bytes, whole)| {
                self.argv_words
                    .insert(&word_key(id, bytes, *whole), 1, 0)
                    .map_err(KernelError::map(map::ARGV_WORDS))
            })
            .and_then(|()| {
                self.argv_filter_map
                    .insert(comm, value, 0)
                    .map_err(KernelError::map(map::ARGV_FILTERS))
            });
        if let Err(err) = written {
            // The program keeps stopping; its old filter, if any, goes with
            // the stale ones.
            for (bytes, whole) in &words {
                let _ = self.argv_words.remove(&word_key(id, bytes, *whole));
            }
            let _ = self.argv_filter_map.remove(&comm);
            return Err(err);
        }
        Ok(Written { value, words })
    }

    /// Programs whose prefilter could not be written, and why.
    pub fn argv_filters_failed(&self) -> &BTreeMap<String, String> {
        &self.argv_filters.failed
    }

    /// Watched execs in sessions the prefilter let run, summed over the CPUs.
    pub fn prefilter_passed(&self) -> u64 {
        self.count(COUNT_PREFILTER_PASSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_keyed_with_its_nul_and_a_prefix_without() {
        let word = word_key(7, b"push", true);
        let prefix = word_key(7, b"--f", false);
        assert_eq!(word.prefix_len(), 8 * (4 + 5));
        assert_eq!(prefix.prefix_len(), 8 * (4 + 3));
        assert_eq!(word.data().id, [0, 0, 0, 7]);
        assert_eq!(&word.data().bytes[..5], b"push\0");
    }

    #[test]
    fn a_path_to_the_program_ends_in_its_name() {
        let filter = path_tail("git");
        let tail = |argv0: &[u8]| {
            let last: [u8; 16] = argv0[argv0.len() - 16..].try_into().unwrap();
            let (low, high) = last.split_at(8);
            let low = u64::from_ne_bytes(low.try_into().unwrap());
            let high = u64::from_ne_bytes(high.try_into().unwrap());
            low & filter.tail_mask[0] == filter.tail[0]
                && high & filter.tail_mask[1] == filter.tail[1]
        };
        assert!(tail(b"/usr/local/libexec/git-core/git"));
        assert!(!tail(b"/usr/local/libexec/git-core/xgit"));
        assert!(!tail(b"/usr/local/libexec/git-core/git-push"));
        assert_eq!(filter.name_len, 3);
    }

    #[test]
    fn ids_continue_after_pinned_ones() {
        assert_eq!(ArgvFilters::after([3, 9, 4].into_iter()).next_id, 10);
        assert_eq!(ArgvFilters::after(std::iter::empty()).next_id, 1);
        assert_eq!(ArgvFilters::after([u32::MAX].into_iter()).next_id, 1);
    }
}
