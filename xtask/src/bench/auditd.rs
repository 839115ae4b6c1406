//! Peer: auditd with an execve audit rule, as security teams deploy it, on
//! the outside-session loop. The rule matches only the loop (by a login uid
//! the loop sets itself), so no one else's commands are logged; every process
//! of the machine pays audit's syscall filter while it runs, as it pays the
//! guard's tracepoints. Runs only where the machine's audit is unused
//! (disabled, no auditd, no rules) and puts that state back afterwards.
use std::{
    collections::HashMap,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::{
    exec::{Bench, Pair},
    peers,
};

/// The login uid the loop takes; the rule matches it and nothing else.
const BENCH_AUID: &str = "4242421";
const KEY: &str = "agent-guard-bench";
/// Debian's auditd.conf defaults (ENRICHED records, asynchronous flush every
/// 50 records), writing into the benchmark's directory.
const CONFIG: &str = "local_events = yes\nwrite_logs = yes\nlog_file = DIR/audit.log\nlog_group = root\nlog_format = ENRICHED\nflush = INCREMENTAL_ASYNC\nfreq = 50\nmax_log_file = 200\nmax_log_file_action = IGNORE\nspace_left = 75\nspace_left_action = IGNORE\nadmin_space_left = 50\nadmin_space_left_action = IGNORE\ndisk_full_action = IGNORE\ndisk_error_action = IGNORE\nplugin_dir = DIR/plugins.d\nq_depth = 2000\noverflow_action = IGNORE\n";
/// Debian's default audit.rules sets this backlog.
const BACKLOG: &str = "8192";

/// The outside-session loop without audit and with auditd and the rule, or why not.
pub(super) fn run(bench: &Bench) -> Result<Pair, String> {
    peers::ensure_installed_without_service("auditctl", "auditd").map_err(|err| err.to_string())?;
    let before = status().map_err(|err| err.to_string())?;
    let rules = auditctl(&["-l"]).map_err(|err| err.to_string())?;
    if before.get("enabled").map(String::as_str) != Some("0")
        || before.get("pid").map(String::as_str) != Some("0")
        || rules.trim() != "No rules"
    {
        return Err(format!(
            "the machine's audit is in use (enabled {:?}, auditd pid {:?}, rules {:?}): not changing it",
            before.get("enabled"),
            before.get("pid"),
            rules.trim()
        ));
    }
    let dir = bench.dir.join("auditd");
    fs::create_dir_all(dir.join("plugins.d")).map_err(|err| err.to_string())?;
    let config = CONFIG.replace("DIR", &dir.to_string_lossy());
    fs::write(dir.join("auditd.conf"), config).map_err(|err| err.to_string())?;
    peers::alternate("auditd", || {
        let without = bench.per_exec_us(as_bench_login(bench.tiny_loop(None, false)))?;
        let _ = fs::remove_file(dir.join("audit.log"));
        let with = {
            let _audit = Audit::start(&dir, &before)?;
            bench.per_exec_us(as_bench_login(bench.tiny_loop(None, false)))?
        };
        // The peer did the work: a record of the rule for every exec.
        let log = fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
        let records = log
            .lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(KEY))
            .count();
        if records < bench.execs as usize {
            bail!(
                "auditd logged {records} execs of the loop's {}",
                bench.execs
            );
        }
        Ok((without, with))
    })
}

/// The loop, under the login uid the rule matches.
fn as_bench_login((command, count): (Command, u32)) -> (Command, u32) {
    let mut wrapped = Command::new("sh");
    wrapped
        .args([
            "-c",
            &format!("echo {BENCH_AUID} > /proc/self/loginuid && exec \"$@\""),
            "sh",
        ])
        .arg(command.get_program())
        .args(command.get_args());
    (wrapped, count)
}

/// auditd running with the rule; dropping it removes the rule, stops auditd
/// and puts back the audit state found before.
struct Audit {
    auditd: Child,
    enabled: String,
    backlog: String,
}

impl Audit {
    fn start(dir: &Path, before: &HashMap<String, String>) -> anyhow::Result<Self> {
        let auditd = Command::new("auditd")
            .arg("-n")
            .arg("-c")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting auditd")?;
        let audit = Self {
            auditd,
            enabled: before.get("enabled").cloned().unwrap_or_else(|| "0".into()),
            backlog: before
                .get("backlog_limit")
                .cloned()
                .unwrap_or_else(|| "64".into()),
        };
        let pid = audit.auditd.id().to_string();
        let mut registered = false;
        for _ in 0..100 {
            if status()?.get("pid") == Some(&pid) {
                registered = true;
                break;
            }
            sleep(Duration::from_millis(50));
        }
        if !registered {
            bail!("auditd did not register with the kernel");
        }
        auditctl(&["-b", BACKLOG])?;
        auditctl(&rule("-a"))?;
        Ok(audit)
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let _ = auditctl(&rule("-d"));
        // Only the auditd this started.
        unsafe { libc::kill(self.auditd.id() as i32, libc::SIGTERM) };
        let _ = self.auditd.wait();
        let _ = auditctl(&["-e", &self.enabled]);
        let _ = auditctl(&["-b", &self.backlog]);
    }
}

/// The execve rule on the exit list, with `action` -a (add) or -d (delete).
fn rule(action: &str) -> Vec<String> {
    let auid = format!("auid={BENCH_AUID}");
    [
        action,
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "execve",
        "-F",
        &auid,
        "-k",
        KEY,
    ]
    .map(String::from)
    .to_vec()
}

/// `auditctl -s` as key and value.
fn status() -> anyhow::Result<HashMap<String, String>> {
    Ok(auditctl(&["-s"])?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn auditctl(args: &[impl AsRef<str>]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = Command::new("auditctl").args(&args).output()?;
    if !out.status.success() {
        bail!(
            "auditctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
