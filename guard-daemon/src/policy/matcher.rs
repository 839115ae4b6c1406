//! Matching one argv word against a rule's pattern.
//!
//! A pattern is one or more alternatives separated by `|`. An alternative is:
//! - `-x` (one letter): the option `-x`, also inside a short cluster (`-rf` has `-r`);
//!   `-1` (a digit) is the word `-1`;
//! - `--name`: the long option, also as `--name=value`;
//! - a word with `*` wildcards (`delete-*`), matched against the whole argument;
//! - any other word, matched exactly.

use super::prefilter::Atom;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgPattern(Vec<Alternative>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Alternative {
    Short(char),
    Long(String),
    Glob(String),
    Word(String),
}

impl ArgPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let alternatives = text
            .split('|')
            .map(|alt| {
                if alt.is_empty() {
                    return Err(format!("empty alternative in pattern {text:?}"));
                }
                let mut chars = alt.chars();
                Ok(match (chars.next(), chars.next(), chars.next()) {
                    (Some('-'), Some(c), None) if c.is_ascii_alphabetic() => Alternative::Short(c),
                    _ if alt.contains('*') => Alternative::Glob(alt.to_string()),
                    _ if alt.starts_with("--") && alt.len() > 2 => {
                        Alternative::Long(alt.to_string())
                    }
                    _ => Alternative::Word(alt.to_string()),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(alternatives))
    }

    pub fn matches(&self, arg: &str) -> bool {
        self.0.iter().any(|alt| alt.matches(arg))
    }

    /// What an argument matching this pattern must be, as the kernel's
    /// argv prefilter tests it; None when an alternative gives no literal
    /// start (`*drop*`).
    pub fn atoms(&self) -> Option<Vec<Atom>> {
        self.0
            .iter()
            .map(|alt| match alt {
                Alternative::Short(c) => Some(Atom::letter(*c)),
                Alternative::Long(name) => Some(Atom::Prefix(name.clone())),
                Alternative::Glob(glob) => {
                    let start = glob.split('*').next().unwrap_or_default();
                    (!start.is_empty()).then(|| Atom::Prefix(start.to_string()))
                }
                Alternative::Word(word) => Some(Atom::Word(word.clone())),
            })
            .collect()
    }

    /// The plain words among the alternatives (`push|send-pack`).
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|alt| match alt {
            Alternative::Word(word) => Some(word.as_str()),
            _ => None,
        })
    }
}

impl Alternative {
    fn matches(&self, arg: &str) -> bool {
        match self {
            Self::Short(c) => {
                arg.len() > 1
                    && arg.starts_with('-')
                    && !arg.starts_with("--")
                    && arg[1..].chars().all(|ch| ch.is_ascii_alphanumeric())
                    && arg[1..].contains(*c)
            }
            Self::Long(name) => {
                arg == name
                    || arg
                        .strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('='))
            }
            Self::Glob(glob) => glob_matches(glob, arg),
            Self::Word(word) => arg == word,
        }
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob_matches(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, arg: &str) -> bool {
        ArgPattern::parse(pattern).unwrap().matches(arg)
    }

    #[test]
    fn short_options_match_inside_clusters() {
        for arg in ["-r", "-rf", "-fr", "-vrf"] {
            assert!(m("-r", arg), "{arg}");
        }
        for arg in ["-f", "--recursive", "r", "-", "-x/r"] {
            assert!(!m("-r", arg), "{arg}");
        }
    }

    #[test]
    fn long_options_match_with_values() {
        assert!(m("--force", "--force"));
        assert!(m("--force", "--force=true"));
        assert!(!m("--force", "--force-with-lease"));
        assert!(m("--force|--force-with-lease*", "--force-with-lease=main"));
    }

    #[test]
    fn globs_and_words() {
        assert!(m("delete-*", "delete-bucket"));
        assert!(!m("delete-*", "describe-delete"));
        assert!(m("*drop*", "please-drop-it"));
        assert!(m("destroy", "destroy"));
        assert!(!m("destroy", "destroyer"));
        assert!(ArgPattern::parse("a||b").is_err());
        assert!(m("-1", "-1"));
        assert!(!m("-1", "-15"));
    }
}
