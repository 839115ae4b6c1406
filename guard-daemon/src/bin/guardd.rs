//! guardd: the agent-guard daemon (runs in the foreground).
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use guard_daemon::{daemon, kernel::MapSizes, policy::Policy, protocol::DEFAULT_SOCKET};

#[derive(Parser)]
#[command(name = "guardd")]
#[command(
    version,
    about = "Holds destructive commands run by AI agents until a human approves them"
)]
struct Args {
    /// Policy file (TOML), with `policy.d/*.toml` beside it; without it the
    /// embedded default policy is used. Reloaded on SIGHUP and on change.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control socket path.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Only root and this group may use the socket (mode 0660); without it
    /// anyone may connect and each request is authorised on its own.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Audit log (JSON lines, appended).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/log/agent-guard/audit.jsonl"
    )]
    audit_log: PathBuf,
    /// Where the programs' links and maps are pinned (on bpffs), so that
    /// enforcement goes on while guardd is down or restarting. One guardd
    /// per directory: a second one (or a teardown) is refused while it runs.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/agent-guard")]
    pin_dir: PathBuf,
    /// Where held requests are kept across restarts.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/agent-guard")]
    state_dir: PathBuf,
    /// Hold destructive file operations of session processes on PATH and
    /// below it (repeatable; added to the policy's `[[protect]]`; enforced
    /// by the BPF LSM where it runs, else in `guardctl run` sessions when
    /// the policy sets `[defaults] syscall_gate = true`).
    #[arg(long = "protect", value_name = "PATH")]
    protect: Vec<PathBuf>,
    /// Detach and unpin everything, deny what is still held, remove the
    /// state, and exit (uninstall; tests).
    #[arg(long)]
    teardown: bool,
    /// Write the guardd.8 man page into DIR and exit (for packaging).
    #[arg(long, hide = true, value_name = "DIR")]
    generate_man: Option<PathBuf>,
    /// Event ring buffer size in bytes (testing the recovery of lost events).
    #[arg(long, hide = true)]
    ring_buffer_bytes: Option<u32>,
    /// Capacity of the map of stopped execs (testing what happens when it is full).
    #[arg(long, hide = true)]
    held_entries: Option<u32>,
    /// Which cgroup freezer holds execs: v2 where mounted, else v1 (auto),
    /// or v1 (testing it on a host that has both).
    #[arg(long, hide = true, value_enum, default_value_t)]
    freezer: guard_daemon::freezer::Choice,
}

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "desktop")]
    if std::env::args().nth(1).as_deref() == Some(guard_daemon::notify::desktop::CHILD_FLAG) {
        // guardd as the held process's user, for one desktop notification.
        return guard_daemon::notify::desktop::notify_from_stdin();
    }
    tokio::runtime::Runtime::new()?.block_on(serve())
}

/// To the journal with each event's fields as journal fields where
/// systemd connected stderr to it; else text on stderr, in colour only on
/// a terminal.
fn init_logging() {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if stderr_is_the_journal() {
        if let Ok(journal) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter())
                .with(journal.with_syslog_identifier("guardd".into()))
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// systemd sets JOURNAL_STREAM=DEVICE:INODE for a service whose stderr is
/// the journal; a child that inherited the variable has another stderr.
fn stderr_is_the_journal() -> bool {
    let Some((device, inode)) = std::env::var("JOURNAL_STREAM").ok().and_then(|value| {
        let (device, inode) = value.split_once(':')?;
        Some((device.parse::<u64>().ok()?, inode.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr())
        .is_ok_and(|stat| stat.st_dev == device && stat.st_ino == inode)
}

async fn serve() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    if let Some(dir) = &args.generate_man {
        use clap::CommandFactory as _;
        guard_daemon::docs::write_man_pages(Args::command(), "8", dir)?;
        return Ok(());
    }
    if args.teardown {
        let denied = daemon::teardown(&args.pin_dir, &args.state_dir, &args.audit_log)?;
        tracing::info!(denied, pin_dir = %args.pin_dir.display(), "torn down");
        return Ok(());
    }
    let policy = match &args.config {
        Some(path) => Policy::load(path).context("loading the policy")?,
        None => Policy::embedded_default(),
    }
    .with_protected_paths(&args.protect)
    .context("--protect")?;
    daemon::run(daemon::Options {
        policy,
        config: args.config,
        protect: args.protect,
        socket: args.socket,
        socket_group: args.socket_group,
        audit_log: args.audit_log,
        pin_dir: args.pin_dir,
        state_dir: args.state_dir,
        map_sizes: MapSizes {
            ring_buffer_bytes: args.ring_buffer_bytes,
            held_entries: args.held_entries,
        },
        freezer: args.freezer,
    })
    .await
}
