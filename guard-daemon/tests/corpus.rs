//! The default pack against corpora of destructive spellings and harmless
//! look-alikes (tests/corpus/*.txt): every line's decision must be exactly
//! the expected one.
use guard_daemon::policy::{Action, CommandContext, Policy};

/// Each corpus file with the least number of lines it must hold, so a file
/// cut short by mistake fails instead of passing on what is left.
const CORPORA: &[(&str, &str, usize)] = &[
    (
        "default-pack.txt",
        include_str!("corpus/default-pack.txt"),
        200,
    ),
    (
        "other-tools.txt",
        include_str!("corpus/other-tools.txt"),
        650,
    ),
];

fn action(name: &str) -> Action {
    match name {
        "allow" => Action::Allow,
        "audit" => Action::Audit,
        "hold" => Action::Hold,
        "deny" => Action::Deny,
        other => panic!("unknown action {other:?} in corpus"),
    }
}

#[test]
fn default_pack_decides_the_corpus() {
    let policy = Policy::embedded_default();
    let mut failures = Vec::new();
    let mut total = 0;
    for (file, corpus, floor) in CORPORA {
        let mut counted = 0;
        for (number, line) in corpus.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (expected, command) = line
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("{file}:{}: not ACTION COMMAND", number + 1));
            let argv = shlex::split(command.trim())
                .unwrap_or_else(|| panic!("{file}:{}: bad quoting", number + 1));
            let mut context = CommandContext::from_argv(&argv);
            context.cwd = Some("/home/dev/project".into());
            context.env = vec![("HOME".into(), "/home/dev".into())];
            let explanation = policy.judge(&context);
            counted += 1;
            if explanation.action != action(expected) {
                failures.push(format!(
                    "{file}:{}: `{}` expected {expected}, got {:?} (rule {:?}, why {:?})",
                    number + 1,
                    command.trim(),
                    explanation.action,
                    explanation.rule,
                    explanation.why
                ));
            }
        }
        assert!(
            counted >= *floor,
            "{file} has only {counted} lines (at least {floor} expected)"
        );
        total += counted;
    }
    assert!(
        failures.is_empty(),
        "{} of {total} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
