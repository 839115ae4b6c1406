//! The exec gate's argv prefilter, compiled from the policy. For each
//! watched program it lists arguments one of which every command a hold,
//! deny or audit rule can match must have (and every command whose meaning
//! guardd reads beside argv: git's configured push, a saved terraform plan,
//! a command run in a container). In the kernel (`guard-ebpf/src/argv.rs`)
//! an exec whose arguments are none of them runs without a stop. `stops`
//! here is the kernel's test in Rust, for the tests that prove the filter
//! conservative and for `guardctl explain`.
use std::collections::BTreeMap;

use guard_common::{ARGV_LONG_ARG, ARGV_MAX_ARGS, ARGV_WORD_LEN, COMM_LEN};

use super::{aws_alias, elsewhere, git_config, moves, terraform_plan, wrappers, Action, Policy};

/// Bytes of an argument the kernel compares.
pub const WORD_BYTES: usize = ARGV_WORD_LEN - 1;

/// One test of one argument.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// The whole argument is this word.
    Word(String),
    /// The argument starts with this.
    Prefix(String),
    /// The argument is a short-option cluster (`-x...`) holding this byte.
    Letter(u8),
}

impl Atom {
    /// A short option's letter (its first byte, for a letter outside ASCII).
    pub fn letter(letter: char) -> Self {
        let mut buffer = [0; 4];
        Self::Letter(letter.encode_utf8(&mut buffer).as_bytes()[0])
    }

    /// Roughly how many harmless commands it stops: a rule's narrowest
    /// condition is the one with the least.
    pub fn breadth(&self) -> u32 {
        match self {
            Self::Word(_) => 1,
            Self::Prefix(prefix) if prefix.len() >= 4 => 1,
            Self::Prefix(_) => 3,
            Self::Letter(_) => 4,
        }
    }

    /// As the kernel keeps it: a word or prefix longer than it compares
    /// becomes a prefix of what it compares (it stops more, never less).
    fn fitted(self) -> Self {
        match self {
            Self::Word(text) | Self::Prefix(text) if text.len() > WORD_BYTES => {
                let mut end = WORD_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                Self::Prefix(text[..end].to_string())
            }
            other => other,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Word(word) => format!("`{word}`"),
            Self::Prefix(prefix) => format!("`{prefix}...`"),
            Self::Letter(letter) => format!("-{}", char::from(*letter).escape_default()),
        }
    }
}

/// What the kernel does with a watched program's execs in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefilter {
    /// Every exec stops, for this reason.
    Always(String),
    /// An exec stops when an argument hits the filter.
    Args(ArgFilter),
}

/// The arguments that stop a program, each with what asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgFilter {
    pub atoms: BTreeMap<Atom, String>,
}

impl ArgFilter {
    fn add(&mut self, source: &str, atoms: impl IntoIterator<Item = Atom>) {
        for atom in atoms {
            self.atoms
                .entry(atom.fitted())
                .or_insert_with(|| source.to_string());
        }
    }

    /// The kernel's letter mask: bit `byte & 63` of each letter.
    pub fn letters(&self) -> u64 {
        self.atoms
            .keys()
            .filter_map(|atom| match atom {
                Atom::Letter(letter) => Some(1u64 << (letter & 63)),
                _ => None,
            })
            .fold(0, |mask, bit| mask | bit)
    }

    /// Why the kernel stops an exec of `program` with `argv` (None: it runs
    /// without a stop). The same test as `guard-ebpf/src/argv.rs`.
    pub fn stops<A: AsRef<[u8]>>(&self, program: &str, argv: &[A]) -> Option<String> {
        let argv0 = argv.first().map(AsRef::as_ref).unwrap_or_default();
        let path = format!("/{program}");
        if argv0 != program.as_bytes() && !argv0.ends_with(path.as_bytes()) {
            return Some(format!("argv[0] is not `{program}` or a path to it"));
        }
        if argv.len() > ARGV_MAX_ARGS as usize {
            return Some(format!("more than {} arguments", ARGV_MAX_ARGS - 1));
        }
        let letters = self.letters();
        for arg in &argv[1..] {
            let arg = arg.as_ref();
            if arg.len() + 1 >= ARGV_LONG_ARG {
                return Some(format!("an argument of {} bytes", arg.len()));
            }
            let key = &arg[..arg.len().min(WORD_BYTES)];
            let shown = crate::escape::escape_bytes(arg);
            for (atom, source) in &self.atoms {
                let hit = match atom {
                    Atom::Word(word) => word.as_bytes() == key,
                    Atom::Prefix(prefix) => key.starts_with(prefix.as_bytes()),
                    Atom::Letter(_) => false,
                };
                if hit {
                    return Some(format!(
                        "argument `{shown}` is {} ({source})",
                        atom.describe()
                    ));
                }
            }
            if letters != 0 && arg.len() >= 2 && arg[0] == b'-' && arg[1] != b'-' {
                if arg.len() >= WORD_BYTES {
                    return Some(format!("option cluster `{shown}` is too long to read"));
                }
                // Bit 0 stands for the kernel's zero padding.
                let bits = (arg[1..].iter()).fold(1u64, |bits, byte| bits | 1 << (byte & 63));
                if bits & letters != 0 {
                    let source = (self.atoms.iter())
                        .find(|(atom, _)| matches!(atom, Atom::Letter(l) if bits & 1 << (l & 63) != 0))
                        .map_or("", |(_, source)| source.as_str());
                    return Some(format!(
                        "option cluster `{shown}` may hold a letter of {source}"
                    ));
                }
            }
        }
        None
    }
}

impl Prefilter {
    /// Why the kernel stops an exec of `program` with `argv`, or None.
    pub fn stops<A: AsRef<[u8]>>(&self, program: &str, argv: &[A]) -> Option<String> {
        match self {
            Self::Always(why) => Some(why.clone()),
            Self::Args(filter) => filter.stops(program, argv),
        }
    }
}

impl Policy {
    /// Every watched program's prefilter.
    pub fn prefilters(&self) -> BTreeMap<String, Prefilter> {
        let mut filters: BTreeMap<String, Prefilter> = (self.watched_programs().into_iter())
            .map(|program| {
                let filter = self.prefilter(&program);
                (program, filter)
            })
            .collect();
        // A long name's comm is another program's whole name: the kernel
        // could not tell them apart by name.
        let cut: Vec<(String, String)> = (filters.keys())
            .filter(|name| name.len() >= COMM_LEN)
            .map(|name| {
                (
                    String::from_utf8_lossy(&name.as_bytes()[..COMM_LEN - 1]).into(),
                    name.clone(),
                )
            })
            .collect();
        for (short, long) in cut {
            if let Some(filter) = filters.get_mut(&short) {
                *filter = Prefilter::Always(format!("its name is also the kernel's cut of {long}"));
            }
        }
        filters
    }

    /// The prefilter of one watched program (of any name: a program no
    /// rule watches never stops, and its filter is empty).
    pub fn prefilter(&self, program: &str) -> Prefilter {
        if let Some(why) = always_stops(program) {
            return Prefilter::Always(why.to_string());
        }
        let mut filter = ArgFilter::default();
        if git_config::reads(program) {
            let source = "git's configured push (remote.*.push, mirror)";
            filter.add(source, [Atom::Word("push".into())]);
        }
        if terraform_plan::reads(program) {
            filter.add("a saved plan's deletes", [Atom::Word("apply".into())]);
        }
        match elsewhere::verbs(program) {
            Err(why) => return Prefilter::Always(why.to_string()),
            Ok(verbs) => filter.add(
                "a command it runs elsewhere",
                verbs.iter().map(|verb| Atom::Word(verb.to_string())),
            ),
        }
        let spec = self.spec_for(program);
        let rules = self
            .candidates(program, None)
            .into_iter()
            .map(|at| &self.rules[at]);
        for rule in rules.filter(|rule| rule.action != Action::Allow) {
            match rule.argv_atoms(spec) {
                Ok(atoms) => filter.add(&format!("rule {}", rule.id), atoms),
                Err(why) => return Prefilter::Always(why),
            }
        }
        Prefilter::Args(filter)
    }
}

impl Policy {
    /// Whether the kernel's prefilter stops `argv` in a session, and why;
    /// `host` says why this host stops a program always, if it does.
    pub fn kernel_says(&self, argv: &[String], host: impl Fn(&str) -> Option<String>) -> String {
        let program = argv.first().map(|a| super::basename(a)).unwrap_or_default();
        let Some(prefilter) = self.prefilters().remove(program) else {
            return format!(
                "runs without a stop: {program} is not a watched program (a file that is not \
                 what its name says still stops)"
            );
        };
        let why = match (host(program), prefilter) {
            (Some(why), _) | (None, Prefilter::Always(why)) => Some(why),
            (None, Prefilter::Args(filter)) => filter.stops(program, argv),
        };
        match why {
            Some(why) => format!("stops in the kernel: {why}"),
            None => format!("runs without a stop: no argument is one a rule for {program} names"),
        }
    }
}

/// Programs whose argv the kernel cannot judge, and why.
fn always_stops(program: &str) -> Option<&'static str> {
    if wrappers::is_wrapper(program, None) {
        return Some("runs the program its arguments name, in the same process");
    }
    if wrappers::SHELLS.contains(&program) {
        return Some("runs the script file its arguments name");
    }
    if aws_alias::reads(program) {
        return Some("an alias in ~/.aws/cli/alias may make any aws command another");
    }
    if moves::reads(program) {
        return Some("a move is judged by where its files land");
    }
    if program.len() >= COMM_LEN {
        return Some("its name is longer than the kernel's 15-byte comm");
    }
    None
}

/// The atoms of a filter as the kernel's word set: (bytes, whole word).
pub fn kernel_words(filter: &ArgFilter) -> impl Iterator<Item = (&[u8], bool)> {
    filter.atoms.keys().filter_map(|atom| match atom {
        Atom::Word(word) => Some((word.as_bytes(), true)),
        Atom::Prefix(prefix) => Some((prefix.as_bytes(), false)),
        Atom::Letter(_) => None,
    })
}

#[cfg(test)]
mod tests;
