//! Commands that run elsewhere: the remote shell of `ssh`/`mosh`, a container
//! (`docker`/`podman`/`nerdctl` `exec` and `run`), a pod (`kubectl exec`,
//! `debug`, `run`). What runs them (sshd, containerd, the kubelet) is outside
//! the session, so their argv is the only chance to judge them. Each simple
//! command is judged as a command with an unknown cwd (`/`, so no `{cwd}`
//! exemption applies) and no HOME; a container's bind mounts are mapped back
//! to the host paths they expose.
use super::{
    command::{basename, CommandContext},
    shell_line::{shell_commands, unshell},
};

/// A command found inside another one's argv, and how it gets run.
pub struct Elsewhere {
    pub via: String,
    pub command: CommandContext,
}

const SSH_VALUE_LETTERS: &str = "BbcDEeFIiJLlmOoPpQRSWw";
const CONTAINER_PROGRAMS: &[&str] = &[
    "docker",
    "podman",
    "nerdctl",
    "docker-compose",
    "podman-compose",
];
const KUBECTL_PROGRAMS: &[&str] = &["kubectl", "oc", "kubecolor"];
/// The verbs that run a command in a container, and in a pod.
const CONTAINER_VERBS: &[&str] = &["exec", "run", "create"];
const KUBECTL_VERBS: &[&str] = &["exec", "debug", "run", "rsh"];
/// Options of `docker`/`podman` themselves that take a value.
const CONTAINER_GLOBAL_VALUES: &[&str] = &[
    "-H",
    "--host",
    "--context",
    "-c",
    "--config",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--url",
    "--connection",
    "--root",
    "--runroot",
    "--namespace",
    "-n",
];
/// `docker compose`'s own options that take a value.
const COMPOSE_VALUES: &[&str] = &[
    "-f",
    "--file",
    "-p",
    "--project-name",
    "--profile",
    "--env-file",
    "--project-directory",
    "--ansi",
    "--progress",
    "--parallel",
];
/// kubectl's options before the verb that take a value.
const KUBECTL_GLOBAL_VALUES: &[&str] = &[
    "-n",
    "--namespace",
    "--context",
    "--kubeconfig",
    "--cluster",
    "--user",
    "-s",
    "--server",
    "--token",
    "--as",
    "--as-group",
    "--request-timeout",
    "--cache-dir",
];
/// Options of `run`/`exec`/`create` that take a value.
const CONTAINER_RUN_VALUES: &[&str] = &[
    "-a",
    "--attach",
    "--add-host",
    "--annotation",
    "--blkio-weight",
    "--cap-add",
    "--cap-drop",
    "--cgroup-parent",
    "--cgroupns",
    "--cidfile",
    "--cpu-period",
    "--cpu-quota",
    "--cpu-shares",
    "-c",
    "--cpus",
    "--cpuset-cpus",
    "--cpuset-mems",
    "--device",
    "--device-cgroup-rule",
    "--dns",
    "--dns-option",
    "--dns-search",
    "--domainname",
    "-e",
    "--env",
    "--entrypoint",
    "--env-file",
    "--expose",
    "--gpus",
    "--group-add",
    "--health-cmd",
    "--health-interval",
    "--health-retries",
    "--health-timeout",
    "--health-start-period",
    "-h",
    "--hostname",
    "--ip",
    "--ip6",
    "--ipc",
    "--isolation",
    "-l",
    "--label",
    "--label-file",
    "--link",
    "--log-driver",
    "--log-opt",
    "--mac-address",
    "-m",
    "--memory",
    "--memory-reservation",
    "--memory-swap",
    "--mount",
    "--name",
    "--network",
    "--net",
    "--network-alias",
    "--oom-score-adj",
    "--pid",
    "--pids-limit",
    "--platform",
    "-p",
    "--publish",
    "--pull",
    "--restart",
    "--runtime",
    "--security-opt",
    "--shm-size",
    "--stop-signal",
    "--stop-timeout",
    "--storage-opt",
    "--sysctl",
    "--tmpfs",
    "--ulimit",
    "-u",
    "--user",
    "--userns",
    "--uts",
    "-v",
    "--volume",
    "--volume-driver",
    "--volumes-from",
    "-w",
    "--workdir",
    "--detach-keys",
    "--pod",
];

/// The commands `command` runs elsewhere (none for most commands).
pub fn commands(command: &CommandContext) -> Vec<Elsewhere> {
    let program = command.program.as_str();
    let args = command.argv.get(1..).unwrap_or_default();
    if matches!(program, "ssh" | "mosh") {
        return remote_shell(args, program);
    }
    if CONTAINER_PROGRAMS.contains(&program) {
        return in_container(args, program);
    }
    if KUBECTL_PROGRAMS.contains(&program) {
        return in_pod(args, program);
    }
    Vec::new()
}

/// `ssh [options] HOST COMMAND...`: the words after HOST are one shell line.
fn remote_shell(args: &[String], program: &str) -> Vec<Elsewhere> {
    let mut rest = args.iter();
    let mut remote_command = None;
    let host = loop {
        let Some(arg) = rest.next() else {
            return Vec::new();
        };
        if arg == "--" {
            match rest.next() {
                Some(host) => break host,
                None => return Vec::new(),
            }
        }
        if !arg.starts_with('-') || arg == "-" {
            break arg;
        }
        if arg.starts_with("--") {
            // mosh's long options (--ssh=..., --port=...) carry their value inline.
            continue;
        }
        // A cluster ends at a letter taking a value: -p 22, -p22, -vp 22.
        let letters = &arg[1..];
        if let Some(at) = letters.find(|c| SSH_VALUE_LETTERS.contains(c)) {
            let value = match &letters[at + 1..] {
                "" => rest.next().map(String::as_str),
                inline => Some(inline),
            };
            if letters[at..].starts_with('o') {
                // `-o RemoteCommand=LINE` is the command, as if given after HOST.
                if let Some(line) = value.and_then(remote_command_option) {
                    remote_command = Some(line.to_string());
                }
            }
        }
    };
    let words: Vec<&str> = rest
        .skip_while(|w| *w == "--")
        .map(String::as_str)
        .chain(remote_command.as_deref())
        .collect();
    if words.is_empty() {
        return Vec::new();
    }
    let line = words.join(" ");
    shell_commands(&line, 0)
        .into_iter()
        .map(|argv| Elsewhere {
            via: format!("{program} on {host}"),
            command: remote(argv, None),
        })
        .collect()
}

/// The line of an ssh `-o RemoteCommand=LINE` (or `RemoteCommand LINE`; the
/// key in any case).
fn remote_command_option(option: &str) -> Option<&str> {
    let split = option.find(['=', ' '])?;
    let (key, line) = (
        &option[..split],
        option[split + 1..].trim_start_matches(['=', ' ']),
    );
    key.eq_ignore_ascii_case("RemoteCommand").then_some(line)
}

/// `docker [global] (exec|run|create|container exec|...) [options] TARGET CMD...`,
/// and the same through `docker compose`/`docker-compose` (TARGET a service).
fn in_container(args: &[String], program: &str) -> Vec<Elsewhere> {
    let mut at = 0;
    while let Some(arg) = args.get(at) {
        if !arg.starts_with('-') {
            break;
        }
        at += if CONTAINER_GLOBAL_VALUES.contains(&arg.as_str()) {
            2
        } else {
            1
        };
    }
    let mut compose = program.ends_with("-compose");
    match args.get(at).map(String::as_str) {
        Some("container") => at += 1,
        Some("compose") => {
            compose = true;
            at += 1;
        }
        _ => {}
    }
    if compose {
        while let Some(arg) = args.get(at).filter(|a| a.starts_with('-')) {
            at += if COMPOSE_VALUES.contains(&arg.as_str()) {
                2
            } else {
                1
            };
        }
    }
    let verb = match args.get(at).map(String::as_str) {
        Some(verb) if CONTAINER_VERBS.contains(&verb) => verb,
        _ => return Vec::new(),
    };
    at += 1;
    let mut mounts: Vec<(String, String)> = Vec::new();
    let mut workdir = None;
    let mut entrypoint = None;
    while let Some(arg) = args.get(at) {
        if arg == "--" {
            at += 1;
            break;
        }
        if !arg.starts_with('-') {
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if arg.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        // A short cluster (-it, -itv SRC:DST) takes a value if its last letter does.
        let last = if name.starts_with("--") {
            name.to_string()
        } else {
            format!("-{}", name.chars().last().unwrap_or('-'))
        };
        let value = if inline.is_some() {
            inline
        } else if CONTAINER_RUN_VALUES.contains(&last.as_str()) {
            at += 1;
            args.get(at).cloned()
        } else {
            None
        };
        if let Some(value) = value {
            match last.as_str() {
                "-v" | "--volume" => mounts.extend(volume(&value)),
                "--mount" => mounts.extend(mount(&value)),
                "-w" | "--workdir" => workdir = Some(value),
                "--entrypoint" => entrypoint = Some(value),
                _ => {}
            }
        }
        at += 1;
    }
    let target = args.get(at).cloned().unwrap_or_default();
    let mut argv: Vec<String> = entrypoint.into_iter().collect();
    argv.extend(args.iter().skip(at + 1).cloned());
    if argv.is_empty() {
        return Vec::new();
    }
    let host = |path: &str| host_path(path, &mounts);
    let cwd = workdir.map(|w| host(&w));
    unshell(argv)
        .into_iter()
        .map(|argv| Elsewhere {
            via: format!("{program} {verb} {target}"),
            command: remote(argv.iter().map(|w| host(w)).collect(), cwd.clone()),
        })
        .collect()
}

/// `kubectl [global] exec|debug|run ... -- CMD...`.
fn in_pod(args: &[String], program: &str) -> Vec<Elsewhere> {
    let mut words = args.iter();
    let verb = loop {
        match words.next() {
            None => return Vec::new(),
            Some(arg) if KUBECTL_GLOBAL_VALUES.contains(&arg.as_str()) => {
                words.next();
            }
            Some(arg) if arg.starts_with('-') => {}
            Some(verb) => break verb,
        }
    };
    if !KUBECTL_VERBS.contains(&verb.as_str()) {
        return Vec::new();
    }
    let Some(dash) = args.iter().position(|a| a == "--") else {
        return Vec::new();
    };
    unshell(args[dash + 1..].to_vec())
        .into_iter()
        .map(|argv| Elsewhere {
            via: format!("{program} {verb}"),
            command: remote(argv, None),
        })
        .collect()
}

/// Programs that run commands elsewhere: the kernel must stop them so
/// guardd can read their argv.
pub fn programs() -> impl Iterator<Item = &'static str> {
    ["ssh", "mosh"]
        .iter()
        .chain(CONTAINER_PROGRAMS)
        .chain(KUBECTL_PROGRAMS)
        .copied()
}

/// The words one of which a command of `program` that runs another
/// elsewhere has as an argument (none for other programs), for the kernel's
/// prefilter; Err when any argument may be that command (a remote shell).
pub fn verbs(program: &str) -> Result<&'static [&'static str], &'static str> {
    match program {
        "ssh" | "mosh" => Err("runs its arguments as a shell line on another host"),
        _ if CONTAINER_PROGRAMS.contains(&program) => Ok(CONTAINER_VERBS),
        _ if KUBECTL_PROGRAMS.contains(&program) => Ok(KUBECTL_VERBS),
        _ => Ok(&[]),
    }
}

/// A command with an unknown working directory unless given, and no HOME.
/// Run remotely under `sudo`/`doas`, it is judged as what they run: the
/// escalation is the remote host's, not this session's.
fn remote(argv: Vec<String>, cwd: Option<String>) -> CommandContext {
    let argv = without_privilege(argv);
    let mut command = CommandContext::from_argv(&argv);
    command.cwd = Some(cwd.unwrap_or_else(|| "/".into()));
    command
}

/// `sudo [-u USER ...] CMD` as CMD.
fn without_privilege(argv: Vec<String>) -> Vec<String> {
    if !argv
        .first()
        .is_some_and(|p| matches!(basename(p), "sudo" | "doas"))
    {
        return argv;
    }
    let mut at = 1;
    while let Some(arg) = argv.get(at) {
        if arg == "--" {
            at += 1;
            break;
        }
        if !arg.starts_with('-') {
            break;
        }
        let takes_value = matches!(
            arg.as_str(),
            "-u" | "-g"
                | "-C"
                | "-D"
                | "-h"
                | "-p"
                | "-r"
                | "-t"
                | "-T"
                | "--user"
                | "--group"
                | "--chdir"
                | "--host"
                | "--prompt"
                | "--role"
                | "--type"
        );
        at += if takes_value { 2 } else { 1 };
    }
    match argv.get(at..) {
        Some(rest) if !rest.is_empty() => rest.to_vec(),
        _ => argv,
    }
}

/// `-v SRC:DST[:opts]` (a named volume is no host path).
fn volume(spec: &str) -> Option<(String, String)> {
    let mut parts = spec.split(':');
    let (source, target) = (parts.next()?, parts.next()?);
    source
        .starts_with('/')
        .then(|| (target.to_string(), source.to_string()))
}

/// `--mount type=bind,source=SRC,target=DST`.
fn mount(spec: &str) -> Option<(String, String)> {
    let field = |names: &[&str]| {
        spec.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            names.contains(&k).then(|| v.to_string())
        })
    };
    let source = field(&["source", "src"])?;
    let target = field(&["target", "destination", "dst"])?;
    source.starts_with('/').then_some((target, source))
}

/// A container path under a bind mount's target, as the host path it is.
fn host_path(path: &str, mounts: &[(String, String)]) -> String {
    for (target, source) in mounts {
        let target = target.trim_end_matches('/');
        if let Some(rest) = path.strip_prefix(target) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{}{rest}", source.trim_end_matches('/'));
            }
        }
    }
    path.to_string()
}

#[cfg(test)]
mod tests;
