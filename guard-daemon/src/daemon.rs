//! guardd's main loop: load, then read kernel events, run the periodic tick
//! and serve the control socket until SIGTERM or SIGINT.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use guard_common::{ApiWriteEvent, Event, EventKind, ReportEvent};
use tokio::signal::unix::SignalKind;

use crate::{
    audit::AuditLog,
    guard::{
        finish::{finish, Effects, Ending, Held, Outcome},
        monotonic_ns, Guard,
    },
    kernel::{self, Continuation, Kernel, MapSizes, ProgramSets},
    notice,
    policy::Policy,
    process::{ProcessHandle, Recorded},
    program_files::ProgramFiles,
    server,
    state::StateStore,
};

const TICK: Duration = Duration::from_millis(250);

pub struct Options {
    pub policy: Policy,
    /// The policy file, when one was given: reloaded on SIGHUP and on change.
    pub config: Option<PathBuf>,
    /// `guardd --protect` paths, kept across reloads.
    pub protect: Vec<PathBuf>,
    pub socket: PathBuf,
    /// Group that may use the control socket (mode 0660); None: everyone (0666).
    pub socket_group: Option<String>,
    pub audit_log: PathBuf,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Tests make maps small to overflow them.
    pub map_sizes: MapSizes,
    /// Which cgroup freezer holds execs (tests pick v1 on a hybrid host).
    pub freezer: crate::freezer::Choice,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let Options {
        policy,
        config,
        protect,
        socket,
        socket_group,
        audit_log,
        pin_dir,
        state_dir,
        map_sizes,
        freezer,
    } = options;
    let audit = AuditLog::open(&audit_log)
        .with_context(|| format!("opening audit log {}", audit_log.display()))?;
    let own_files = crate::protected::OwnFiles {
        config: config.clone(),
        state_dir: state_dir.clone(),
        audit_log: audit_log.clone(),
        socket: socket.clone(),
        pin_dir: pin_dir.clone(),
    };
    let policy = policy
        .with_self_protection(&own_files.gate_paths())
        .context("the policy")?;
    let program_files = ProgramFiles::of(&policy);
    let programs = ProgramSets::of(&policy, &program_files);
    let (kernel, events) =
        Kernel::load(&programs, &pin_dir, &map_sizes).context("loading the eBPF programs")?;
    let state = StateStore::open(&state_dir)
        .with_context(|| format!("opening the state directory {}", state_dir.display()))?;
    tracing::info!(
        policy = policy.source,
        version = policy.version,
        rules = policy.rules.len(),
        watched = policy.watched_programs().len(),
        "programs attached"
    );
    let in_force = crate::systemd::policy_in_force(&policy.version, policy.rules.len());
    let listener = server::bind(&socket, socket_group.as_deref())
        .with_context(|| format!("binding {}", socket.display()))?;
    let _socket_file = server::SocketFile(socket.clone());
    let tracer = crate::tracer::Tracer::start().context("starting the tracer thread")?;
    let guard = Arc::new(Mutex::new(Guard::new(
        policy,
        program_files,
        own_files,
        kernel,
        crate::guard::HoldKeepers {
            tracer,
            freezer: crate::freezer::Freezer::detect(&pin_dir, freezer),
        },
        audit,
        state,
    )));
    guard.lock().unwrap().set_cli_protections(protect);
    guard.lock().unwrap().restore_fleet_policy();
    if let Some(line) = guard.lock().unwrap().protections_unenforced() {
        tracing::warn!("{line}");
    }
    guard.lock().unwrap().scan_running_agents();
    let (audit_records, notify_settings) = guard.lock().unwrap().notifications();
    let (fleet_records, fleet_settings) = guard.lock().unwrap().fleet_feed();

    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let hangup = tokio::signal::unix::signal(SignalKind::hangup())?;
    release_start_up_memory();
    tracing::info!(socket = %socket.display(), "guardd ready");
    // systemd (Type=notify): ready once the programs, the state and the socket are.
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify READY failed: {err}");
    }
    crate::systemd::status(&in_force);
    let reader_failed = spawn_event_reader(events, guard.clone())?;
    let result = tokio::select! {
        failure = reader_failed => Err(failure.unwrap_or_else(|_| anyhow::anyhow!("the event reader stopped"))),
        _ = tick(guard.clone()) => Ok(()),
        _ = watch_policy(config, hangup, guard.clone()) => Ok(()),
        _ = watchdog(guard.clone()) => Ok(()),
        _ = crate::notify::run(audit_records, notify_settings) => Ok(()),
        _ = crate::fleet::run(guard.clone(), fleet_records, fleet_settings) => Ok(()),
        _ = server::serve(listener, guard.clone()) => Ok(()),
        _ = terminate.recv() => Ok(()),
        _ = interrupt.recv() => Ok(()),
    };
    tracing::info!(
        "stopping: held processes stay held until guardd is back (--teardown denies them)"
    );
    guard.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
    result
}

/// Reads the ring buffer on its own thread: the thread the kernel wakes on a
/// stop is the one that decides (no hand-over to another thread per stop),
/// and the socket and seccomp tasks run on the runtime's workers meanwhile.
/// Level-triggered poll, re-checked every tick: a missed wakeup costs at
/// most that long.
fn spawn_event_reader(
    events: RingBuf<MapData>,
    guard: Arc<Mutex<Guard>>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Error>> {
    let (failed, failure) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            let err = read_events(events, guard);
            let _ = failed.send(err);
        })
        .context("starting the event reader")?;
    Ok(failure)
}

/// A ring buffer record, kept in the kernel's order: an HTTP/2 write the
/// kernel let through must be read before a later stop on its connection.
enum Record {
    Event(Event),
    Http2Passed(Box<ApiWriteEvent>),
}

fn read_events(mut events: RingBuf<MapData>, guard: Arc<Mutex<Guard>>) -> anyhow::Error {
    use std::os::fd::{AsRawFd as _, BorrowedFd};
    let raw = events.as_raw_fd();
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: TICK.as_nanos() as i64,
    };
    let mut batch: Vec<Record> = Vec::new();
    let mut reports: Vec<ReportEvent> = Vec::new();
    loop {
        // SAFETY: `events` owns the fd and outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let mut poll = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut poll, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(err) => return anyhow::anyhow!("polling the ring buffer: {err}"),
        }
        // Everything the kernel recorded before this is in the batch.
        let drained_from_ns = monotonic_ns();
        while let Some(item) = events.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            // SAFETY: the kernel wrote an `Event` (or a record starting with
            // one, as its kind says); read it unaligned.
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
            if event.kind == EventKind::GateReported as u32 {
                if item.len() >= std::mem::size_of::<ReportEvent>() {
                    // SAFETY: as above, a whole `ReportEvent`.
                    reports.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr().cast::<ReportEvent>())
                    });
                }
            } else if event.kind == EventKind::ApiHttp2Passed as u32 {
                if item.len() >= std::mem::size_of::<ApiWriteEvent>() {
                    // SAFETY: as above, a whole `ApiWriteEvent`.
                    batch.push(Record::Http2Passed(Box::new(unsafe {
                        std::ptr::read_unaligned(item.as_ptr().cast::<ApiWriteEvent>())
                    })));
                }
            } else {
                batch.push(Record::Event(event));
            }
        }
        let mut guard = guard.lock().unwrap_or_else(|e| e.into_inner());
        // Reports change neither holds nor sessions: nothing to save for them.
        let mut changed = !batch.is_empty();
        for record in batch.drain(..) {
            match record {
                Record::Event(event) => guard.on_event(&event),
                Record::Http2Passed(write) => guard.on_http2_passed(&write),
            }
        }
        for report in reports.drain(..) {
            guard.on_report(&report);
        }
        // Here, not on the tick: a stop recorded before the drain began
        // comes after every write of its connection the kernel let through.
        changed |= guard.recover_api_stops(drained_from_ns);
        if changed {
            guard.persist();
        }
    }
}

async fn tick(guard: Arc<Mutex<Guard>>) {
    let mut interval = tokio::time::interval(TICK);
    loop {
        interval.tick().await;
        let mut guard = guard.lock().unwrap_or_else(|e| e.into_inner());
        guard.tick();
        guard.persist();
    }
}

/// Reloads the policy on SIGHUP and when its files change (checked every second).
async fn watch_policy(
    config: Option<PathBuf>,
    mut hangup: tokio::signal::unix::Signal,
    guard: Arc<Mutex<Guard>>,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let mut seen = config.as_deref().map(fingerprint);
    loop {
        let reason = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            _ = interval.tick() => {
                let now = config.as_deref().map(fingerprint);
                if now == seen {
                    continue;
                }
                seen = now;
                "file change"
            }
        };
        // The report of a session process's write to a policy file precedes
        // the write; let the event reader hand it over before judging the reload.
        tokio::time::sleep(TICK).await;
        guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reload(reason);
    }
}

/// Names, sizes and modification times of the policy files.
fn fingerprint(config: &std::path::Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    Policy::files(config)
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (path, size, modified)
        })
        .collect()
}

/// `guardd --teardown`: detaches and unpins the programs, denies every
/// process still held (it never runs), and removes the pins and the state.
pub fn teardown(pin_dir: &Path, state_dir: &Path, audit_log: &Path) -> anyhow::Result<usize> {
    let audit = AuditLog::open(audit_log)
        .with_context(|| format!("opening audit log {}", audit_log.display()))?;
    // Detach first, so that nothing new is stopped while we deny.
    // pid -> (who else continued it, its start time where the state has it).
    let mut held: std::collections::BTreeMap<u32, (Option<Continuation>, Option<u64>)> =
        kernel::teardown(pin_dir)
            .context("removing the pinned programs and maps")?
            .into_iter()
            .map(|(pid, continued)| (pid, (continued, None)))
            .collect();
    // Every process in this guardd's frozen leaves is held, state file or not.
    let freezers = crate::freezer::Freezer::existing(pin_dir);
    let frozen: std::collections::HashSet<u32> = freezers
        .iter()
        .flat_map(|freezer| freezer.frozen_processes())
        .flat_map(|(_, pids)| pids)
        .collect();
    for &pid in &frozen {
        held.entry(pid).or_default();
    }
    let mut state = StateStore::open(state_dir)?;
    if let Ok(Some(saved)) = state.load() {
        for hold in &saved.holds {
            held.entry(hold.pid).or_default().1 = Some(hold.start_time);
        }
    }
    let mut denied = 0;
    for (pid, (continued, start_time)) in held {
        let Ok(process) = ProcessHandle::open(pid) else {
            continue;
        };
        if start_time.is_some_and(|t| t != process.start_time) {
            continue; // the pid now names another process
        }
        let Ok(stat) = crate::procfs::stat(pid) else {
            continue;
        };
        // Frozen, it ran nothing since it was held (a SIGCONT that came
        // before that ended the hold then).
        let recorded = match frozen.contains(&pid) {
            true => Recorded::Held,
            false => Recorded::of(&stat, continued),
        };
        let continued = match recorded {
            Recorded::Held => None,
            Recorded::Continued(continuation) => Some(continuation),
            Recorded::LetGo => {
                tracing::warn!(pid, "recorded as held but let go by guardd: left alone");
                continue;
            }
        };
        let stderr = notice::stderr_of(&process);
        let mut record = crate::audit::AuditRecord::new(crate::audit::AuditEvent::Deny);
        record.pid = Some(pid);
        let ending = Ending {
            pid,
            held: Held::Exec {
                process: Some(&process),
                traced: false,
                frozen: None,
            },
            request: None,
            subject: String::new(),
            stderr: stderr.as_ref(),
            record,
        };
        let mut effects = TeardownEffects {
            audit: &audit,
            kill_failed: None,
        };
        finish(&mut effects, ending, Outcome::TornDown { continued });
        if let Some(err) = effects.kill_failed {
            return Err(err).with_context(|| format!("killing held pid {pid}"));
        }
        denied += 1;
    }
    for freezer in freezers {
        freezer.remove_all();
    }
    state.remove().context("removing the state")?;
    Ok(denied)
}

/// What ending a hold does without a running guardd: the pins and maps are
/// gone already, nothing is released.
struct TeardownEffects<'a> {
    audit: &'a AuditLog,
    kill_failed: Option<std::io::Error>,
}

impl Effects for TeardownEffects<'_> {
    fn release(&mut self, _: &Ending<'_>) {}

    fn refuse(&mut self, ending: &Ending<'_>) {
        if let Held::Exec {
            process: Some(process),
            ..
        } = ending.held
        {
            self.kill_failed = process.kill().err();
        }
    }

    fn forget(&mut self, _: &Ending<'_>) {}

    fn notice(&mut self, ending: &Ending<'_>, text: &str) {
        if let Some(stderr) = ending.stderr {
            notice::write(stderr, text);
        }
    }

    fn audit(&mut self, record: &crate::audit::AuditRecord) {
        self.audit.write(record);
    }
}

/// systemd's watchdog (WatchdogSec=): pinged at half the interval, and only
/// while the guard's lock can be taken, so a wedged daemon gets restarted.
async fn watchdog(guard: Arc<Mutex<Guard>>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        ticks.tick().await;
        drop(guard.lock().unwrap_or_else(|e| e.into_inner()));
        if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
            tracing::warn!("sd_notify WATCHDOG failed: {err}");
        }
    }
}

/// Gives back to the kernel what start-up freed (the kernel's BTF parsed
/// twice, the eBPF object, the installed programs' headers): glibc keeps a
/// freed heap otherwise, and guardd then idles at that peak.
fn release_start_up_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
