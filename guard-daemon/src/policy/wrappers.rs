//! Programs that run another program named in their argv inside the same
//! process, with no exec of it the kernel could stop: multi-call binaries
//! (`busybox rm -rf /`) and the dynamic loader run as a program
//! (`/lib64/ld-linux-x86-64.so.2 /bin/rm -rf /`). Such a command is judged
//! as the program it runs. git's libexec form (`git-push`) is git's
//! subcommand. Commands run by the wrapped program (a busybox shell's NOFORK
//! applets) are not execs at all: the syscall gate sees those.
use super::command::{basename, CommandContext};

/// Multi-call binaries: they pick the applet by argv[0]'s name, or by argv[1]
/// when argv[0] starts with their own name.
pub const MULTI_CALL: &[&str] = &["busybox", "toybox"];

/// Loader names the kernel's watch list carries (every exec of them in a
/// session stops for a decision).
const LOADERS: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux-armhf.so.3",
    "ld-linux.so.2",
    "ld-musl-x86_64.so.1",
    "ld-musl-aarch64.so.1",
    "ld.so",
];

/// glibc ld.so options that take a value (`--argv0 NAME`, `--preload=LIST`).
const LOADER_VALUE_OPTIONS: &[&str] = &[
    "--library-path",
    "--inhibit-rpath",
    "--audit",
    "--preload",
    "--argv0",
    "--glibc-hwcaps-prepend",
    "--glibc-hwcaps-mask",
];

/// Shells that run a script named as their first operand (`sh ./terraform
/// destroy`): the script is judged as the program it is named (and, by
/// guardd, as the program it is when it is a copy of a watched script).
pub const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash"];

/// The program whose subcommands also run as `PROGRAM-SUBCOMMAND`.
pub const DASHED: &str = "git";

/// Nesting allowed before giving up (`ld.so busybox busybox rm`).
const MAX_DEPTH: usize = 4;

/// Names of every wrapper, for the kernel's watch list.
pub fn names() -> impl Iterator<Item = &'static str> {
    MULTI_CALL.iter().chain(LOADERS).copied()
}

/// Whether `program` (or the executed file) is a wrapper.
pub fn is_wrapper(program: &str, exe: Option<&str>) -> bool {
    let is = |name: &str| is_multi_call(name) || is_loader(name);
    is(program) || exe.map(basename).is_some_and(is) || subcommand_of_dashed(program).is_some()
}

fn subcommand_of_dashed(program: &str) -> Option<&str> {
    program
        .strip_prefix(DASHED)
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|subcommand| !subcommand.is_empty())
}

/// busybox acts as itself under any name it starts with (`busybox.static`).
fn is_multi_call(name: &str) -> bool {
    MULTI_CALL.iter().any(|multi| name.starts_with(multi))
}

fn is_loader(name: &str) -> bool {
    LOADERS.contains(&name) || name.starts_with("ld-linux") || name.starts_with("ld-musl")
}

/// The command a wrapper runs, judged in its place; None for other commands.
pub fn unwrap(command: &CommandContext) -> Option<CommandContext> {
    let mut inner: Option<CommandContext> = None;
    for _ in 0..MAX_DEPTH {
        let current = inner.as_ref().unwrap_or(command);
        match run_by(current) {
            Some(next) => inner = Some(next),
            None => break,
        }
    }
    inner
}

fn run_by(command: &CommandContext) -> Option<CommandContext> {
    let exe_name = command.exe.as_deref().map(basename);
    let named = |test: &dyn Fn(&str) -> bool| test(&command.program) || exe_name.is_some_and(test);
    if named(&is_multi_call) {
        return applet(command);
    }
    if named(&is_loader) {
        return loaded(command);
    }
    // By its own name only: a `#!` script's exe is its shell.
    if SHELLS.contains(&command.program.as_str()) {
        return script(command);
    }
    undashed(command)
}

/// `sh [OPTIONS] SCRIPT ARGS` runs SCRIPT with ARGS; with `-c` or `-s` the
/// shell runs no script file (what it runs is execed and judged itself).
fn script(command: &CommandContext) -> Option<CommandContext> {
    let mut args = command.argv.iter().enumerate().skip(1);
    let at = loop {
        let (at, arg) = args.next()?;
        if arg == "--" {
            break args.next()?.0;
        }
        if arg.starts_with("--") {
            if matches!(arg.as_str(), "--rcfile" | "--init-file") {
                args.next();
            }
            continue;
        }
        match arg.strip_prefix('-').or_else(|| arg.strip_prefix('+')) {
            Some(letters) if letters.contains(['c', 's']) => return None,
            Some(letters) => {
                if letters.contains(['o', 'O']) {
                    args.next();
                }
            }
            None => break at,
        }
    };
    Some(CommandContext {
        program: basename(&command.argv[at]).to_string(),
        exe: None,
        argv: command.argv[at..].to_vec(),
        ..command.clone()
    })
}

/// `git-push ARGS` (run from git's exec path) is `git push ARGS`.
fn undashed(command: &CommandContext) -> Option<CommandContext> {
    let subcommand = subcommand_of_dashed(&command.program)?;
    let argv = [DASHED, subcommand]
        .into_iter()
        .map(str::to_string)
        .chain(command.argv.iter().skip(1).cloned())
        .collect();
    Some(CommandContext {
        program: DASHED.into(),
        exe: None,
        argv,
        ..command.clone()
    })
}

/// `busybox rm -rf x` runs `rm -rf x`; run as `rm` (a link, or ld.so's
/// `--argv0 rm`), busybox is `rm`.
fn applet(command: &CommandContext) -> Option<CommandContext> {
    // A login shell's `-sh` is `sh`.
    let argv0 = basename(command.argv.first()?);
    let argv0 = argv0.strip_prefix('-').unwrap_or(argv0);
    if !is_multi_call(argv0) {
        return (command.program != argv0).then(|| CommandContext {
            program: argv0.to_string(),
            exe: None,
            ..command.clone()
        });
    }
    let name = command.argv.get(1)?;
    // `busybox --list`, `--install`, `--help`: busybox's own options.
    if name.starts_with('-') {
        return None;
    }
    Some(CommandContext {
        program: basename(name).to_string(),
        exe: None,
        argv: command.argv[1..].to_vec(),
        ..command.clone()
    })
}

/// `ld.so [OPTIONS] PROGRAM ARGS` runs PROGRAM with ARGS (argv[0] from `--argv0`).
fn loaded(command: &CommandContext) -> Option<CommandContext> {
    let mut args = command.argv.iter().skip(1);
    let mut argv0 = None;
    let program = loop {
        let arg = args.next()?;
        if !arg.starts_with("--") {
            break arg;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        if LOADER_VALUE_OPTIONS.contains(&name) {
            let value = inline.or_else(|| args.next().cloned());
            if name == "--argv0" {
                argv0 = value;
            }
        } else if matches!(name, "--list" | "--verify" | "--help" | "--version")
            || name.starts_with("--list-")
        {
            // Inspects the program without running it.
            return None;
        }
    };
    let first = argv0.unwrap_or_else(|| program.clone());
    Some(CommandContext {
        program: basename(program).to_string(),
        exe: Some(program.clone()),
        argv: std::iter::once(first).chain(args.cloned()).collect(),
        ..command.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwrapped(argv: &[&str]) -> Option<(String, Option<String>, Vec<String>)> {
        unwrap(&CommandContext::from_argv(argv)).map(|c| (c.program, c.exe, c.argv))
    }

    #[test]
    fn multi_call_binaries_run_their_applet() {
        let (program, _, argv) = unwrapped(&["busybox", "rm", "-rf", "/srv"]).unwrap();
        assert_eq!(
            (program.as_str(), argv),
            ("rm", vec!["rm".into(), "-rf".into(), "/srv".into()])
        );
        let (program, ..) = unwrapped(&["/bin/toybox", "/bin/rm", "-r", "x"]).unwrap();
        assert_eq!(program, "rm");
        assert_eq!(unwrapped(&["busybox", "--list"]), None);
        let (program, ..) = unwrapped(&["/bin/busybox.static", "rm", "-r", "x"]).unwrap();
        assert_eq!(program, "rm");
        assert_eq!(unwrapped(&["busybox"]), None);
        assert_eq!(unwrapped(&["rm", "-rf", "x"]), None);
    }

    #[test]
    fn a_shell_runs_the_script_it_is_given() {
        let (program, _, argv) = unwrapped(&["sh", "./terraform", "destroy"]).unwrap();
        assert_eq!(
            (program.as_str(), argv),
            ("terraform", vec!["./terraform".into(), "destroy".into()])
        );
        let (program, ..) =
            unwrapped(&["bash", "-e", "-o", "pipefail", "--", "bin/kubectl", "x"]).unwrap();
        assert_eq!(program, "kubectl");
        assert_eq!(unwrapped(&["sh", "-c", "terraform destroy"]), None);
        assert_eq!(unwrapped(&["bash", "-ec", "x"]), None);
        assert_eq!(unwrapped(&["sh", "-s"]), None);
        assert_eq!(unwrapped(&["sh"]), None);
    }

    #[test]
    fn the_loader_runs_the_program_it_names() {
        let (program, exe, argv) =
            unwrapped(&["/lib64/ld-linux-x86-64.so.2", "/bin/rm", "-rf", "/srv"]).unwrap();
        assert_eq!(program, "rm");
        assert_eq!(exe.as_deref(), Some("/bin/rm"));
        assert_eq!(argv, ["/bin/rm", "-rf", "/srv"]);
        let (program, _, argv) = unwrapped(&[
            "ld-linux-x86-64.so.2",
            "--library-path",
            "/opt/lib",
            "--preload=/x.so",
            "/usr/bin/git",
            "push",
        ])
        .unwrap();
        assert_eq!((program.as_str(), argv.len()), ("git", 2));
        assert_eq!(unwrapped(&["ld.so", "--list", "/bin/rm"]), None);
        assert_eq!(unwrapped(&["ld.so", "--verify", "/bin/rm"]), None);
    }

    #[test]
    fn nested_wrappers_and_argv0_name_the_applet() {
        // ld.so --argv0 rm busybox: busybox sees argv[0] "rm" and is rm.
        let (program, _, argv) =
            unwrapped(&["ld.so", "--argv0", "rm", "/bin/busybox", "-rf", "/"]).unwrap();
        assert_eq!(
            (program.as_str(), argv),
            ("rm", vec!["rm".into(), "-rf".into(), "/".into()])
        );
        let (program, ..) =
            unwrapped(&["ld.so", "/bin/busybox", "busybox", "rm", "-rf", "/"]).unwrap();
        assert_eq!(program, "rm");
        assert!(is_wrapper("busybox", None));
        assert!(is_wrapper(
            "x",
            Some("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        ));
        assert!(!is_wrapper("rm", Some("/usr/bin/rm")));
        let (program, _, argv) = unwrapped(&["/usr/lib/git-core/git-push", "-f"]).unwrap();
        assert_eq!(
            (program.as_str(), argv),
            ("git", vec!["git".into(), "push".into(), "-f".into()])
        );
        assert!(
            is_wrapper("git-push", None) && !is_wrapper("git", None) && !is_wrapper("git-", None)
        );
    }
}
