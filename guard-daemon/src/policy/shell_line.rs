//! A shell line as the simple commands it would run, for commands that hand
//! one to a shell elsewhere (`ssh host 'a; b'`, `docker exec c sh -c ...`, an
//! aws `!` alias). Good enough to find each program and its words; not a shell.
use super::command::basename;

/// Shells whose `-c LINE` is opened.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ash", "ksh", "busybox"];

/// `sh -c 'a; b'` as its simple commands; any other argv as itself.
pub(super) fn unshell(argv: Vec<String>) -> Vec<Vec<String>> {
    match shell_line(&argv) {
        Some(line) => shell_commands(line, 1),
        None => vec![argv],
    }
}

/// The line of `sh -c LINE` (any shell).
fn shell_line(argv: &[String]) -> Option<&str> {
    let shell = argv.first().is_some_and(|p| SHELLS.contains(&basename(p)));
    let at = argv.iter().position(|a| a == "-c").filter(|_| shell)?;
    argv.get(at + 1).map(String::as_str)
}

/// The simple commands of a shell line: split on unquoted `;`, `&`, `|`,
/// parentheses and newlines, leading `VAR=value` words dropped, `sh -c`
/// lines opened (a few levels deep). Unbalanced quotes: split on blanks.
pub(super) fn shell_commands(line: &str, depth: usize) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for segment in split_unquoted(line) {
        let words = shlex::split(&segment)
            .unwrap_or_else(|| segment.split_whitespace().map(str::to_string).collect());
        let words: Vec<String> = words.into_iter().skip_while(|w| is_assignment(w)).collect();
        match shell_line(&words) {
            _ if words.is_empty() => {}
            Some(inner) if depth < 3 => commands.extend(shell_commands(inner, depth + 1)),
            _ => commands.push(words),
        }
    }
    commands
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn split_unquoted(line: &str) -> Vec<String> {
    let (mut parts, mut current) = (Vec::new(), String::new());
    let (mut single, mut double, mut escaped) = (false, false, false);
    for c in line.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && !single {
            escaped = true;
        } else if c == '\'' && !double {
            single = !single;
        } else if c == '"' && !single {
            double = !double;
        } else if !single && !double && matches!(c, ';' | '&' | '|' | '\n' | '(' | ')') {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    parts.push(current);
    parts.retain(|p| !p.trim().is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_into_its_simple_commands() {
        let line = r#"FOO=1 rm -rf "a;b" | sh -c 'kubectl delete ns x; echo "(ok)"' & (ls)"#;
        let commands: Vec<String> = shell_commands(line, 0)
            .into_iter()
            .map(|argv| argv.join(" "))
            .collect();
        assert_eq!(
            commands,
            ["rm -rf a;b", "kubectl delete ns x", "echo (ok)", "ls"]
        );
        // Unbalanced quotes still give the words.
        assert_eq!(shell_commands("rm -rf 'x", 0), [["rm", "-rf", "'x"]]);
        assert_eq!(
            unshell(vec!["/bin/bash".into(), "-c".into(), "rm -r y".into()]),
            [["rm", "-r", "y"]]
        );
    }
}
