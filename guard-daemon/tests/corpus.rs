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
    let mut rates = Rates::default();
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
            rates.count(action(expected), explanation.action);
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
    // The figures corpus/README.md reports.
    eprintln!("{rates}");
    assert!(
        failures.is_empty(),
        "{} of {total} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Detection and false-hold rates: destructive lines (expected hold or deny)
/// that are stopped, harmless lines (expected allow) that are held or denied.
#[derive(Default)]
struct Rates {
    destructive: usize,
    stopped: usize,
    harmless: usize,
    false_holds: usize,
}

impl Rates {
    fn count(&mut self, expected: Action, got: Action) {
        let stops = |a: Action| matches!(a, Action::Hold | Action::Deny);
        if stops(expected) {
            self.destructive += 1;
            self.stopped += usize::from(stops(got));
        } else if expected == Action::Allow {
            self.harmless += 1;
            self.false_holds += usize::from(stops(got));
        }
    }
}

impl std::fmt::Display for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        write!(
            f,
            "destructive lines: {} of {} held or denied ({:.1}%); harmless lines: {} of {} held or denied ({:.1}%)",
            self.stopped,
            self.destructive,
            pct(self.stopped, self.destructive),
            self.false_holds,
            self.harmless,
            pct(self.false_holds, self.harmless),
        )
    }
}
