//! Copies and symlinks of watched `#!` scripts. The kernel executes a script
//! as its interpreter (argv `sh ./copy destroy`) and drops the script's file
//! before the exec gate runs, so neither its name nor its inode is seen
//! there. Instead every exec of a script runner (a shell, or an interpreter
//! a watched script names on its `#!` line) that is given a file stops in a
//! session, and guardd looks at the files it names, and at its stdin.
use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use super::ProgramFiles;
use crate::policy::{basename, wrappers};

/// How many arguments are looked at for the script a runner runs.
const OPERANDS_LOOKED_AT: usize = 16;

/// The shells, by every name the system's bin directories give their files
/// (`sh` is `dash` on Debian): any shell runs a shell script given by path.
pub(super) fn shell_names(dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = wrappers::SHELLS.iter().map(|s| s.to_string()).collect();
    for shell in wrappers::SHELLS {
        names.extend(installed_names(shell, dirs));
    }
    names
}

/// The interpreter named on the `#!` line of the file at `path` (through
/// `env` too), by its own name and its installed file's; none for a binary.
pub(super) fn interpreter_names(path: &Path, dirs: &[PathBuf]) -> Vec<String> {
    let Some(line) = first_line(path) else {
        return Vec::new();
    };
    let Some(line) = line.strip_prefix("#!") else {
        return Vec::new();
    };
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut add = |name: &str| {
        if !name.is_empty() && !is_multi_call(name) {
            names.push(name.to_string());
        }
    };
    if basename(interpreter) == "env" {
        // `#!/usr/bin/env -S python3 -u`, `#!/usr/bin/env VAR=1 node`.
        let Some(program) = words.find(|w| !w.starts_with('-') && !w.contains('=')) else {
            return names;
        };
        add(basename(program));
        for name in installed_names(basename(program), dirs) {
            add(&name);
        }
        return names;
    }
    add(basename(interpreter));
    if let Ok(real) = fs::canonicalize(interpreter) {
        add(&real.file_name().unwrap_or_default().to_string_lossy());
    }
    names
}

/// The names of the files `name` resolves to in `dirs` (`python3` is
/// `python3.12`): the kernel knows an exec by the executed file's name.
fn installed_names(name: &str, dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter()
        .filter_map(|dir| fs::canonicalize(dir.join(name)).ok())
        .filter_map(|real| Some(real.file_name()?.to_string_lossy().into_owned()))
        .filter(|real| !is_multi_call(real))
        .collect()
}

/// busybox and toybox are looked at by the applet they run, not as runners.
fn is_multi_call(name: &str) -> bool {
    wrappers::MULTI_CALL
        .iter()
        .any(|multi| name.starts_with(multi))
}

fn first_line(path: &Path) -> Option<String> {
    let mut head = [0u8; 256];
    let mut file = fs::File::open(path).ok()?;
    let len = file.read(&mut head).ok()?;
    let head = &head[..len];
    let line = head.split(|&b| b == b'\n').next()?;
    Some(String::from_utf8_lossy(line).into_owned())
}

impl ProgramFiles {
    /// Whether the executed file `exe` (its path) may run a watched script.
    pub fn is_script_runner(&self, exe: &str) -> bool {
        let name = basename(exe.strip_suffix(" (deleted)").unwrap_or(exe));
        self.runners.contains(name) || is_multi_call(name)
    }

    /// The watched program that the script runner `pid` (argv `argv`) runs,
    /// and its argv as that program's: the first file named in argv that is
    /// a watched program (a copy or symlink of a watched script: `sh ./copy
    /// destroy`, or the copy run by its `#!` line), else the file on its
    /// stdin (`sh -s destroy < copy`). A script piped in or read by the
    /// shell itself (`. ./copy`) is not seen here.
    pub fn script_run_by(&self, pid: u32, argv: &[Vec<u8>]) -> Option<(String, Vec<Vec<u8>>)> {
        for (at, arg) in argv.iter().enumerate().take(OPERANDS_LOOKED_AT) {
            // Options are looked at too: `sh -- -copy` runs a file named
            // `-copy`, and a word that names no file costs one failed open.
            if arg.is_empty() {
                continue;
            }
            if let Some(program) = self.identify(&as_seen_by(pid, arg)) {
                return Some((program, argv[at..].to_vec()));
            }
        }
        let program = self.identify(Path::new(&format!("/proc/{pid}/fd/0")))?;
        let operands = argv
            .iter()
            .skip(1)
            .skip_while(|arg| arg.starts_with(b"-"))
            .cloned();
        let judged = std::iter::once(program.clone().into_bytes())
            .chain(operands)
            .collect();
        Some((program, judged))
    }
}

/// `arg` as a path the way process `pid` would open it: relative to its
/// cwd, absolute under its root, and the names of its own descriptors
/// (`/dev/fd/N`, `/dev/stdin`, `/proc/self/...`, `/proc/thread-self/...`)
/// as its own, not guardd's. A symlink elsewhere that leads to one of those
/// is still resolved as guardd's (said in docs/policy.md).
fn as_seen_by(pid: u32, arg: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let path = Path::new(std::ffi::OsStr::from_bytes(arg));
    let own = Path::new("/proc").join(pid.to_string());
    for (name, fd) in [
        ("/dev/stdin", "0"),
        ("/dev/stdout", "1"),
        ("/dev/stderr", "2"),
    ] {
        if path == Path::new(name) {
            return own.join("fd").join(fd);
        }
    }
    if let Ok(fd) = path.strip_prefix("/dev/fd") {
        return own.join("fd").join(fd);
    }
    for me in ["/proc/self", "/proc/thread-self"] {
        if let Ok(rest) = path.strip_prefix(me) {
            return own.join(rest);
        }
    }
    match path.strip_prefix("/") {
        Ok(inside) => own.join("root").join(inside),
        Err(_) => own.join("cwd").join(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_interpreters_of_watched_scripts_and_the_shells_are_runners() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        script(&bin, "terraform", "#!/bin/sh\necho tf\n");
        script(&bin, "aws", "#!/usr/bin/env -S python3 -u\nprint()\n");
        script(&bin, "gcloud", "#! /opt/no/such/bash-5 -e\n");
        fs::write(bin.join("kubectl"), b"\x7fELF binary").unwrap();
        let files = ProgramFiles::find(
            &["terraform", "aws", "gcloud", "kubectl"],
            std::slice::from_ref(&bin),
        );
        let runners = files.script_runners();
        for name in ["sh", "bash", "dash", "python3", "bash-5"] {
            assert!(runners.iter().any(|r| r == name), "{name}: {runners:?}");
        }
        assert!(!runners.iter().any(|r| r == "env" || r == "kubectl"));
        assert!(files.is_script_runner("/usr/bin/python3"));
        assert!(files.is_script_runner("/bin/busybox"));
        assert!(!files.is_script_runner("/usr/bin/rm"));
    }

    #[test]
    fn a_copy_given_to_a_shell_or_on_stdin_is_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let watched = script(&bin, "terraform", "#!/bin/sh\necho tf\n");
        let files = ProgramFiles::find(&["terraform"], std::slice::from_ref(&bin));
        let copy = dir.path().join("copy");
        fs::copy(&watched, &copy).unwrap();
        let other = script(dir.path(), "other", "#!/bin/sh\necho tf!\n");
        let argv = |args: &[&Path]| -> Vec<Vec<u8>> {
            std::iter::once(b"sh".to_vec())
                .chain(
                    args.iter()
                        .map(|a| a.as_os_str().as_encoded_bytes().to_vec()),
                )
                .chain([b"destroy".to_vec()])
                .collect()
        };
        let me = std::process::id();
        let (program, judged) = files
            .script_run_by(me, &argv(&[Path::new("-e"), &other, &copy]))
            .unwrap();
        assert_eq!(program, "terraform");
        assert_eq!(judged, [copy.as_os_str().as_encoded_bytes(), b"destroy"]);
        // Relative to the process's cwd.
        let relative = copy.strip_prefix("/").unwrap();
        assert_eq!(
            files.script_run_by(me, &argv(&[Path::new("-e"), relative])),
            None,
            "from the process's cwd, not another"
        );
        assert_eq!(
            as_seen_by(7, b"x/y"),
            Path::new("/proc/7/cwd/x/y"),
            "relative"
        );
        assert_eq!(as_seen_by(7, b"/dev/fd/3"), Path::new("/proc/7/fd/3"));
        assert_eq!(as_seen_by(7, b"/proc/self/fd/3"), Path::new("/proc/7/fd/3"));
        assert_eq!(
            as_seen_by(7, b"/proc/thread-self/fd/3"),
            Path::new("/proc/7/fd/3")
        );
        assert_eq!(as_seen_by(7, b"/dev/stderr"), Path::new("/proc/7/fd/2"));
        assert_eq!(as_seen_by(7, b"/etc/x"), Path::new("/proc/7/root/etc/x"));
        // Stdin: a child whose fd 0 is the copy.
        let child = Reaped(
            std::process::Command::new("sleep")
                .arg("30")
                .stdin(fs::File::open(&copy).unwrap())
                .current_dir(dir.path())
                .spawn()
                .unwrap(),
        );
        let stdin_argv = [b"sh".to_vec(), b"-s".to_vec(), b"destroy".to_vec()];
        let (program, judged) = files.script_run_by(child.0.id(), &stdin_argv).unwrap();
        assert_eq!(program, "terraform");
        assert_eq!(judged, [b"terraform".to_vec(), b"destroy".to_vec()]);
        assert_eq!(files.script_run_by(me, &argv(&[&other])), None);
        // A copy named like an option, after `--`, from the process's cwd.
        fs::copy(&watched, dir.path().join("-tf")).unwrap();
        let dashed = [
            b"sh".to_vec(),
            b"--".to_vec(),
            b"-tf".to_vec(),
            b"destroy".to_vec(),
        ];
        let (program, judged) = files.script_run_by(child.0.id(), &dashed).unwrap();
        assert_eq!(program, "terraform");
        assert_eq!(
            judged,
            [b"-tf".to_vec(), b"destroy".to_vec()],
            "the operand, not stdin"
        );
    }

    /// Kills the child however the test ends.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
