//! Program specs: how a program's argv is laid out, so rules can talk about
//! the subcommand, flags and option values instead of raw words. With a spec,
//! `git -C repo -c a=b push -f` has subcommand `push` and flag `force`, and
//! `rm -fr`, `rm -r -f`, `rm -Rf` and `rm --recursive --force` are the same.
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::prefilter::Atom;

/// A spec as written in the policy file (`[spec.NAME]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpecFile {
    /// Program names the spec applies to; defaults to the table's key.
    pub names: Vec<String>,
    /// Options that take a value (`-n VALUE`, `--namespace VALUE`, `--namespace=VALUE`).
    pub value_options: Vec<String>,
    /// When true, every `--long` option takes a value except those in `flags` (aws, az, gcloud).
    pub long_options_take_values: bool,
    /// Boolean long options, for `long_options_take_values` programs.
    pub flags: Vec<String>,
    /// Other spellings of an option: `"-r" = "--recursive"`.
    pub aliases: BTreeMap<String, String>,
    /// Options are written with one dash and may be long (`-chdir=DIR`, `-auto-approve`).
    pub single_dash_long: bool,
    /// Where SQL text is: options whose value is SQL (`-c`, `--command`) ...
    pub sql_options: Vec<String>,
    /// ... and/or the 1-based positional argument holding SQL (sqlite3: 2).
    pub sql_positional: Option<usize>,
    /// The program takes any unique prefix of a long option (`--rec` for
    /// `--recursive`), as GNU getopt_long, git and Python's argparse do.
    pub abbreviations: bool,
    /// Long options not named elsewhere in the spec, so a prefix is expanded
    /// only where the program itself finds it unique.
    pub long_options: Vec<String>,
}

/// A compiled spec: option names are canonical (aliases applied, no dashes
/// for long names; `-x` for a short option without a long alias).
#[derive(Debug, Clone, Default)]
pub struct Spec {
    value_options: BTreeSet<String>,
    long_options_take_values: bool,
    flags: BTreeSet<String>,
    aliases: BTreeMap<String, String>,
    single_dash_long: bool,
    sql_options: BTreeSet<String>,
    sql_positional: Option<usize>,
    abbreviations: bool,
    /// Canonical long option names a prefix may expand to.
    long_names: BTreeSet<String>,
}

/// The meaning of one command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedArgs {
    /// Non-option words in order (subcommands, then positional arguments).
    pub words: Vec<String>,
    /// Canonical names of the options present (with or without a value).
    pub flags: BTreeSet<String>,
    /// Canonical option name and value, in order.
    pub options: Vec<(String, String)>,
    /// SQL texts found where the spec says SQL goes.
    pub sql: Vec<String>,
    /// Options present only as an abbreviation (`--dry` for `--dry-run`): they
    /// count for holding, never for letting a command through.
    pub abbreviated: BTreeSet<String>,
}

impl Spec {
    pub fn compile(file: &SpecFile) -> Self {
        let aliases: BTreeMap<String, String> = file
            .aliases
            .iter()
            .map(|(from, to)| (from.clone(), canonical_name(to)))
            .collect();
        let canon = |name: &String| {
            aliases
                .get(name)
                .cloned()
                .unwrap_or_else(|| canonical_name(name))
        };
        let long_options: Vec<String> = file.long_options.iter().map(canon).collect();
        let mut spec = Self {
            value_options: file.value_options.iter().map(canon).collect(),
            long_options_take_values: file.long_options_take_values,
            flags: file.flags.iter().map(canon).collect(),
            single_dash_long: file.single_dash_long,
            sql_options: file.sql_options.iter().map(canon).collect(),
            sql_positional: file.sql_positional,
            abbreviations: file.abbreviations,
            long_names: BTreeSet::new(),
            aliases,
        };
        let named: Vec<String> = (spec.aliases.values().cloned())
            .chain(spec.value_options.iter().cloned())
            .chain(spec.flags.iter().cloned())
            .chain(spec.sql_options.iter().cloned())
            .chain(long_options)
            .collect();
        spec.learn(named.iter().map(String::as_str));
        spec
    }

    /// Adds option names (as rules write them) to those a prefix may expand to:
    /// every option a rule names is one the program has.
    pub fn learn<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            let name = self.canonical(name);
            if !name.starts_with('-') {
                self.long_names.insert(name);
            }
        }
    }

    /// The known long options `name` abbreviates (none when it is one itself).
    /// Several when it is ambiguous: the program refuses those, or (git, whose
    /// options differ per subcommand) finds it unique where we cannot tell.
    fn expand(&self, name: &str) -> Vec<String> {
        if !self.abbreviations || name.is_empty() || self.long_names.contains(name) {
            return Vec::new();
        }
        (self.long_names.range(name.to_string()..))
            .take_while(|known| known.starts_with(name))
            .cloned()
            .collect()
    }

    /// The canonical name of an option as a rule writes it (`-r`, `--recursive`, `recursive`).
    pub fn canonical(&self, written: &str) -> String {
        if let Some(name) = self.aliases.get(written) {
            return name.clone();
        }
        if written.starts_with('-') {
            return canonical_name(written);
        }
        // A bare name in a rule: a one-letter name is the short option.
        match self.aliases.get(&format!("-{written}")) {
            Some(name) if written.len() == 1 => name.clone(),
            _ => written.to_string(),
        }
    }

    /// What one of the arguments of a command with the option `name`
    /// (canonical) must be, as the kernel's argv prefilter tests it: every
    /// spelling `parse` reads as that option (its aliases, a letter in a
    /// cluster, the long name with a value or, where the program takes
    /// them, abbreviated down to its first letter).
    pub fn option_atoms(&self, name: &str) -> Vec<Atom> {
        let mut atoms = Vec::new();
        for (written, _) in self.aliases.iter().filter(|(_, to)| *to == name) {
            let short = written.strip_prefix('-').filter(|s| s.chars().count() == 1);
            if let Some(letter) = short.and_then(|s| s.chars().next()) {
                atoms.push(Atom::letter(letter));
            }
            if written.starts_with('-') {
                atoms.push(Atom::Prefix(written.clone()));
            }
        }
        if let Some(letter) = name.strip_prefix('-') {
            // A short option without a long name: `-x`, alone or in a cluster.
            atoms.extend(letter.chars().next().map(Atom::letter));
            atoms.push(Atom::Prefix(name.to_string()));
            return atoms;
        }
        let spelled = match (self.abbreviations, name.chars().next()) {
            (true, Some(first)) => first.to_string(),
            _ => name.to_string(),
        };
        atoms.push(Atom::Prefix(format!("--{spelled}")));
        if self.single_dash_long {
            atoms.push(Atom::Prefix(format!("-{spelled}")));
        }
        atoms
    }

    /// What one of the arguments of a command with SQL in it must be: an
    /// SQL option. None when SQL may also be a positional argument.
    pub fn sql_atoms(&self) -> Option<Vec<Atom>> {
        if self.sql_positional.is_some() || self.sql_options.is_empty() {
            return None;
        }
        Some(
            self.sql_options
                .iter()
                .flat_map(|name| self.option_atoms(name))
                .collect(),
        )
    }

    fn takes_value(&self, name: &str, long: bool) -> bool {
        self.value_options.contains(name)
            || (long && self.long_options_take_values && !self.flags.contains(name))
    }

    fn lookup(&self, written: &str) -> String {
        self.aliases
            .get(written)
            .cloned()
            .unwrap_or_else(|| canonical_name(written))
    }

    /// Parses `args` (argv without argv[0]).
    pub fn parse<S: AsRef<str>>(&self, args: &[S]) -> ParsedArgs {
        let mut parsed = ParsedArgs::default();
        let mut iter = args.iter().map(AsRef::as_ref);
        let mut options_done = false;
        // Options written in full (or short): these are present, abbreviated or not.
        let mut in_full = BTreeSet::new();
        while let Some(arg) = iter.next() {
            if options_done || arg == "-" || !arg.starts_with('-') {
                parsed.words.push(arg.to_string());
                continue;
            }
            if arg == "--" {
                options_done = true;
                continue;
            }
            let long = arg.starts_with("--") || self.single_dash_long;
            if long {
                let (written, inline) = match arg.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (arg, None),
                };
                let name = self.lookup(written);
                // An abbreviation stands for every known option it may mean.
                let mut names = self.expand(&name);
                if names.is_empty() {
                    in_full.insert(name.clone());
                    names.push(name);
                } else {
                    parsed.abbreviated.extend(names.iter().cloned());
                }
                let value = match inline {
                    Some(value) => Some(value.to_string()),
                    None if names.iter().all(|n| self.takes_value(n, true)) => {
                        iter.next().map(str::to_string)
                    }
                    None => None,
                };
                for name in names {
                    self.record(&mut parsed, name, value.clone());
                }
                continue;
            }
            // A short cluster: -abc, where a letter taking a value ends it (-n prod, -nprod).
            let letters: Vec<char> = arg[1..].chars().collect();
            for (at, letter) in letters.iter().enumerate() {
                let name = self.lookup(&format!("-{letter}"));
                in_full.insert(name.clone());
                if self.takes_value(&name, false) {
                    let rest: String = letters[at + 1..].iter().collect();
                    let rest = rest.strip_prefix('=').map(str::to_string).unwrap_or(rest);
                    let value = if rest.is_empty() {
                        iter.next().map(str::to_string)
                    } else {
                        Some(rest)
                    };
                    self.record(&mut parsed, name, value);
                    break;
                }
                self.record(&mut parsed, name, None);
            }
        }
        parsed.abbreviated.retain(|name| !in_full.contains(name));
        if let Some(at) = self.sql_positional {
            if let Some(text) = parsed.words.get(at - 1) {
                parsed.sql.push(text.clone());
            }
        }
        parsed
    }

    fn record(&self, parsed: &mut ParsedArgs, name: String, value: Option<String>) {
        if let Some(value) = value {
            if self.sql_options.contains(&name) {
                parsed.sql.push(value.clone());
            }
            parsed.options.push((name.clone(), value));
        }
        parsed.flags.insert(name);
    }
}

/// `--recursive` -> `recursive`; `-chdir` (single-dash long) -> `chdir`; `-r` stays `-r`.
fn canonical_name(written: &str) -> String {
    if let Some(long) = written.strip_prefix("--") {
        return long.to_string();
    }
    match written.strip_prefix('-') {
        Some(short) if short.chars().count() == 1 => written.to_string(),
        Some(long) => long.to_string(),
        None => written.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> Spec {
        Spec::compile(&toml::from_str(toml_text).unwrap())
    }

    fn rm() -> Spec {
        spec(r#"aliases = { "-r" = "--recursive", "-R" = "--recursive", "-f" = "--force" }"#)
    }

    #[test]
    fn short_clusters_and_long_names_are_the_same_flags() {
        let rm = rm();
        let expected: BTreeSet<String> = ["recursive".to_string(), "force".to_string()].into();
        for argv in [
            &["-rf", "x"][..],
            &["-fr", "x"],
            &["-r", "-f", "x"],
            &["-Rf", "x"],
            &["--recursive", "--force", "x"],
            &["x", "--force", "-R"],
        ] {
            let parsed = rm.parse(argv);
            assert_eq!(parsed.flags, expected, "{argv:?}");
            assert_eq!(parsed.words, vec!["x"], "{argv:?}");
        }
        assert_eq!(rm.parse(&["--", "-rf"]).words, vec!["-rf"]);
        assert!(rm.parse(&["--", "-rf"]).flags.is_empty());
    }

    #[test]
    fn global_options_and_their_values_are_skipped() {
        let git = spec(
            r#"value_options = ["-C", "-c", "--git-dir", "--work-tree", "-m", "--message"]
               aliases = { "-f" = "--force", "-d" = "--delete", "-m" = "--message" }"#,
        );
        let parsed = git.parse(&[
            "-C",
            "/repo",
            "-c",
            "a=b",
            "--git-dir=/x/.git",
            "push",
            "-f",
            "origin",
            "main",
        ]);
        assert_eq!(parsed.words, vec!["push", "origin", "main"]);
        assert!(parsed.flags.contains("force"));
        let commit = git.parse(&["commit", "-m", "rm -rf / and push --force"]);
        assert_eq!(commit.words, vec!["commit"]);
        assert!(!commit.flags.contains("force"));
        assert_eq!(
            commit.options,
            vec![(
                "message".to_string(),
                "rm -rf / and push --force".to_string()
            )]
        );
    }

    #[test]
    fn option_values_in_every_spelling() {
        let kubectl = spec(
            r#"value_options = ["-n", "--namespace", "--context"]
                              aliases = { "-n" = "--namespace" }"#,
        );
        for argv in [
            &["-n", "prod", "delete", "ns", "x"][..],
            &["-nprod", "delete", "ns", "x"],
            &["-n=prod", "delete", "ns", "x"],
            &["--namespace", "prod", "delete", "ns", "x"],
            &["delete", "--namespace=prod", "ns", "x"],
        ] {
            let parsed = kubectl.parse(argv);
            assert_eq!(
                parsed.options,
                vec![("namespace".to_string(), "prod".to_string())],
                "{argv:?}"
            );
            assert_eq!(parsed.words, vec!["delete", "ns", "x"], "{argv:?}");
        }
    }

    #[test]
    fn long_options_take_values_unless_flags() {
        let aws = spec(
            r#"long_options_take_values = true
                          flags = ["--recursive", "--dryrun", "--force"]"#,
        );
        let parsed = aws.parse(&[
            "--profile",
            "prod",
            "s3",
            "rm",
            "s3://b/",
            "--recursive",
            "--exclude",
            "x",
        ]);
        assert_eq!(parsed.words, vec!["s3", "rm", "s3://b/"]);
        assert!(parsed.flags.contains("recursive"));
        let parsed = aws.parse(&["ec2", "describe-instances", "--filters", "Name=delete-me"]);
        assert_eq!(parsed.words, vec!["ec2", "describe-instances"]);
    }

    #[test]
    fn single_dash_long_options() {
        let terraform = spec(
            r#"single_dash_long = true
                                value_options = ["-chdir", "-target", "-var", "-var-file"]"#,
        );
        let parsed = terraform.parse(&[
            "-chdir=infra",
            "apply",
            "-destroy",
            "-auto-approve",
            "-var",
            "a=b",
        ]);
        assert_eq!(parsed.words, vec!["apply"]);
        assert!(parsed.flags.contains("destroy") && parsed.flags.contains("auto-approve"));
        assert_eq!(
            parsed.options[0],
            ("chdir".to_string(), "infra".to_string())
        );
    }

    #[test]
    fn sql_is_collected_from_options_and_positionals() {
        let psql = spec(
            r#"value_options = ["-c", "--command", "-d"]
                           sql_options = ["-c", "--command"]"#,
        );
        assert_eq!(
            psql.parse(&["-d", "prod", "-c", "DROP TABLE x"]).sql,
            vec!["DROP TABLE x"]
        );
        let sqlite = spec("sql_positional = 2");
        assert_eq!(
            sqlite.parse(&["app.db", "DELETE FROM users"]).sql,
            vec!["DELETE FROM users"]
        );
    }

    #[test]
    fn rules_name_options_in_any_spelling() {
        let rm = rm();
        assert_eq!(rm.canonical("-r"), "recursive");
        assert_eq!(rm.canonical("--recursive"), "recursive");
        assert_eq!(rm.canonical("recursive"), "recursive");
        assert_eq!(rm.canonical("r"), "recursive");
        assert_eq!(rm.canonical("-v"), "-v");
    }

    #[test]
    fn unique_prefixes_of_long_options_are_expanded_where_the_program_does() {
        let mut git = spec(
            r#"
            abbreviations = true
            value_options = ["--receive-pack", "--repo"]
            aliases = { "-f" = "--force", "-n" = "--dry-run" }
            long_options = ["dry-run", "hard"]
            "#,
        );
        git.learn(["--force-with-lease", "mirror"]);
        let push = git.parse(&["push", "--mir", "--har"]);
        assert!(push.flags.contains("mirror") && push.flags.contains("hard"));
        assert_eq!(
            push.abbreviated,
            ["hard", "mirror"].map(String::from).into()
        );
        // Ambiguous: git may find it unique for this subcommand, so both count.
        let forced = git.parse(&["clean", "--forc"]);
        assert!(forced.flags.contains("force") && forced.flags.contains("force-with-lease"));
        // Written in full it is not an abbreviation, whatever else is.
        let full = git.parse(&["clean", "--dry", "-n", "--force"]);
        assert!(full.abbreviated.is_empty(), "{full:?}");
        // A value is taken when every option it may mean takes one.
        let repo = git.parse(&["push", "--rep", "origin", "main"]);
        assert_eq!(
            repo.options,
            vec![("repo".to_string(), "origin".to_string())]
        );
        assert_eq!(repo.words, ["push", "main"]);
        let inline = git.parse(&["push", "--rec=/x", "origin"]);
        assert_eq!(
            inline.options,
            vec![("receive-pack".to_string(), "/x".to_string())]
        );
        // Unknown names and programs without abbreviations stay as written.
        assert!(git.parse(&["push", "--zz"]).flags.contains("zz"));
        let mut strict = spec(r#"aliases = { "-r" = "--recursive" }"#);
        strict.learn(["recursive"]);
        assert!(strict.parse(&["--rec"]).flags.contains("rec"));
    }
}
