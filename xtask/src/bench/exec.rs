//! The guard's cost on real execs, alternating runs without and with the
//! guard (A B A B ...; the outside loop without it brackets each round's
//! loops with it) so the machine's drift cancels out:
//! 1. fork+exec+wait of a tiny static program outside any session;
//! 2. the same loop inside a session (program not watched);
//! 3. a watched program the policy allows: added latency per exec, and
//!    guardd's own stop-to-decision figures;
//! 4. approve-to-running latency of a held process;
//! 5. the syscall gate: 10,000 unlinks of unprotected files in a
//!    `guardctl run` session (each one a seccomp notification to guardd),
//!    and in a detected session where it only reports (each one a
//!    tracepoint event to guardd; where the BPF LSM runs, its hooks instead);
//!    and, in a VM whose kernel runs the BPF LSM, in a session it gates
//!    (`super::lsm_gate`);
//! 6. guardd's resident memory (idle and after the loops), its CPU share
//!    during them, and the memory its BPF maps lock;
//! 7. real workloads (`super::workload`): make -j2 and git, in a session
//!    of the default policy against outside without the guard.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::Write as _,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use guard_protocol::{
    encode_line, GateStats, Request, RequestEnvelope, Response, StatusView, PROTOCOL_VERSION,
};

use super::{
    results::{KernelCost, Measured, PairSummary, ProgramCost, Results, Summary},
    workload::{Session, Workload},
};
use crate::{build, cmd};

pub(super) const ROUNDS: usize = 5;
/// Rounds of `--git-status`: its ratio is a few percent, the noise here too.
const GIT_STATUS_ROUNDS: usize = 30;
/// Git-status rounds in each round of the full bench's workloads.
const GIT_STATUS_PER_ROUND: usize = 3;
/// The bench's policy; its own bin dir is a program directory, so `tiny` is
/// an unwatched program there (a root-owned file elsewhere would stop).
fn policy(bin: &Path) -> String {
    format!(
        "{POLICY_HEAD}program_dirs = [\"{}\"]\n{POLICY_RULES}",
        bin.display()
    )
}
const POLICY_HEAD: &str = "version = 1\nbase = \"none\"\n[agents]\nprograms = [\"agentbench\"]\n[defaults]\nsyscall_gate = true\n";
/// `tfbench plan` stops (the argv prefilter sees `plan`) and is allowed
/// (no `--destroy`); `tfbench status` runs without a stop.
const POLICY_RULES: &str = "[[rule]]\nid = \"bench\"\nprograms = [\"tfbench\"]\nsubcommand = [\"destroy\"]\naction = \"hold\"\n[[rule]]\nid = \"bench-plan\"\nprograms = [\"tfbench\"]\nsubcommand = [\"plan\"]\nflags = [\"--destroy\"]\naction = \"hold\"\n[[protect]]\nid = \"bench\"\npaths = [\"/nonexistent/agent-guard-bench\"]\n[[api]]\nid = \"bench\"\nhosts = [\"127.0.0.1\"]\nmethods = [\"DELETE\"]\naction = \"hold\"\n";
/// Unlinks per gate run.
const UNLINKS: u32 = 10_000;
const LOOP: &str = "i=0; while [ $i -lt $1 ]; do \"$0\" $2; i=$((i+1)); done";

pub(super) struct Bench {
    pub dir: PathBuf,
    pub release: PathBuf,
    pub execs: u32,
}

pub fn run() -> anyhow::Result<()> {
    let execs = std::env::var("AGENT_GUARD_BENCH_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let bench = Bench::prepare(execs)?;

    let (mut outside, mut session, mut watched, mut unlinks, mut reported) = (
        Pair::default(),
        Pair::default(),
        Pair::default(),
        Pair::default(),
        Pair::default(),
    );
    let (mut prefiltered, mut notify_floor) = (Pair::default(), Pair::default());
    let mut gate = GateStats::default();
    let (mut kernel_ns, mut kernel_programs) = (Vec::new(), Default::default());
    let (mut session_kernel_ns, mut session_kernel_programs) = (Vec::new(), Default::default());
    let (mut prefilter_kernel_ns, mut prefilter_kernel_programs) = (Vec::new(), Default::default());
    let (mut rss_idle, mut rss_load, mut cpu_load, mut map_memory) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        eprintln!("xtask: bench round {}/{ROUNDS}", round + 1);
        watched
            .without
            .push(bench.per_exec_us(bench.tiny_loop(None, true))?);
        unlinks.without.push(bench.unlink_loop(Unlinks::Plain)?);
        notify_floor
            .with
            .push(bench.unlink_loop(Unlinks::NotifyFloor)?);
        // The loops without the guard just before and just after it bracket
        // the loops with it, so that drift during the round cancels.
        let before = bench.per_exec_us(bench.tiny_loop(None, false))?;
        let guard = Guardd::start(&bench)?;
        sleep(Duration::from_secs(1));
        let idle = Usage::of(guard.child.id())?;
        rss_idle.push(idle.rss_kib as f64 / 1024.0);
        map_memory.push(idle.map_memlock_bytes as f64 / 1024.0 / 1024.0);
        let loops_started = Instant::now();
        // The exec loops first, while guardd has nothing else to do.
        outside
            .with
            .push(bench.per_exec_us(bench.tiny_loop(None, false))?);
        session
            .with
            .push(bench.per_exec_us(bench.tiny_loop(Some(&guard), false))?);
        watched
            .with
            .push(bench.per_exec_us(bench.tiny_loop(Some(&guard), true))?);
        gate = guard.status()?.stats;
        prefiltered
            .with
            .push(bench.per_exec_us(bench.watched_loop(Some(&guard), "status"))?);
        let per_exec = |exec_loop| super::kernel_cost::per_exec(&bench, &guard, exec_loop);
        let cost: KernelCost = per_exec(bench.tiny_loop(None, false))?;
        kernel_ns.push(cost.ns_per_iteration);
        kernel_programs = cost.programs;
        let cost = per_exec(bench.tiny_loop(Some(&guard), false))?;
        session_kernel_ns.push(cost.ns_per_iteration);
        session_kernel_programs = cost.programs;
        let cost = per_exec(bench.watched_loop(Some(&guard), "status"))?;
        prefilter_kernel_ns.push(cost.ns_per_iteration);
        prefilter_kernel_programs = cost.programs;
        unlinks
            .with
            .push(bench.unlink_loop(Unlinks::Launched(&guard))?);
        reported.with.push(bench.unlink_loop(Unlinks::Detected)?);
        let load = Usage::of(guard.child.id())?;
        rss_load.push(load.rss_kib as f64 / 1024.0);
        cpu_load.push(
            100.0 * (load.cpu_seconds - idle.cpu_seconds) / loops_started.elapsed().as_secs_f64(),
        );
        guard.stop(&bench)?;
        let after = bench.per_exec_us(bench.tiny_loop(None, false))?;
        outside.without.push((before + after) / 2.0);
    }
    session.without = outside.without.clone();
    prefiltered.without = watched.without.clone();
    reported.without = unlinks.without.clone();
    notify_floor.without = unlinks.without.clone();
    let (make, git, git_status) = workloads(&bench)?;
    let bpftrace = Measured::of(super::peers::bpftrace(&bench), Pair::summary);
    let auditd = Measured::of(super::auditd::run(&bench), Pair::summary);
    let fapolicyd = Measured::of(super::fapolicyd::run(&bench), Pair::summary);
    let floor = Measured::of(
        super::peers::stop_continue_floor(&bench),
        Pair::added_summary,
    );
    let approve = approve_to_running(&bench)?;
    let load = super::burst::run(&bench)?;
    let api = super::api::run(&bench)?;
    let go_api = super::go_api::run(&bench)?;
    let lsm_policy = format!("{POLICY_HEAD}{POLICY_RULES}");
    let lsm_gate = Measured::of(super::lsm_gate::run(&lsm_policy), Pair::summary);
    let fleet = super::fleet::run(&bench, &policy(&bench.dir.join("bin")))?;

    let results = Results {
        machine: machine(),
        commit: cmd::output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
            .unwrap_or_default()
            .trim()
            .to_string(),
        execs_per_run: bench.execs,
        rounds: ROUNDS,
        outside_session: outside.summary(),
        outside_session_bpf_ns_per_exec: summary(&kernel_ns),
        outside_session_bpf_programs_last_round: kernel_programs,
        in_session_bpf_ns_per_exec: summary(&session_kernel_ns),
        in_session_bpf_programs_last_round: session_kernel_programs,
        prefiltered_bpf_ns_per_exec: Some(summary(&prefilter_kernel_ns)),
        prefiltered_bpf_programs_last_round: prefilter_kernel_programs,
        in_session_unwatched: session.summary(),
        watched_allowed_added_us: watched.added_summary(),
        watched_prefiltered: Some(prefiltered.summary()),
        guardd_stop_to_decision_us: gate.decision_latency,
        guardd_stop_to_event_us: gate.event_latency,
        approve_to_running_us: summary(&approve),
        guardd_rss_idle_mib: summary(&rss_idle),
        guardd_rss_under_load_mib: summary(&rss_load),
        guardd_cpu_percent_under_load: summary(&cpu_load),
        bpf_map_memlock_mib: summary(&map_memory),
        unlinks_per_run: UNLINKS,
        gated_unlink: unlinks.summary(),
        seccomp_notify_floor_unlink: Some(notify_floor.summary()),
        detected_session_unlink: reported.summary(),
        lsm_gate_unlink: Some(lsm_gate),
        workload_make_j2: make.summary(),
        workload_git: git.summary(),
        workload_git_status: Some(git_status.session.summary()),
        workload_git_status_seccomp_floor: Some(git_status.seccomp_floor.summary()),
        workload_git_status_detected: Some(git_status.detected.summary()),
        peer_bpftrace_exec_tracepoint: bpftrace,
        peer_auditd_execve_rule: auditd,
        peer_fapolicyd: fapolicyd,
        stop_continue_floor_added_us: floor,
        exec_load: load,
        api_client_gate: Some(api),
        api_client_gate_go: Some(go_api),
        fleet: Some(fleet),
    };
    fs::write(
        bench.dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    write_report(&results)
}

/// BENCHMARKS.md again from the last run's results (after a change to its wording).
pub fn rewrite_report() -> anyhow::Result<()> {
    write_report(&last_results()?)
}

fn last_results() -> anyhow::Result<Results> {
    let path = cmd::workspace_root().join("target/bench/results.json");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("{}: run `cargo xtask bench` first", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// `--fleet`: the fleet relay's figures measured again into the last results.
pub fn fleet_only() -> anyhow::Result<()> {
    let mut results = last_results()?;
    let bench = Bench::prepare(results.execs_per_run)?;
    results.fleet = Some(super::fleet::run(&bench, &policy(&bench.dir.join("bin")))?);
    fs::write(
        bench.dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    write_report(&results)
}

/// `--lsm-gate`: the VM's figure measured again into the last results.
pub fn lsm_gate_only() -> anyhow::Result<()> {
    let mut results = last_results()?;
    let policy = format!("{POLICY_HEAD}{POLICY_RULES}");
    let pair = super::lsm_gate::run(&policy).map_err(anyhow::Error::msg)?;
    results.lsm_gate_unlink = Some(Measured::Done(pair.summary()));
    fs::write(
        cmd::workspace_root().join("target/bench/results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    write_report(&results)
}

fn write_report(results: &Results) -> anyhow::Result<()> {
    fs::write(cmd::workspace_root().join("BENCHMARKS.md"), report(results))?;
    println!("{}", report(results));
    Ok(())
}

impl Bench {
    /// Builds guardd and the bench's programs, and writes its policy.
    fn prepare(execs: u32) -> anyhow::Result<Self> {
        if !cmd::is_root() {
            bail!("the exec benchmarks load eBPF programs: run `cargo xtask bench` as root");
        }
        build::release_build()?;
        let root = cmd::workspace_root();
        let dir = root.join("target/bench");
        fs::create_dir_all(dir.join("bin"))?;
        cmd::run(
            Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(dir.join("bin/tiny"))
                .arg(root.join("xtask/bench/tiny.c")),
        )?;
        fs::copy(dir.join("bin/tiny"), dir.join("bin/tfbench"))?;
        for program in ["unlinks", "cont", "spawner", "notify_floor", "allow_filter"] {
            cmd::run(
                Command::new("gcc")
                    .args(["-O2", "-o"])
                    .arg(dir.join("bin").join(program))
                    .arg(root.join(format!("xtask/bench/{program}.c"))),
            )?;
        }
        // The unlink loop under an agent's name: a session the kernel detects.
        fs::copy(dir.join("bin/unlinks"), dir.join("bin/agentbench"))?;
        fs::write(dir.join("policy.toml"), policy(&dir.join("bin")))?;
        Ok(Self {
            dir,
            release: root.join("target/release"),
            execs,
        })
    }

    /// Runs in a `guardctl run` session of `guard`.
    fn session<'a>(&self, guard: &'a Guardd) -> Session<'a> {
        Session {
            guardctl: self.release.join("guardctl"),
            socket: &guard.socket,
        }
    }

    pub(super) fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// `sh -c LOOP` running the tiny program `execs` times (watched: `tfbench plan`), in a session or not.
    pub(super) fn tiny_loop(&self, session: Option<&Guardd>, watched: bool) -> (Command, u32) {
        match watched {
            true => self.watched_loop(session, "plan"),
            false => self.loop_of(session, self.dir.join("bin/tiny"), "", self.execs),
        }
    }

    /// `tfbench ARG` execs/4 times: `plan` stops and is allowed, `status`
    /// runs without a stop.
    pub(super) fn watched_loop(&self, session: Option<&Guardd>, arg: &str) -> (Command, u32) {
        self.loop_of(session, self.dir.join("bin/tfbench"), arg, self.execs / 4)
    }

    fn loop_of(
        &self,
        session: Option<&Guardd>,
        program: PathBuf,
        arg: &str,
        count: u32,
    ) -> (Command, u32) {
        let mut command = match session {
            Some(guard) => {
                let mut c = Command::new(self.release.join("guardctl"));
                c.arg("--socket")
                    .arg(&guard.socket)
                    .args(["run", "--", "sh", "-c", LOOP]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", LOOP]);
                c
            }
        };
        command.arg(program).arg(count.to_string()).arg(arg);
        (command, count)
    }

    /// Microseconds per unlink of UNLINKS fresh files, in a session or not.
    fn unlink_loop(&self, how: Unlinks<'_>) -> anyhow::Result<f64> {
        let files = self.dir.join("unlinks");
        let _ = fs::remove_dir_all(&files);
        fs::create_dir_all(&files)?;
        for i in 0..UNLINKS {
            fs::write(files.join(format!("f{i}")), "")?;
        }
        let program = self.dir.join("bin/unlinks");
        let mut command = match how {
            Unlinks::Launched(guard) => {
                let mut c = Command::new(self.release.join("guardctl"));
                c.arg("--socket")
                    .arg(&guard.socket)
                    .arg("run")
                    .arg("--")
                    .arg(program);
                c
            }
            Unlinks::Detected => Command::new(self.dir.join("bin/agentbench")),
            Unlinks::NotifyFloor => {
                let mut c = Command::new(self.dir.join("bin/notify_floor"));
                c.arg(program);
                c
            }
            Unlinks::Plain => Command::new(program),
        };
        let output = command.arg(&files).arg(UNLINKS.to_string()).output()?;
        if !output.status.success() {
            bail!(
                "unlink loop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().parse()?)
    }

    pub(super) fn per_exec_us(&self, (mut command, count): (Command, u32)) -> anyhow::Result<f64> {
        let start = Instant::now();
        let status = command.stdin(Stdio::null()).status()?;
        let elapsed = start.elapsed();
        if !status.success() {
            bail!("benchmark loop failed: {status}");
        }
        Ok(elapsed.as_secs_f64() * 1e6 / f64::from(count))
    }
}

/// guardd's resident memory, CPU time, and the memory its BPF maps lock.
pub(super) struct Usage {
    rss_kib: u64,
    pub cpu_seconds: f64,
    map_memlock_bytes: u64,
}

impl Usage {
    pub(super) fn of(pid: u32) -> anyhow::Result<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..]
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of proc_pid_stat(5).
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // Every map fd guardd holds says in fdinfo how much memory it locks.
        let mut map_memlock_bytes = 0;
        for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
            let info = fs::read_to_string(entry?.path()).unwrap_or_default();
            if info.contains("map_type:") {
                map_memlock_bytes += info
                    .lines()
                    .find_map(|l| l.strip_prefix("memlock:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(Self {
            rss_kib,
            cpu_seconds: ticks as f64 / hz,
            map_memlock_bytes,
        })
    }
}

pub(super) struct Guardd {
    pub child: Child,
    pub socket: PathBuf,
}

impl Guardd {
    fn command(bench: &Bench) -> Command {
        let mut command = Command::new(bench.release.join("guardd"));
        command
            .arg("--config")
            .arg(bench.dir.join("policy.toml"))
            .arg("--socket")
            .arg(bench.dir.join("guardd.sock"))
            .arg("--audit-log")
            .arg(bench.dir.join("audit.jsonl"))
            .arg("--state-dir")
            .arg(bench.dir.join("state"))
            .arg("--pin-dir")
            .arg("/sys/fs/bpf/agent-guard-bench");
        command
    }

    pub(super) fn start(bench: &Bench) -> anyhow::Result<Self> {
        Self::start_with(bench, Self::command(bench))
    }

    /// With the policy file `config` instead of the bench's.
    pub(super) fn start_config(bench: &Bench, config: &Path) -> anyhow::Result<Self> {
        Self::start_on(bench, Some(config))
    }

    /// On the embedded default policy, as a user would run it.
    fn start_default(bench: &Bench) -> anyhow::Result<Self> {
        Self::start_on(bench, None)
    }

    /// The bench's flags with `config` as the policy (None: the embedded one).
    fn start_on(bench: &Bench, config: Option<&Path>) -> anyhow::Result<Self> {
        let mut command = Command::new(bench.release.join("guardd"));
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        // The bench's own `--config FILE` comes first.
        command.args(Self::command(bench).get_args().skip(2));
        Self::start_with(bench, command)
    }

    fn start_with(bench: &Bench, mut command: Command) -> anyhow::Result<Self> {
        let child = command.stderr(Stdio::null()).spawn()?;
        let guard = Self {
            child,
            socket: bench.dir.join("guardd.sock"),
        };
        for _ in 0..200 {
            if guard.status().is_ok() {
                return Ok(guard);
            }
            sleep(Duration::from_millis(25));
        }
        bail!("guardd did not come up")
    }

    pub(super) fn request(&self, request: Request) -> anyhow::Result<Response> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.write_all(&encode_line(&RequestEnvelope {
            version: PROTOCOL_VERSION,
            request,
        }))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut line)?;
        Ok(serde_json::from_str(&line)?)
    }

    pub(super) fn status(&self) -> anyhow::Result<StatusView> {
        status_of(self.request(Request::Status)?)
    }

    pub(super) fn stop(mut self, bench: &Bench) -> anyhow::Result<()> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        let status = Self::command(bench)
            .arg("--teardown")
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("guardd --teardown failed");
        }
        Ok(())
    }
}

/// The view in guardd's answer to a `status` request.
fn status_of(response: Response) -> anyhow::Result<StatusView> {
    match response {
        Response::Status(view) => Ok(*view),
        other => bail!("status: guardd answered {other:?}"),
    }
}

/// make -j2 and git, alternating outside without the guard and in a session
/// of a guardd on the default policy; microseconds per run.
fn workloads(bench: &Bench) -> anyhow::Result<(Pair, Pair, GitStatus)> {
    let mut workload = Workload::prepare(&bench.dir)?;
    let (mut make, mut git) = (Pair::default(), Pair::default());
    let mut status = GitStatus::default();
    for round in 0..ROUNDS {
        eprintln!("xtask: bench workloads {}/{ROUNDS}", round + 1);
        make.without.push(workload.make(None)? * 1e6);
        git.without.push(workload.git(None)? * 1e6);
        let guard = Guardd::start_default(bench)?;
        let with_make = workload.make(Some(&bench.session(&guard)));
        let with_git = workload.git(Some(&bench.session(&guard)));
        guard.stop(bench)?;
        make.with.push(with_make? * 1e6);
        git.with.push(with_git? * 1e6);
        // A loop of git status moves by several percent from one to the next here.
        for _ in 0..GIT_STATUS_PER_ROUND {
            status.round(bench, &workload)?;
        }
    }
    Ok((make, git, status))
}

/// 200 x `git status` in a session, in a session guardd detected (an
/// agent's name, no seccomp filter), and under a bare allow-all seccomp
/// filter (the floor of any session that carries a filter here), each
/// against the runs without any of them just before and just after. guardd
/// runs only for the sessions' loops: its report-only tracepoints, slowing
/// every call of the machine, stay attached for seconds after a session.
#[derive(Default)]
struct GitStatus {
    session: Pair,
    detected: Pair,
    seccomp_floor: Pair,
}

impl GitStatus {
    fn round(&mut self, bench: &Bench, workload: &Workload) -> anyhow::Result<()> {
        let before = workload.git_status(None)? * 1e6;
        let floor = workload.git_status_under(&bench.bin("allow_filter"))? * 1e6;
        let agent = agent_shell(bench)?;
        let guard = Guardd::start_default(bench)?;
        // guardd attaches its API probes in the background after start.
        sleep(Duration::from_secs(2));
        let with = workload.git_status(Some(&bench.session(&guard)));
        let detected = workload.git_status_by(&agent);
        guard.stop(bench)?;
        let after = workload.git_status(None)? * 1e6;
        for pair in [
            &mut self.session,
            &mut self.detected,
            &mut self.seccomp_floor,
        ] {
            pair.without.push((before + after) / 2.0);
        }
        self.session.with.push(with? * 1e6);
        self.detected.with.push(detected? * 1e6);
        self.seccomp_floor.with.push(floor);
        Ok(())
    }
}

/// `/bin/sh` under the name of an agent of the default policy, so that
/// guardd starts a session for what it runs.
fn agent_shell(bench: &Bench) -> anyhow::Result<PathBuf> {
    let dir = bench.dir.join("agent");
    let shell = dir.join("claude");
    if !shell.exists() {
        fs::create_dir_all(&dir)?;
        std::os::unix::fs::symlink("/bin/sh", &shell)?;
    }
    Ok(shell)
}

/// `--git-status`: the git-status rows alone, over `GIT_STATUS_ROUNDS`
/// rounds (they move by several percent between rounds here), into the last results.
pub fn git_status_only() -> anyhow::Result<()> {
    let mut results = last_results()?;
    let bench = Bench::prepare(results.execs_per_run)?;
    let workload = Workload::prepare(&bench.dir)?;
    let mut status = GitStatus::default();
    for round in 0..GIT_STATUS_ROUNDS {
        eprintln!("xtask: bench git status {}/{GIT_STATUS_ROUNDS}", round + 1);
        status.round(&bench, &workload)?;
    }
    results.workload_git_status = Some(status.session.summary());
    results.workload_git_status_seccomp_floor = Some(status.seccomp_floor.summary());
    results.workload_git_status_detected = Some(status.detected.summary());
    fs::write(
        bench.dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    write_report(&results)
}

/// Holds `tfbench destroy` 20 times; from the approve request to the
/// program's first instruction (it writes CLOCK_MONOTONIC first thing).
fn approve_to_running(bench: &Bench) -> anyhow::Result<Vec<f64>> {
    let guard = Guardd::start(bench)?;
    let mut samples = Vec::new();
    for i in 0..20 {
        let stamp = bench.dir.join(format!("started-{i}"));
        let _ = fs::remove_file(&stamp);
        let mut run = Command::new(bench.release.join("guardctl"))
            .arg("--socket")
            .arg(&guard.socket)
            .args(["run", "--"])
            .arg(bench.dir.join("bin/tfbench"))
            .arg("destroy")
            .arg(&stamp)
            .stderr(Stdio::null())
            .spawn()?;
        let id = loop {
            let holds = match guard.request(Request::Pending)? {
                Response::Pending { holds } => holds,
                other => bail!("pending: guardd answered {other:?}"),
            };
            if let Some(hold) = holds.into_iter().next() {
                break hold.id;
            }
            sleep(Duration::from_millis(5));
        };
        let before = monotonic_ns();
        guard.request(Request::Approve { id })?;
        run.wait()?;
        let started: u64 = fs::read_to_string(&stamp)?
            .trim()
            .parse()
            .context("stamp")?;
        samples.push(started.saturating_sub(before) as f64 / 1000.0);
    }
    guard.stop(bench)?;
    Ok(samples)
}

pub(super) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// How the unlink loop runs.
enum Unlinks<'a> {
    Plain,
    /// `guardctl run` with the seccomp gate.
    Launched(&'a Guardd),
    /// As an agent program the kernel detects (report only without the BPF LSM).
    Detected,
    /// Under a seccomp listener that continues every call at once, reading
    /// nothing: the floor of the seccomp gate.
    NotifyFloor,
}

#[derive(Default)]
pub(super) struct Pair {
    pub without: Vec<f64>,
    pub with: Vec<f64>,
}

impl Pair {
    pub(super) fn summary(&self) -> PairSummary {
        let ratios: Vec<f64> = self
            .with
            .iter()
            .zip(&self.without)
            .map(|(w, o)| w / o)
            .collect();
        PairSummary {
            no_guard_us: summary(&self.without),
            guard_us: summary(&self.with),
            ratio: summary(&ratios),
        }
    }

    /// Microseconds added per run, with against without.
    fn added(&self) -> Vec<f64> {
        self.with
            .iter()
            .zip(&self.without)
            .map(|(w, o)| w - o)
            .collect()
    }

    pub(super) fn added_summary(&self) -> Summary {
        summary(&self.added())
    }
}

pub(super) fn summary(values: &[f64]) -> Summary {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Summary {
        median: at(0.5),
        p99: at(0.99),
        min: at(0.0),
        max: at(1.0),
        n: sorted.len(),
    }
}

/// A summary in microseconds, as milliseconds.
fn ms(summary: &Summary) -> Summary {
    Summary {
        median: summary.median / 1000.0,
        p99: summary.p99 / 1000.0,
        min: summary.min / 1000.0,
        max: summary.max / 1000.0,
        n: summary.n,
    }
}

fn machine() -> String {
    let kernel = cmd::output(Command::new("uname").arg("-r")).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("Linux {}, {cpus} CPUs", kernel.trim())
}

fn report(r: &Results) -> String {
    let row = |name: &str, goal: &str, s: &Summary| {
        format!(
            "| {name} | {goal} | {:.3} | {:.3} – {:.3} |\n",
            s.median, s.min, s.max
        )
    };
    let mut out =
        String::from("# Benchmarks\n\nWritten by `cargo xtask bench`; do not edit by hand.\n\n");
    let _ = writeln!(
        out,
        "Machine: {}. Commit: {}. Date: {}.",
        r.machine,
        r.commit,
        cmd::output(Command::new("date").args(["-u", "+%Y-%m-%d"]))
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(out, "Each figure is over {} alternating rounds (no guard, guard) of {} execs of a tiny static program; in each round the exec loops with the guard are bracketed by a loop without it just before guardd starts and one just after it stops, and the mean of the two is that round's figure without the guard.\n", r.rounds, r.execs_per_run);
    out.push_str("| figure | goal | median | min – max |\n|---|---|---|---|\n");
    out += &row(
        "outside sessions: ratio guard / no guard",
        "<= 1.01",
        &r.outside_session.ratio,
    );
    out += &row(
        "outside sessions, no guard: us per exec",
        "",
        &r.outside_session.no_guard_us,
    );
    out += &row(
        "outside sessions: the guard's BPF programs, ns per fork+exec+exit (kernel run-time statistics, their own clock reads included)",
        "",
        &r.outside_session_bpf_ns_per_exec,
    );
    let _ = writeln!(
        out,
        "| outside sessions: 1 + the BPF programs' time / an exec without the guard (medians) | <= 1.01 | {:.4} | |",
        1.0 + bpf_share(r, &r.outside_session_bpf_ns_per_exec)
    );
    out += &row(
        "in a session, unwatched: ratio guard / no guard",
        "<= 1.03",
        &r.in_session_unwatched.ratio,
    );
    out += &row(
        "in a session: the guard's BPF programs, ns per fork+exec+exit (the session's seccomp filter not included)",
        "",
        &r.in_session_bpf_ns_per_exec,
    );
    let _ = writeln!(
        out,
        "| in a session: 1 + the BPF programs' time / an exec without the guard (medians) | <= 1.03 | {:.4} | |",
        1.0 + bpf_share(r, &r.in_session_bpf_ns_per_exec)
    );
    if let Some(prefiltered) = &r.prefiltered_bpf_ns_per_exec {
        out += &row(
            "in a session, a watched program the argv prefilter lets run: the BPF programs, ns per fork+exec+exit (argv read)",
            "",
            prefiltered,
        );
        let _ = writeln!(
            out,
            "| the same, as a share of an exec without the guard (medians) | < 2% | {:.2}% | |",
            100.0 * bpf_share(r, prefiltered)
        );
    }
    out += &row(
        "watched, stopped and allowed (argv names a word a rule needs): added us per exec",
        "",
        &r.watched_allowed_added_us,
    );
    if let Some(prefiltered) = &r.watched_prefiltered {
        out += &row(
            "watched, no argument a rule names (the kernel's argv prefilter lets it run): in a session / outside",
            "",
            &prefiltered.ratio,
        );
    }
    match &r.stop_continue_floor_added_us {
        Measured::Done(floor) => {
            out += &row(
                "floor: the same stop and continue with no policy work (bpftrace stops, a C reader continues): added us per exec",
                "",
                floor,
            )
        }
        Measured::Skipped { skipped: why } => out += &format!("| floor: stop and continue with no policy work | | skipped: {why} | |\n"),
    }
    out += &row(
        "approve to running: us",
        "<= 5000",
        &r.approve_to_running_us,
    );
    out += &row(
        "syscall gate: 10,000 unlinks of unprotected files in a session, ratio guard / no guard",
        "",
        &r.gated_unlink.ratio,
    );
    out += &row(
        "syscall gate: us per unlink, gated",
        "",
        &r.gated_unlink.guard_us,
    );
    out += &row(
        "syscall gate: us per unlink, no guard",
        "",
        &r.gated_unlink.no_guard_us,
    );
    if let Some(floor) = &r.seccomp_notify_floor_unlink {
        out += &row(
            "floor: the same unlinks under a seccomp listener that continues each at once, reading nothing: ratio / no guard",
            "",
            &floor.ratio,
        );
        out += &row(
            "floor: us per unlink under that listener",
            "",
            &floor.guard_us,
        );
    }
    out += &row(
        "detected session, 10,000 unlinks (report only here, or the BPF LSM gate): ratio guard / no guard",
        "",
        &r.detected_session_unlink.ratio,
    );
    match &r.lsm_gate_unlink {
        Some(Measured::Done(lsm)) => {
            out += &row(
                "syscall gate by the BPF LSM (vm-test's kernel under QEMU, one boot): 5,000 unlinks of unprotected files in a `guardctl run` session, ratio guard / no guard",
                "<= 2",
                &lsm.ratio,
            );
            out += &row(
                "the same: us per unlink, gated (emulated)",
                "",
                &lsm.guard_us,
            );
            out += &row(
                "the same: us per unlink, no guard (emulated)",
                "",
                &lsm.no_guard_us,
            );
        }
        Some(Measured::Skipped { skipped: why }) => {
            out += &format!("| syscall gate by the BPF LSM (a VM) | <= 2 | skipped: {why} | |\n")
        }
        None => {}
    }
    out += &row(
        "make -j2 of a 61-file C project in a session (default policy) / outside, no guard",
        "",
        &r.workload_make_j2.ratio,
    );
    out += &row(
        "make -j2: ms outside, no guard",
        "",
        &ms(&r.workload_make_j2.no_guard_us),
    );
    out += &row(
        "git status/add/commit/log/diff/checkout on 2,000 files, in a session / outside",
        "",
        &r.workload_git.ratio,
    );
    out += &row(
        "git script: ms outside, no guard",
        "",
        &ms(&r.workload_git.no_guard_us),
    );
    if let Some(status) = &r.workload_git_status {
        out += &row(
            "200 x `git status` in the same repository, default pack, in a `guardctl run` session / outside, no guard",
            "<= 1.03",
            &status.ratio,
        );
        out += &row(
            "200 x `git status`: ms outside, no guard",
            "",
            &ms(&status.no_guard_us),
        );
    }
    if let Some(detected) = &r.workload_git_status_detected {
        out += &row(
            "the same in a session guardd detected (run by a shell named `claude`: no seccomp filter, the escape checks not on) / outside, no guard",
            "",
            &detected.ratio,
        );
    }
    if let Some(floor) = &r.workload_git_status_seccomp_floor {
        out += &row(
            "the same under a one-instruction allow-all seccomp filter, no guard (the floor of any session that carries a filter: `guardctl run` needs one for its escape checks where the BPF LSM does not run) / outside",
            "",
            &floor.ratio,
        );
    }
    // The loops' own medians: steadier than the median of per-round ratios
    // when single loops move by 10% or more.
    for (loops, what) in [
        (&r.workload_git_status, "in the `guardctl run` session"),
        (&r.workload_git_status_detected, "in the detected session"),
        (
            &r.workload_git_status_seccomp_floor,
            "under the bare filter",
        ),
    ] {
        if let Some(loops) = loops {
            out += &row(
                &format!("200 x `git status`: ms {what}"),
                "",
                &ms(&loops.guard_us),
            );
        }
    }
    for (peer, name) in [
        (
            &r.peer_bpftrace_exec_tracepoint,
            "bpftrace counting sched_process_exec",
        ),
        (
            &r.peer_auditd_execve_rule,
            "auditd with an execve rule (records of the loop only)",
        ),
        (
            &r.peer_fapolicyd,
            "fapolicyd judging every exec (file trust, permissive)",
        ),
    ] {
        match peer {
            Measured::Done(pair) => {
                out += &row(
                    &format!("peer: {name}, outside loop: ratio / none"),
                    "",
                    &pair.ratio,
                )
            }
            Measured::Skipped { skipped: why } => {
                out += &format!("| peer: {name} | | skipped: {why} | |\n")
            }
        }
    }
    let s = &r.exec_load.sustained;
    let _ = writeln!(
        out,
        "| sustained watched execs (allowed) in two sessions: execs/s with guard, no guard | | {:.0}, {:.0} | stops {}, events lost {}, raised from the map {} |",
        s.execs_per_second,
        s.execs_per_second_no_guard,
        s.stops, s.events_lost, s.raised_from_map
    );
    for b in &r.exec_load.bursts {
        let _ = writeln!(
            out,
            "| burst of {} watched execs with guardd frozen: all ran / ms after the thaw | | {} / {:.0} | events lost {}, raised from the map {}, stops {} |",
            b.size, b.completed, b.drain_ms_after_thaw,
            b.events_lost, b.raised_from_map, b.stops
        );
    }
    out += &row(
        "guardd resident memory, idle: MiB",
        "<= 40",
        &r.guardd_rss_idle_mib,
    );
    out += &row(
        "guardd resident memory after the loops: MiB",
        "<= 40",
        &r.guardd_rss_under_load_mib,
    );
    out += &row(
        "guardd CPU during the gated unlinks and exec loops: % of one core",
        "",
        &r.guardd_cpu_percent_under_load,
    );
    out += &row(
        "BPF maps (memlock of guardd's map fds): MiB",
        "",
        &r.bpf_map_memlock_mib,
    );
    let g = &r.guardd_stop_to_decision_us;
    let e = &r.guardd_stop_to_event_us;
    let _ = writeln!(
        out,
        "\nThe guard's BPF programs per iteration of the loop (last round), outside sessions: {}; in a session: {}; a prefiltered watched program in a session: {}. Wall-clock ratios move by several percent from round to round on a shared machine (see the min – max columns, and the bpftrace peer, which does next to nothing); the programs' own time is what the guard adds to each fork, exec and exit in the kernel.",
        programs(&r.outside_session_bpf_programs_last_round),
        programs(&r.in_session_bpf_programs_last_round),
        programs(&r.prefiltered_bpf_programs_last_round)
    );
    let _ = writeln!(
        out,
        "\nGated unlinks: this machine's kernel refuses LSM programs, so a `guardctl run` session with `syscall_gate = true` asks guardd about each unlink over seccomp user notification, whose round trip alone is the floor row; where the BPF LSM runs (the VM row, the distribution's kernel booted with it) the hooks let unprotected paths through in the kernel."
    );
    let _ = writeln!(out, "\nguardd's own stop-to-decision latency in the last watched run: p50 {} us, p99 {} us, max {} us ({} samples; goal p50 <= 100 us, p99 <= 1 ms). Of it, stop to the event in guardd (the kernel waking guardd, no policy work): p50 {} us, p99 {} us.",
        g.p50_us, g.p99_us, g.max_us, g.samples, e.p50_us, e.p99_us);
    if let Some(api) = &r.api_client_gate {
        out += &super::api::report(api, &row);
    }
    if let Some(go) = &r.api_client_gate_go {
        out += &super::go_api::report(go, &row);
    }
    if let Some(fleet) = &r.fleet {
        out += &super::fleet::report(fleet, &row);
    }
    out
}

/// The median BPF time per iteration of `bpf_ns`, as a share of the median exec without the guard.
fn bpf_share(r: &Results, bpf_ns: &Summary) -> f64 {
    bpf_ns.median / 1000.0 / r.outside_session.no_guard_us.median
}

/// "name N ns x R runs, ..." for each program of a run-time breakdown.
fn programs(breakdown: &BTreeMap<String, ProgramCost>) -> String {
    breakdown
        .iter()
        .map(|(name, p)| {
            format!(
                "{name} {:.0} ns x {:.2} runs",
                p.ns_per_run, p.runs_per_iteration
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use guard_protocol::{
        decode_request, Latency, LocalAuth, PolicySummary, PrefilterView, ProgramView, SessionView,
    };

    use super::*;

    /// The bench reads guardd's status answer as the `StatusView` guardd
    /// writes it from: the line a real view makes is read back whole.
    #[test]
    fn a_status_answer_reads_back_as_the_view_guardd_wrote() {
        let view = StatusView {
            version: "0.1.0".into(),
            pid: 4242,
            policy: PolicySummary {
                source: "/etc/agent-guard/policy.toml".into(),
                version: "bench".into(),
                last_reload_error: None,
                fleet_refused: None,
                rules: 1,
                watched_programs: 1,
                agents: vec!["claude".into()],
                local_auth: LocalAuth::None,
            },
            sessions: vec![SessionView {
                id: 1,
                agent: None,
                origin: "launched".into(),
                uid: 0,
                workspace: None,
            }],
            pending: 0,
            mechanisms: vec![("exec gate".into(), "tracepoint".into())],
            programs: vec![ProgramView {
                name: "exec_gate".into(),
                id: 77,
                tracepoint: "sched/sched_process_exec".into(),
                map_ids: vec![5, 6],
                attached: true,
            }],
            stats: GateStats {
                stops: 200,
                allowed: 150,
                held: 20,
                denied: 30,
                recovered_from_map: 3,
                events_lost: 4,
                stops_killed: 0,
                prefilter_passed: 12,
                quiet_opens_skipped: 0,
                quiet_opens: Vec::new(),
                event_latency: Latency {
                    samples: 200,
                    p50_us: 40,
                    p99_us: 90,
                    max_us: 120,
                },
                decision_latency: Latency {
                    samples: 200,
                    p50_us: 60,
                    p99_us: 150,
                    max_us: 400,
                },
                api_stops: 9,
                api_decision_latency: Latency {
                    samples: 9,
                    p50_us: 80,
                    p99_us: 200,
                    max_us: 210,
                },
                tls_follows: 1,
            },
            prefilters: vec![PrefilterView {
                program: "git".into(),
                prefiltered: true,
                detail: "stops on `push`".into(),
            }],
            lsm_missing: Some("the BPF LSM is not active".into()),
        };
        let line = encode_line(&Response::Status(Box::new(view.clone())));
        let answer: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(status_of(answer).unwrap(), view);
        let error = Response::Error {
            message: "no".into(),
        };
        assert!(status_of(error).is_err());
    }

    /// The bench's requests are ones guardd's own decoder accepts.
    #[test]
    fn the_bench_requests_decode_as_guardd_reads_them() {
        for request in [
            Request::Status,
            Request::Pending,
            Request::Approve { id: "a-1".into() },
        ] {
            let line = encode_line(&RequestEnvelope {
                version: PROTOCOL_VERSION,
                request: request.clone(),
            });
            assert_eq!(decode_request(line.trim_ascii_end()).unwrap(), request);
        }
    }
}
