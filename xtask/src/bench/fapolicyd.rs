//! Peer: fapolicyd, which holds every exec and open on the mounts it watches
//! in user space (fanotify permission events) until its rules decide, on the
//! outside-session loop. It runs in a mount namespace of its own with the
//! benchmark's configuration bound over /etc/fapolicyd: its marks cover that
//! namespace's mounts only, so it holds the loop, entered into the namespace,
//! and nothing else of the machine.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::{
    exec::{Bench, Pair},
    peers,
};
use crate::cmd;

/// The package's defaults, with the file trust backend (the loop's programs
/// are listed in it), root (its capability-keeping uid change fails in some
/// containers) and permissive (the rules run; an untrusted exec is logged,
/// not refused), and overlay watched too.
const CONFIG: &str = "permissive = 1\nnice_val = 14\nq_size = 640\nuid = root\ngid = root\ndo_stat_report = 0\ndetailed_report = 0\ndb_max_size = 50\nsubj_cache_size = 1549\nobj_cache_size = 8191\nwatch_fs = ext2,ext3,ext4,tmpfs,xfs,vfat,iso9660,btrfs,overlay\ntrust = file\nintegrity = none\nsyslog_format = rule,dec,perm,auid,pid,exe,:,path,ftype,trust\nrpm_sha256_only = 0\nallow_filesystem_mark = 0\n";
/// The upstream pattern: trusted programs run, anything else is denied, opens pass.
const RULES: &str =
    "allow perm=execute all : trust=1\ndeny_audit perm=execute all : all\nallow perm=open all : all\n";
/// Binds the configuration, gives fapolicyd empty state, then becomes it.
const START: &str = "mount --bind \"$1\" /etc/fapolicyd && mount -t tmpfs tmpfs /var/lib/fapolicyd && mount -t tmpfs tmpfs /run/fapolicyd && exec fapolicyd --debug-deny";

/// The outside-session loop without and with fapolicyd, or why not.
pub(super) fn run(bench: &Bench) -> Result<Pair, String> {
    peers::ensure_installed_without_service("fapolicyd", "fapolicyd")
        .map_err(|err| err.to_string())?;
    if Path::new("/run/fapolicyd/fapolicyd.fifo").exists() {
        return Err(
            "a fapolicyd runs on this machine: it would hold the loop without the peer too".into(),
        );
    }
    let conf = bench.dir.join("fapolicyd");
    configure(bench, &conf).map_err(|err| format!("configuring fapolicyd: {err:#}"))?;
    peers::alternate("fapolicyd", || {
        let without = bench.per_exec_us(bench.tiny_loop(None, false))?;
        let fapolicyd = Fapolicyd::start(&conf)?;
        // It judges the namespace's execs: an untrusted program is reported.
        let untrusted = bench.bin("untrusted");
        fapolicyd.entered(&Command::new(&untrusted)).status()?;
        if !fapolicyd.denied(&untrusted.to_string_lossy()) {
            bail!("fapolicyd did not judge an exec in its namespace");
        }
        let (command, count) = bench.tiny_loop(None, false);
        let with = bench.per_exec_us((fapolicyd.entered(&command), count))?;
        Ok((without, with))
    })
}

/// The configuration directory: settings, rules, and a trust list of the
/// loop's programs (the shell and the tiny program) by size and SHA-256.
fn configure(bench: &Bench, conf: &Path) -> anyhow::Result<()> {
    for dir in ["/etc/fapolicyd", "/var/lib/fapolicyd", "/run/fapolicyd"] {
        if !Path::new(dir).is_dir() {
            bail!("{dir} is missing");
        }
    }
    fs::create_dir_all(conf.join("rules.d"))?;
    fs::create_dir_all(conf.join("trust.d"))?;
    fs::write(conf.join("fapolicyd.conf"), CONFIG)?;
    fs::write(conf.join("compiled.rules"), RULES)?;
    fs::write(conf.join("rules.d/50-bench.rules"), RULES)?;
    let mut trust = String::new();
    for program in [Path::new("/bin/sh"), &bench.bin("tiny")] {
        let path = fs::canonicalize(program)?;
        let sum = cmd::output(Command::new("sha256sum").arg(&path)).context("sha256sum")?;
        let digest = sum.split_whitespace().next().context("sha256sum")?;
        let size = fs::metadata(&path)?.len();
        trust += &format!("{} {size} {digest}\n", path.display());
    }
    fs::write(conf.join("fapolicyd.trust"), trust)?;
    fs::write(conf.join("trust.d/fapolicyd.trust"), "")?;
    fs::copy(bench.bin("tiny"), bench.bin("untrusted"))?;
    Ok(())
}

/// fapolicyd in its own mount namespace; dropping it stops it.
struct Fapolicyd {
    child: Child,
    /// Its --debug-deny lines, read on a thread so the pipe never fills.
    denials: mpsc::Receiver<String>,
}

impl Fapolicyd {
    fn start(conf: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                START,
                "sh",
            ])
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting fapolicyd")?;
        let stderr = child.stderr.take().context("fapolicyd stderr")?;
        let denials = read_lines(stderr);
        let fapolicyd = Self { child, denials };
        loop {
            match fapolicyd.denials.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.starts_with("Starting to listen") => return Ok(fapolicyd),
                Ok(_) => continue,
                Err(_) => bail!("fapolicyd did not start listening"),
            }
        }
    }

    /// `command` run inside fapolicyd's mount namespace.
    fn entered(&self, command: &Command) -> Command {
        let mut entered = Command::new("nsenter");
        entered
            .args(["-t", &self.child.id().to_string(), "-m", "--"])
            .arg(command.get_program())
            .args(command.get_args());
        entered
    }

    /// Whether it reported denying an exec of `path` within a second.
    fn denied(&self, path: &str) -> bool {
        while let Ok(line) = self.denials.recv_timeout(Duration::from_secs(1)) {
            if line.contains("perm=execute") && line.contains(&format!("path={path} ")) {
                return true;
            }
        }
        false
    }
}

impl Drop for Fapolicyd {
    fn drop(&mut self) {
        // Only the fapolicyd this started; its marks go with it.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn read_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    received
}
