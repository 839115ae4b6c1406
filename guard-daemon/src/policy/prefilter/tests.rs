//! The prefilter is conservative: whatever the policy does not simply
//! allow, the kernel stops. Proven on the corpora, on every rule's examples
//! and on argv generated from the pack's own words, spelled every way the
//! programs read them.
use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::policy::{basename, file::PolicyFile, CommandContext, DEFAULT_POLICY};

const CORPORA: &[&str] = &[
    include_str!("../../../tests/corpus/default-pack.txt"),
    include_str!("../../../tests/corpus/other-tools.txt"),
];

static POLICY: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(Policy::embedded_default);
static FILTERS: std::sync::LazyLock<BTreeMap<String, Prefilter>> =
    std::sync::LazyLock::new(|| POLICY.prefilters());

fn judged(argv: &[String]) -> Action {
    let mut context = CommandContext::from_argv(argv);
    context.cwd = Some("/home/dev/project".into());
    context.env = vec![("HOME".into(), "/home/dev".into())];
    POLICY.judge(&context).action
}

/// Why the kernel would stop `argv`, run by its bare name as a shell runs
/// it (None: it runs); a program no rule watches never stops.
fn kernel_stops(argv: &[String]) -> Option<String> {
    let program = argv.first().map(|a| basename(a).to_string())?;
    let mut argv = argv.to_vec();
    argv[0] = program.clone();
    FILTERS.get(&program)?.stops(&program, &argv)
}

/// The corpus lines and the pack's rule examples, each as argv.
fn known_commands() -> Vec<Vec<String>> {
    let lines = CORPORA
        .iter()
        .flat_map(|corpus| corpus.lines())
        .filter_map(|line| {
            let line = line.trim();
            let (_, command) = line.split_once(char::is_whitespace)?;
            (!line.starts_with('#')).then(|| shlex::split(command.trim()).unwrap())
        });
    let pack: PolicyFile = toml::from_str(DEFAULT_POLICY).unwrap();
    let examples = pack.rules.into_iter().flat_map(|rule| {
        (rule.examples.matching.into_iter())
            .chain(rule.examples.no_match)
            .map(|example| example.words().unwrap())
    });
    lines
        .chain(examples)
        .filter(|argv| !argv.is_empty())
        .collect()
}

fn assert_conservative(argv: &[String]) -> Result<(), TestCaseError> {
    let mut bare = argv.to_vec();
    bare[0] = basename(&argv[0]).to_string();
    let action = judged(&bare);
    prop_assert!(
        action == Action::Allow || kernel_stops(&bare).is_some(),
        "{bare:?} is {action:?} but the kernel would let it run"
    );
    Ok(())
}

#[test]
fn every_corpus_line_and_rule_example_that_is_not_allowed_stops() {
    let commands = known_commands();
    assert!(commands.len() > 1500, "only {} commands", commands.len());
    let mut not_allowed = 0;
    for argv in &commands {
        assert_conservative(argv).unwrap();
        not_allowed += usize::from(judged(argv) != Action::Allow);
    }
    assert!(not_allowed > 500, "only {not_allowed} commands are held");
}

#[test]
fn an_agents_everyday_commands_run_without_a_stop() {
    for line in [
        "git status",
        "git status --short",
        "git diff",
        "git diff --stat HEAD~1",
        "git log --oneline -5",
        "git add .",
        "git add -A",
        "git commit -m 'fix the parser'",
        "git show HEAD",
        "git fetch origin",
        "git -C /home/dev/project status",
        "kubectl get pods -n prod",
        "kubectl describe pod web",
        "kubectl logs web -f",
        "terraform plan",
        "terraform init",
        "terraform validate",
        "docker ps -a",
        "docker images",
        "docker build -t app .",
        "npm test",
        "npm run build",
        "npm install",
        "make test",
    ] {
        let argv = shlex::split(line).unwrap();
        assert_eq!(judged(&argv), Action::Allow, "{line}");
        assert_eq!(kernel_stops(&argv), None, "{line}");
    }
}

#[test]
fn what_the_kernel_cannot_read_stops() {
    let git = POLICY.prefilter("git");
    let stops = |argv: &[&str]| git.stops("git", argv).is_some();
    assert!(!stops(&["git", "status"]));
    assert!(
        !stops(&["/usr/lib/git-core/git", "status"]),
        "argv[0] a path"
    );
    assert!(
        stops(&["/usr/lib/git-core/git-push", "status"]),
        "argv[0] another name"
    );
    assert!(stops(&["git-push", "status"]), "argv[0] another name");
    assert!(stops(&["/usr/bin/xgit", "status"]), "argv[0] another name");
    let many: Vec<&str> = std::iter::once("git").chain(["x"; 32]).collect();
    assert!(stops(&many), "more than 31 arguments");
    assert!(!stops(&many[..32]));
    let long = "x".repeat(ARGV_LONG_ARG - 1);
    assert!(stops(&["git", "commit", "-m", &long]));
    let shorter = "x".repeat(ARGV_LONG_ARG - 2);
    assert!(!stops(&["git", "commit", "-m", &shorter]));
    // A word is compared whole, a prefix by its start.
    assert!(stops(&["git", "push"]));
    assert!(!stops(&["git", "pushed"]));
    assert!(stops(&["git", "push", "+main"]));
    // Always-stopping programs, with their reason.
    for program in [
        "aws", "ssh", "busybox", "git-push", "mv", "sh", "rm", "sudo",
    ] {
        assert!(
            matches!(POLICY.prefilter(program), Prefilter::Always(_)),
            "{program}"
        );
    }
}

#[test]
fn option_letters_stop_inside_any_cluster() {
    let chgrp = POLICY.prefilter("chgrp");
    let Prefilter::Args(filter) = &chgrp else {
        panic!("chgrp is prefiltered: {chgrp:?}");
    };
    assert!(filter.letters() != 0);
    for argv in [
        &["chgrp", "-R", "staff", "/"][..],
        &["chgrp", "-vR", "staff", "/"],
        &["chgrp", "--rec", "staff", "/"],
        &["chgrp", "--recursive", "staff", "/"],
    ] {
        assert!(chgrp.stops("chgrp", argv).is_some(), "{argv:?}");
    }
    assert!(chgrp
        .stops("chgrp", &["chgrp", "-v", "staff", "x"])
        .is_none());
    let long_cluster = format!("-{}", "v".repeat(WORD_BYTES));
    assert!(chgrp
        .stops("chgrp", &["chgrp", long_cluster.as_str(), "x"])
        .is_some());
}

/// The pack's own words: every word of the corpora and examples, the
/// long options cut to each shorter spelling, and values glued on.
fn vocabulary() -> Vec<String> {
    let mut words: BTreeSet<String> = known_commands()
        .into_iter()
        .flat_map(|argv| argv.into_iter().skip(1))
        .filter(|word| word.len() < 40)
        .collect();
    let longs: Vec<String> = words
        .iter()
        .filter(|w| w.starts_with("--"))
        .cloned()
        .collect();
    for long in longs {
        let name = long.split('=').next().unwrap_or_default();
        for end in 3..name.len() {
            words.insert(name[..end].to_string());
        }
        words.insert(format!("{name}=true"));
        words.insert(format!("{name}=false"));
    }
    words.extend(
        [
            "--", "-", "-c", "-C", "-n", "-f", "-F", "-r", "-R", "-d", "-D",
        ]
        .map(String::from),
    );
    words.into_iter().collect()
}

fn argument(vocabulary: &'static [String]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vocabulary),
        1 => "-[a-zA-Z]{1,4}",
        1 => (prop::sample::select(vocabulary), prop::sample::select(vocabulary))
            .prop_map(|(a, b)| format!("{a}{b}")),
        1 => (prop::sample::select(vocabulary), prop::sample::select(vocabulary))
            .prop_map(|(a, b)| format!("{a}={b}")),
    ]
}

static VOCABULARY: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(vocabulary);
static PROGRAMS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (FILTERS.iter())
        .filter(|(_, filter)| matches!(filter, Prefilter::Args(_)))
        .map(|(program, _)| program.clone())
        .collect()
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn generated_commands_that_are_not_allowed_stop(
        program in prop::sample::select(&**PROGRAMS),
        args in prop::collection::vec(argument(&VOCABULARY), 0..8),
    ) {
        let argv: Vec<String> = std::iter::once(program).chain(args).collect();
        assert_conservative(&argv)?;
    }

    #[test]
    fn long_generated_commands_that_are_not_allowed_stop(
        program in prop::sample::select(&**PROGRAMS),
        args in prop::collection::vec(argument(&VOCABULARY), 24..40),
    ) {
        let argv: Vec<String> = std::iter::once(program).chain(args).collect();
        assert_conservative(&argv)?;
    }

    #[test]
    fn known_commands_with_words_added_stop_when_not_allowed(
        at in any::<prop::sample::Index>(),
        added in prop::collection::vec((any::<prop::sample::Index>(), argument(&VOCABULARY)), 1..4),
    ) {
        static KNOWN: std::sync::LazyLock<Vec<Vec<String>>> = std::sync::LazyLock::new(known_commands);
        let mut argv = at.get(&KNOWN).clone();
        for (position, word) in added {
            let position = 1 + position.index(argv.len());
            argv.insert(position.min(argv.len()), word);
        }
        assert_conservative(&argv)?;
    }
}
