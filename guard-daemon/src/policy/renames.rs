//! `rename`, util-linux's (`rename EXPR REPLACEMENT FILE...`) and Perl's
//! (`rename 's/EXPR/REPLACEMENT/' FILE...`): where each file ends up, so
//! that a rename into a place where deletes are free is judged as the
//! delete, as a move is (`moves.rs`). Which of the two `rename` is depends
//! on the host; guardd reads argv both ways when it could be either and
//! takes every place a file may land. A Perl expression it cannot follow
//! (code, `/e`, a regex the `regex` crate does not take) may land anywhere.

/// Names the two are installed under.
pub const PROGRAMS: &[&str] = &[
    "rename",
    "rename.ul",
    "file-rename",
    "prename",
    "perl-rename",
];

/// Where a file goes: a known path, or anywhere.
#[derive(Debug, PartialEq)]
pub enum Landing {
    At(String),
    Anywhere,
}

/// Each file named and where it may land; None when nothing is renamed
/// (`--no-act`, `--help`, too few operands, `--symlink`, which rewrites a
/// link's target instead).
pub fn landings(program: &str, args: &[String]) -> Option<Vec<(String, Vec<Landing>)>> {
    let mut operands = Vec::new();
    let (mut mode, mut options_done) = (Occurrence::First, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if options_done || arg == "-" || !arg.starts_with('-') {
            operands.push(arg.as_str());
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        let letters: Vec<char> = match arg.strip_prefix("--") {
            Some(long) => vec![long_letter(long)],
            None => arg[1..].chars().collect(),
        };
        for letter in letters {
            match letter {
                'n' | 's' | 'h' | 'V' => return None,
                'a' => mode = Occurrence::All,
                'l' => mode = Occurrence::Last,
                // Perl's `-e CODE`/`-E CODE` give the expression as an
                // option: where files go is then not known.
                'e' | 'E' => {
                    mode = Occurrence::Unknown;
                    args.next();
                }
                _ => {}
            }
        }
    }
    let perl = !program.ends_with(".ul") && perl_expression(operands.first()?).is_some();
    let util_linux = !PROGRAMS[2..].contains(&program) && operands.len() >= 3;
    let mut found = Vec::new();
    if mode == Occurrence::Unknown {
        let files = operands
            .iter()
            .map(|f| (f.to_string(), vec![Landing::Anywhere]));
        return Some(files.collect());
    }
    if util_linux {
        let (expr, replacement) = (operands[0], operands[1]);
        for file in &operands[2..] {
            let landing = util_linux_name(file, expr, replacement, mode);
            found.push((file.to_string(), vec![Landing::At(landing)]));
        }
    }
    if perl || (!util_linux && !program.ends_with(".ul")) {
        let expression = perl_expression(operands.first()?).flatten();
        for file in &operands[1..] {
            let landing = match &expression {
                Some(substitution) => substitution.apply(file),
                None => Landing::Anywhere,
            };
            match found.iter_mut().find(|(name, _)| name == file) {
                Some((_, places)) => places.push(landing),
                None => found.push((file.to_string(), vec![landing])),
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Occurrence {
    First,
    Last,
    All,
    Unknown,
}

/// The short letter of a long option, by a unique prefix as getopt_long
/// takes it; `?` for one that is ambiguous or unknown (the program refuses
/// it, and the rest is read as given).
fn long_letter(long: &str) -> char {
    const LONG: &[(&str, char)] = &[
        ("verbose", 'v'),
        ("no-act", 'n'),
        ("nono", 'n'),
        ("all", 'a'),
        ("last", 'l'),
        ("no-overwrite", 'o'),
        ("interactive", 'i'),
        ("symlink", 's'),
        ("help", 'h'),
        ("version", 'V'),
        ("force", 'f'),
    ];
    let name = long.split('=').next().unwrap_or(long);
    let exact = LONG.iter().find(|(full, _)| *full == name);
    let mut prefixed = LONG.iter().filter(|(full, _)| full.starts_with(name));
    match (exact, prefixed.next(), prefixed.next()) {
        (Some((_, letter)), ..) | (None, Some((_, letter)), None) => *letter,
        _ => '?',
    }
}

/// util-linux: the replacement acts on the last component only, unless the
/// expression or the replacement holds a `/`.
fn util_linux_name(file: &str, expr: &str, replacement: &str, mode: Occurrence) -> String {
    let whole = expr.contains('/') || replacement.contains('/');
    let start = match whole {
        true => 0,
        false => file.rfind('/').map_or(0, |slash| slash + 1),
    };
    let (head, name) = file.split_at(start);
    if expr.is_empty() {
        return file.to_string();
    }
    let renamed = match mode {
        Occurrence::All => name.replace(expr, replacement),
        Occurrence::Last => match name.rfind(expr) {
            Some(at) => format!("{}{replacement}{}", &name[..at], &name[at + expr.len()..]),
            None => name.to_string(),
        },
        _ => name.replacen(expr, replacement, 1),
    };
    format!("{head}{renamed}")
}

/// A Perl `s/PATTERN/REPLACEMENT/FLAGS` guardd can follow.
struct Substitution {
    pattern: regex::Regex,
    replacement: String,
    global: bool,
}

impl Substitution {
    fn apply(&self, file: &str) -> Landing {
        let limit = if self.global { 0 } else { 1 };
        Landing::At(
            self.pattern
                .replacen(file, limit, self.replacement.as_str())
                .into_owned(),
        )
    }
}

/// Some(Some) for a substitution that can be followed, Some(None) for Perl
/// code that cannot (`y///`, `tr///`, `/e`, anything else that looks like
/// code), None for an operand that is no Perl expression at all.
fn perl_expression(operand: &str) -> Option<Option<Substitution>> {
    let rest = operand.strip_prefix('s')?;
    let delimiter = rest.chars().next()?;
    if delimiter.is_alphanumeric() || delimiter.is_whitespace() || delimiter == '_' {
        return looks_like_code(operand).then_some(None);
    }
    let parts = split_unescaped(&rest[delimiter.len_utf8()..], delimiter);
    let [pattern, replacement, flags] = parts.as_slice() else {
        return Some(None);
    };
    if "{[(<".contains(delimiter) || flags.chars().any(|f| !"gi".contains(f)) {
        return Some(None);
    }
    // `$1` and `\1` in Perl are `${1}` for the regex crate; anything else
    // with `$` or `@` interpolates Perl variables.
    let mut replacement_text = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' | '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                replacement_text.push_str("${");
                replacement_text.push(chars.next()?);
                replacement_text.push('}');
            }
            '\\' => replacement_text.extend(chars.next()),
            '$' | '@' => return Some(None),
            c => replacement_text.push(c),
        }
    }
    let pattern = regex::RegexBuilder::new(pattern)
        .case_insensitive(flags.contains('i'))
        .build()
        .ok();
    Some(pattern.map(|pattern| Substitution {
        pattern,
        replacement: replacement_text,
        global: flags.contains('g'),
    }))
}

fn looks_like_code(operand: &str) -> bool {
    operand.starts_with("y") || operand.starts_with("tr") || operand.contains(';')
}

/// `a/b\/c/d` split on `/` where not escaped (the escape stays).
fn split_unescaped(text: &str, delimiter: char) -> Vec<String> {
    let (mut parts, mut current, mut escaped) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        if escaped {
            if c != delimiter {
                current.push('\\');
            }
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delimiter {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(program: &str, line: &str) -> Option<Vec<(String, Vec<Landing>)>> {
        landings(program, &shlex::split(line).unwrap())
    }

    fn at(path: &str) -> Landing {
        Landing::At(path.into())
    }

    #[test]
    fn util_linux_replaces_in_the_name_or_the_whole_path() {
        let one = |file: &str, to: &str| Some(vec![(file.to_string(), vec![at(to)])]);
        assert_eq!(
            landed("rename.ul", "src dst /h/a/src"),
            one("/h/a/src", "/h/a/dst")
        );
        assert_eq!(
            landed("rename.ul", "a b /h/a/src"),
            one("/h/a/src", "/h/a/src")
        );
        assert_eq!(
            landed("rename.ul", "/h/a /tmp/a /h/a/src"),
            one("/h/a/src", "/tmp/a/src")
        );
        assert_eq!(landed("rename.ul", "-l s Q /h/ss"), one("/h/ss", "/h/sQ"));
        assert_eq!(
            landed("rename.ul", "--all s Q /h/ss"),
            one("/h/ss", "/h/QQ")
        );
        assert_eq!(landed("rename.ul", "-n src /tmp/x src"), None);
        assert_eq!(landed("rename.ul", "--no-a src /tmp/x src"), None);
        assert_eq!(landed("rename.ul", "-s a b link"), None);
        assert_eq!(landed("rename.ul", "a b"), None);
    }

    #[test]
    fn perl_substitutions_are_followed_and_code_lands_anywhere() {
        let files = |line: &str| landed("file-rename", line).unwrap();
        assert_eq!(
            files(r"'s/\.txt$/.md/' a.txt b.txt"),
            [
                ("a.txt".into(), vec![at("a.md")]),
                ("b.txt".into(), vec![at("b.md")])
            ]
        );
        assert_eq!(
            files(r"'s|^|/tmp/|' /home/dev/src"),
            [("/home/dev/src".into(), vec![at("/tmp//home/dev/src")])]
        );
        assert_eq!(
            files(r"'s/(\w+)$/old-$1/' src"),
            [("src".into(), vec![at("old-src")])]
        );
        assert_eq!(
            files(r"'s/x/$ENV{HOME}/e' src"),
            [("src".into(), vec![Landing::Anywhere])]
        );
        assert_eq!(
            files("'y/a-z/A-Z/' src"),
            [("src".into(), vec![Landing::Anywhere])]
        );
        assert_eq!(
            files("-e 'print' src"),
            [("src".into(), vec![Landing::Anywhere])]
        );
        // `rename` alone may be either: both readings count.
        let both = landed("rename", "s/src/tmp/ x /h/src").unwrap();
        assert!(both
            .iter()
            .any(|(file, places)| file == "/h/src" && places.contains(&at("/h/tmp"))));
    }
}
