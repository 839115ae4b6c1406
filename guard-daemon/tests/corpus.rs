//! The default pack against a corpus of destructive spellings and harmless
//! look-alikes (tests/corpus/default-pack.txt): every line's decision must be
//! exactly the expected one.
use guard_daemon::policy::{Action, CommandContext, Policy};

const CORPUS: &str = include_str!("corpus/default-pack.txt");

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
    let mut counted = 0;
    for (number, line) in CORPUS.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (expected, command) = line
            .split_once(char::is_whitespace)
            .expect("ACTION COMMAND");
        let argv = shlex::split(command.trim())
            .unwrap_or_else(|| panic!("line {}: bad quoting", number + 1));
        let mut context = CommandContext::from_argv(&argv);
        context.cwd = Some("/home/dev/project".into());
        context.env = vec![("HOME".into(), "/home/dev".into())];
        let explanation = policy.judge(&context);
        counted += 1;
        if explanation.action != action(expected) {
            failures.push(format!(
                "line {}: `{}` expected {expected}, got {:?} (rule {:?}, why {:?})",
                number + 1,
                command.trim(),
                explanation.action,
                explanation.rule,
                explanation.why
            ));
        }
    }
    assert!(counted >= 200, "the corpus has only {counted} lines");
    assert!(
        failures.is_empty(),
        "{} of {counted} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
