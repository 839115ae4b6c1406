//! AWS CLI aliases: `aws nuke` runs whatever `~/.aws/cli/alias` says `nuke`
//! is (`nuke = ec2 terminate-instances --instance-ids`), and a `!` alias
//! runs a shell line. An aliased command is judged as what it runs.
use std::path::{Path, PathBuf};

use super::{command::CommandContext, elsewhere, shell_line, spec::Spec};

/// Environment variables that move the alias file.
pub const ENV: &[&str] = &["AWS_CONFIG_FILE"];

/// Whether judging `program` reads its alias file.
pub fn reads(program: &str) -> bool {
    program == "aws"
}

/// What an aliased `aws` command runs, and where the alias was found.
pub fn expand(command: &CommandContext, spec: &Spec) -> Vec<elsewhere::Elsewhere> {
    if command.program != "aws" {
        return Vec::new();
    }
    let parsed = spec.parse(command.argv.get(1..).unwrap_or_default());
    let Some(first) = parsed.words.first() else {
        return Vec::new();
    };
    for file in alias_files(command) {
        let Some(text) = read(command, &file) else {
            continue;
        };
        let sections = parse(&text);
        // `[toplevel] NAME = ...` replaces the service; `[command SERVICE]
        // NAME = ...` replaces the operation after it.
        let found = lookup(&sections, "toplevel", first)
            .map(|value| (first, value))
            .or_else(|| {
                let second = parsed.words.get(1)?;
                lookup(&sections, &format!("command {first}"), second).map(|value| (second, value))
            });
        let Some((name, value)) = found else {
            continue;
        };
        let via = format!("the aws alias {name} ({})", file.display());
        if let Some(line) = value.strip_prefix('!') {
            return shell_line::shell_commands(line, 1)
                .into_iter()
                .map(|argv| elsewhere::Elsewhere {
                    via: via.clone(),
                    command: CommandContext::from_argv(&argv).with_context_of(command),
                })
                .collect();
        }
        let Some(words) = shlex::split(value) else {
            continue;
        };
        let at = position_of(&command.argv, name);
        let mut argv = command.argv.clone();
        argv.splice(at..=at, words);
        return vec![elsewhere::Elsewhere {
            via,
            command: CommandContext {
                argv,
                ..command.clone()
            },
        }];
    }
    Vec::new()
}

/// Where the aws CLI keeps aliases: `~/.aws/cli/alias`, and beside a
/// config file moved by AWS_CONFIG_FILE (both are read: the stricter wins).
fn alias_files(command: &CommandContext) -> Vec<PathBuf> {
    let home = command.env_var("HOME").filter(|h| !h.is_empty());
    let cwd = Path::new(command.cwd.as_deref().unwrap_or("/"));
    let mut files: Vec<PathBuf> = home
        .map(|home| Path::new(home).join(".aws/cli/alias"))
        .into_iter()
        .collect();
    if let Some(config) = command.env_var("AWS_CONFIG_FILE").filter(|c| !c.is_empty()) {
        let config = match (config.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => Path::new(home).join(rest),
            _ => cwd.join(config),
        };
        files.extend(config.parent().map(|dir| dir.join("cli/alias")));
    }
    files.dedup();
    files
}

fn read(command: &CommandContext, path: &Path) -> Option<String> {
    super::files::read_config(&command.inside_root(path))
}

/// The index in argv of the alias word (the first plain word so named).
fn position_of(argv: &[String], name: &str) -> usize {
    argv.iter()
        .enumerate()
        .skip(1)
        .find(|(_, arg)| *arg == name)
        .map_or(1, |(at, _)| at)
}

/// `[section]` -> `key = value` lines; an indented line continues the value.
fn parse(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.push((name, Vec::new()));
            continue;
        }
        let Some((_, entries)) = sections.last_mut() else {
            continue;
        };
        let continues = line.starts_with([' ', '\t']);
        match (continues, entries.last_mut(), trimmed.split_once('=')) {
            (true, Some((_, value)), _) => {
                value.push('\n');
                value.push_str(trimmed);
            }
            (_, _, Some((key, value))) => {
                entries.push((key.trim().to_string(), value.trim().to_string()))
            }
            _ => {}
        }
    }
    sections
}

fn lookup<'a>(
    sections: &'a [(String, Vec<(String, String)>)],
    section: &str,
    key: &str,
) -> Option<&'a str> {
    sections
        .iter()
        .filter(|(name, _)| name == section)
        .flat_map(|(_, entries)| entries)
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_files_are_read_with_continued_values() {
        let sections = parse(
            "[toplevel]\nwhoami = sts get-caller-identity\nclean =\n  !f() {\n    aws s3 rb s3://x --force\n  }; f\n\n[command ec2]\nkill = terminate-instances\n",
        );
        assert_eq!(
            lookup(&sections, "toplevel", "whoami"),
            Some("sts get-caller-identity")
        );
        assert_eq!(
            lookup(&sections, "toplevel", "clean"),
            Some("!f() {\naws s3 rb s3://x --force\n}; f")
        );
        assert_eq!(
            lookup(&sections, "command ec2", "kill"),
            Some("terminate-instances")
        );
        assert_eq!(lookup(&sections, "toplevel", "kill"), None);
    }
}
