//! `mv SRC... DEST` into a place where a recursive delete is not held (a
//! temp or build directory, or below one): the move and a later `rm -rf` there together
//! delete SRC, and neither alone would be held. Such a move is judged as the
//! recursive delete of its sources (`rm -rf SRC`), so whatever the policy
//! holds for deleting SRC it holds for moving SRC there. Moves to places the
//! policy guards (or within them) are left as they are. `rename` is judged
//! the same way, from where `renames.rs` says each file lands.
use std::path::Path;

use super::{
    command::CommandContext,
    elsewhere::Elsewhere,
    renames::{self, Landing},
};

/// Whether judging `program` may look at where it moves things (needs the cwd).
pub fn reads(program: &str) -> bool {
    program == "mv" || renames::PROGRAMS.contains(&program)
}

/// Each file moved and the places it may land, and how to say so.
struct Moved {
    files: Vec<(String, Vec<Landing>)>,
    how: String,
}

fn moved(command: &CommandContext) -> Option<Moved> {
    let args = command.argv.get(1..).unwrap_or_default();
    if command.program != "mv" {
        let files = renames::landings(&command.program, args)?;
        let how = match files.iter().flat_map(|(_, places)| places).next() {
            Some(Landing::At(place)) => format!("a rename to {place}"),
            _ => "a rename guardd cannot follow (Perl code)".to_string(),
        };
        return Some(Moved { files, how });
    }
    let parsed = parse(args)?;
    // Where each source ends up: DEST itself, or inside it when it is a directory.
    let landing = |source: &str| {
        let name = Path::new(source.trim_end_matches('/')).file_name();
        let inside = name.map(|n| Path::new(&parsed.dest).join(n).display().to_string());
        std::iter::once(parsed.dest.clone())
            .chain(inside.filter(|_| !parsed.no_target_dir))
            .map(Landing::At)
            .collect()
    };
    Some(Moved {
        files: (parsed.sources.iter())
            .map(|source| (source.clone(), landing(source)))
            .collect(),
        how: format!("a move into {}", parsed.dest),
    })
}

/// What GNU and busybox `mv` take from argv: the sources and where they go.
#[derive(Debug, PartialEq)]
struct Move {
    sources: Vec<String>,
    /// The target directory (`-t`, or the last operand).
    dest: String,
    /// `-T`: DEST is the new name itself, never a directory to move into.
    no_target_dir: bool,
}

fn parse(args: &[String]) -> Option<Move> {
    let (mut operands, mut target, mut no_target_dir) = (Vec::new(), None, false);
    let mut iter = args.iter();
    let mut options_done = false;
    while let Some(arg) = iter.next() {
        if options_done || arg == "-" || !arg.starts_with('-') {
            operands.push(arg.clone());
        } else if arg == "--" {
            options_done = true;
        } else if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            // Unique prefixes, as getopt_long takes them.
            let is = |full: &str, shortest: usize| name.len() >= shortest && full.starts_with(name);
            if is("target-directory", 3) {
                target = Some(inline.or_else(|| iter.next().cloned())?);
            } else if is("no-target-directory", 3) {
                no_target_dir = true;
            } else if is("suffix", 2) && inline.is_none() {
                iter.next()?;
            }
        } else {
            // A cluster of short options: -t and -S take the rest or the next word.
            let letters = &arg[1..];
            for (at, letter) in letters.char_indices() {
                match letter {
                    'T' => no_target_dir = true,
                    't' | 'S' => {
                        let rest = &letters[at + 1..];
                        let value = match rest.is_empty() {
                            true => iter.next()?.clone(),
                            false => rest.to_string(),
                        };
                        if letter == 't' {
                            target = Some(value);
                        }
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    let dest = match target {
        Some(dir) => dir,
        None => operands.pop()?,
    };
    (!operands.is_empty()).then_some(Move {
        sources: operands,
        dest,
        no_target_dir,
    })
}

/// The recursive delete a move amounts to when it puts its sources where
/// `deletable` (is `rm -rf PATH` allowed?) says anything may go.
pub fn deletes(
    command: &CommandContext,
    deletable: impl Fn(&CommandContext) -> bool,
) -> Option<Elsewhere> {
    if !reads(&command.program) {
        return None;
    }
    let moved = moved(command)?;
    let rm =
        |path: &str| CommandContext::from_argv(&["rm", "-rf", "--", path]).with_context_of(command);
    // Free: a recursive delete of the place, or of a directory above it
    // (`node_modules/old` goes with `rm -rf node_modules`), is not held.
    let free = |place: &Landing| match place {
        Landing::Anywhere => true,
        Landing::At(place) => (Path::new(place).ancestors())
            .filter(|dir| !dir.as_os_str().is_empty())
            .any(|dir| deletable(&rm(&dir.display().to_string()))),
    };
    let moved_free: Vec<&String> = (moved.files.iter())
        .filter(|(_, places)| places.iter().any(free))
        .map(|(file, _)| file)
        .collect();
    if moved_free.is_empty() {
        return None;
    }
    // A file moved away is an `rm -f`; a directory, or what cannot be looked
    // at, an `rm -rf`.
    let recursive = (moved_free.iter()).any(|file| !is_plain_file(command, file));
    let flags = if recursive { "-rf" } else { "-f" };
    let mut argv = vec!["rm".to_string(), flags.to_string(), "--".to_string()];
    argv.extend(moved_free.into_iter().cloned());
    Some(Elsewhere {
        via: format!("{}, where a recursive delete is not held", moved.how),
        command: CommandContext::from_argv(&argv).with_context_of(command),
    })
}

/// Whether `source` is a file other than a directory, as the process sees it.
fn is_plain_file(command: &CommandContext, source: &str) -> bool {
    let Some(cwd) = command.cwd.as_deref() else {
        return false;
    };
    let inside = command.inside_root(&Path::new(cwd).join(source));
    std::fs::symlink_metadata(inside).is_ok_and(|meta| !meta.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Option<Move> {
        parse(&shlex::split(line).unwrap())
    }

    #[test]
    fn sources_and_target_as_mv_reads_them() {
        let one = |sources: &[&str], dest: &str, no_target_dir| {
            Some(Move {
                sources: sources.iter().map(|s| s.to_string()).collect(),
                dest: dest.to_string(),
                no_target_dir,
            })
        };
        assert_eq!(parsed("a b /tmp"), one(&["a", "b"], "/tmp", false));
        assert_eq!(parsed("-t /tmp a b"), one(&["a", "b"], "/tmp", false));
        assert_eq!(parsed("-vft/tmp a"), one(&["a"], "/tmp", false));
        assert_eq!(parsed("--target=/tmp a"), one(&["a"], "/tmp", false));
        assert_eq!(
            parsed("--target-directory /tmp a"),
            one(&["a"], "/tmp", false)
        );
        assert_eq!(parsed("-T -S .bak a /tmp/x"), one(&["a"], "/tmp/x", true));
        assert_eq!(parsed("-- -a /tmp"), one(&["-a"], "/tmp", false));
        assert_eq!(parsed("a"), None);
        assert_eq!(parsed("-t"), None);
    }
}
