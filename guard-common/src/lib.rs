//! Types shared by the kernel programs (`guard-ebpf`) and the daemon.
//!
//! Every struct is `#[repr(C)]` with explicit padding and a compile-time size
//! check, so both sides agree on the layout byte for byte.
#![no_std]

pub mod names;

/// Length of `task_struct::comm`, the key used to recognise programs in the kernel.
pub const COMM_LEN: usize = 16;
pub type Comm = [u8; COMM_LEN];

/// Capacity of the session map (threads in all agent sessions together).
pub const MAX_SESSION_TASKS: u32 = 65_536;
/// Capacity of the program-name map.
pub const MAX_PROGRAMS: u32 = 4_096;
/// Capacity of the map of processes stopped by the exec gate.
pub const MAX_HELD: u32 = 8_192;
/// Size of the event ring buffer in bytes.
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// `OVERFLOWS` slot: events the ring buffer had no room for.
pub const OVERFLOW_EVENTS_LOST: u32 = 0;
/// `OVERFLOWS` slot: watched execs killed because neither `HELD` nor the ring
/// buffer had room to record their stop (stopped, nothing would find them).
pub const OVERFLOW_STOPS_KILLED: u32 = 1;
pub const OVERFLOW_SLOTS: u32 = 2;

/// `PROGRAMS` flag: an exec of this program inside a session is stopped and reported.
pub const PROGRAM_WATCHED: u32 = 1 << 0;
/// `PROGRAMS` flag: an exec of this program outside a session starts a session.
pub const PROGRAM_AGENT: u32 = 1 << 1;
/// `PROGRAMS` flag: an exec outside a session is reported; the daemon decides
/// from the command line whether it runs an agent package.
pub const PROGRAM_INTERPRETER: u32 = 1 << 2;
/// `PROGRAMS` flag: a multi-call binary (busybox) that runs the applet named
/// by argv[0]; run under another name, it stops only when that applet is
/// watched.
pub const PROGRAM_MULTI_CALL: u32 = 1 << 3;
/// `PROGRAMS` flag: a shell or other interpreter that may run a copy of a
/// watched `#!` script (`sh ./copy destroy`, or the copy run by its `#!`
/// line); in a session it stops unless argv[1] is a `-c` option cluster.
pub const PROGRAM_SCRIPT_RUNNER: u32 = 1 << 4;

/// Bytes of one argument the argv prefilter reads into a word key: 31 and
/// the NUL. A word of the prefilter is at most this long less one, a prefix
/// at most 31 bytes.
pub const ARGV_WORD_LEN: usize = 32;
/// Arguments (argv[0] included) the prefilter reads; a longer argv stops.
pub const ARGV_MAX_ARGS: u32 = 32;
/// An argument this long or longer (the NUL counted) stops: the prefilter
/// could not tell where the next one starts.
pub const ARGV_LONG_ARG: usize = 4096;
/// Capacity of `ARGV_WORDS`.
pub const MAX_ARGV_WORDS: u32 = 16_384;
/// `KERNEL_COUNTS` slot: watched execs in sessions the prefilter let run unstopped.
pub const COUNT_PREFILTER_PASSED: u32 = 0;
/// `KERNEL_COUNTS` slot: writing opens of a `REPORT_QUIET_OPENS` path the
/// report-only program did not send.
pub const COUNT_QUIET_OPENS: u32 = 1;
pub const COUNT_SLOTS: u32 = 2;

/// Value of `ARGV_FILTERS` (by comm): the program's words in `ARGV_WORDS`
/// are those under `id`, and a short-option cluster stops when a byte of it
/// has its bit (`1 << (byte & 63)`) in `letters`. argv[0] is the program's
/// name, or a path ending in `/NAME`: its last 16 bytes, masked by
/// `tail_mask`, are `tail` (`/NAME` at the end), and it is longer than
/// `name_len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ArgvFilter {
    pub id: u32,
    pub name_len: u32,
    pub letters: u64,
    pub tail: [u64; 2],
    pub tail_mask: [u64; 2],
}

/// Data of an `ARGV_WORDS` (LPM trie) key: the filter id, big-endian so
/// that it is the key's first 32 bits, then an argument's first bytes. A
/// word is stored with its NUL (it matches only the whole argument), a
/// prefix without.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgvWordKey {
    pub id: [u8; 4],
    pub bytes: [u8; ARGV_WORD_LEN],
}

/// `SessionEntry::flags`: the session was started by `guardctl run`.
pub const SESSION_LAUNCHED: u32 = 1 << 0;
/// `SessionEntry::flags`: the session was started by the kernel on an agent exec.
pub const SESSION_DETECTED: u32 = 1 << 1;
/// `SessionEntry::flags`: the seccomp gate sees this thread's calls (no reports needed).
pub const SESSION_SECCOMP: u32 = 1 << 2;
/// `SessionEntry::flags`: the launcher's seccomp filter carries the escape
/// checks, so the BPF LSM leaves this session's connects to guardd's listener.
pub const SESSION_ESCAPE_FILTER: u32 = 1 << 3;
/// `SessionEntry::flags`: guardd follows this thread with the TLS write
/// probes (an inherited perf event), so `api_tls_start` lets it pass. Set by
/// guardd, copied to children and threads, cleared at exec where
/// `SETTING_EXEC_UNFOLLOWS` says the exec dropped the event.
pub const SESSION_TLS_FOLLOWED: u32 = 1 << 4;
/// `SETTINGS[0]` bit: session processes may not attach to (ptrace, memory
/// access, pidfd_getfd) processes outside their session (`[defaults]
/// session_escape = "deny"`), checked by the BPF LSM where it runs.
pub const SETTING_ESCAPE_DENY: u32 = 1 << 0;
/// `SETTINGS[0]` bit: a hard link may carry root's ownership into a place a
/// session user can write (`fs.protected_hardlinks` off, or a program
/// directory not root's alone), so the argv prefilter trusts only files
/// with one link.
pub const SETTING_ONE_LINK: u32 = 1 << 1;
/// `SETTINGS[0]` bit: the TLS write probes' events leave a task at its exec
/// (`remove_on_exec`), so the new image is followed only once it starts a
/// TLS connection of its own.
pub const SETTING_EXEC_UNFOLLOWS: u32 = 1 << 2;

/// Layout version of the pinned maps. The maps outlive guardd (a package
/// upgrade restarts it on the pins of the previous one), so a guardd reuses
/// pinned maps only when the pin directory says they have this layout;
/// otherwise it loads fresh maps and re-holds the stopped processes it can
/// identify (see guard-daemon/src/kernel/layout.rs).
///
/// BUMP THIS whenever the key or value of any map changes (a struct below
/// gains, loses or reorders a field, a key type changes), or a map's type,
/// or what an entry means. Version 1 is the first marked one: pins without a
/// marker count as version 0: they come from before it, in whichever layout
/// (`ContinuedEntry` had already changed once).
pub const LAYOUT_VERSION: u32 = if cfg!(feature = "next-layout") { 4 } else { 3 };

/// Value of the `SESSIONS` map, keyed by thread id; children inherit it on fork.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEntry {
    /// Pid of the session root.
    pub session_id: u32,
    pub flags: u32,
    /// The user the session runs for: whose `~` the syscall gate protects.
    pub owner_uid: u32,
    pub _pad: u32,
}

/// Value of the `HELD` map, keyed by pid: one entry per process the exec gate
/// stopped, until the daemon has decided. Lets the daemon find stops whose
/// ring-buffer event was lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldEntry {
    pub ktime_ns: u64,
    pub session_id: u32,
    pub uid: u32,
}

/// Value of the `CONTINUED` map, keyed by pid: a SIGCONT that another process
/// than guardd sent to a process while `HELD` listed it. Without the BPF LSM
/// nothing refuses that signal, and a hold not yet in ptrace-stop (or one left
/// in group-stop while guardd is down) runs on: guardd learns of it here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContinuedEntry {
    /// `HeldEntry::ktime_ns` of the stop it continued (an older stop's mark
    /// does not count).
    pub stop_ktime_ns: u64,
    /// The sender's pid (for the kernel's own SIGCONT, the task it acted in).
    pub by: u32,
    /// 1 when the kernel sent it (`SI_KERNEL`: an orphaned process group).
    pub from_kernel: u32,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A watched program was exec'd in a session and its process is stopped.
    ExecHeld = 1,
    /// As `ExecHeld`, but `bpf_send_signal` failed: the process is not stopped.
    ExecStopFailed = 2,
    /// An agent program was exec'd outside any session; it is now a session root.
    SessionDetected = 3,
    /// An interpreter was exec'd outside any session; it may run an agent package.
    InterpreterExec = 4,
    /// A process the exec gate stopped has exited before a decision.
    HeldExit = 5,
    /// A forked child could not be added to its parent's session (map full).
    SessionOverflow = 6,
    /// The LSM syscall gate stopped a process on a protected path (details in `GATE_HELD`).
    GateHeld = 7,
    /// As `GateHeld`, but `bpf_send_signal` failed: the call was refused instead.
    GateStopFailed = 8,
    /// The LSM syscall gate refused a call on a `deny` path.
    GateDenied = 9,
    /// The LSM syscall gate let a call on an `audit` path through.
    GateAudited = 10,
    /// Without the BPF LSM: a session process made a gated call (a
    /// `ReportEvent`; it ran, guardd only reports it).
    GateReported = 11,
    /// An API probe stopped a session process before a TLS write or an SQL
    /// call (details in `API_HELD` under `tid`; `op` is the `ApiHook`).
    ApiHeld = 12,
    /// As `ApiHeld`, but `bpf_send_signal` failed: the call goes on.
    ApiStopFailed = 13,
    /// A session process freed a TLS connection guardd keeps state of
    /// (`API_CONNS` entry dropped; `root.ino` is the connection's address).
    ApiConnClosed = 14,
    /// The kernel let an HTTP/2 write with a GET's header block through (an
    /// `ApiWriteEvent`): guardd reads it for the connection's HPACK table.
    ApiHttp2Passed = 15,
}

impl EventKind {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::ExecHeld,
            2 => Self::ExecStopFailed,
            3 => Self::SessionDetected,
            4 => Self::InterpreterExec,
            5 => Self::HeldExit,
            6 => Self::SessionOverflow,
            7 => Self::GateHeld,
            8 => Self::GateStopFailed,
            9 => Self::GateDenied,
            10 => Self::GateAudited,
            11 => Self::GateReported,
            12 => Self::ApiHeld,
            13 => Self::ApiStopFailed,
            14 => Self::ApiConnClosed,
            15 => Self::ApiHttp2Passed,
            _ => return None,
        })
    }
}

/// One record on the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub ktime_ns: u64,
    /// An `EventKind` as u32 (an enum field could carry an invalid value across the boundary).
    pub kind: u32,
    pub pid: u32,
    pub session_id: u32,
    pub uid: u32,
    pub comm: Comm,
    /// Gate events: the thread that made the call and its operation (`GATE_*`).
    pub tid: u32,
    pub op: u32,
    /// Gate events: the protected root the call touched.
    pub root: FileKey,
}

/// Tracepoint field offsets, read from tracefs `format` files at load time and
/// written into the programs' read-only data (they differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TracepointOffsets {
    /// `sched/sched_process_fork`: `child_pid`.
    pub fork_child_pid: u32,
    /// `sched/sched_process_exec`: `old_pid`.
    pub exec_old_pid: u32,
    /// `signal/signal_generate`: `sig`.
    pub signal_sig: u32,
    /// `signal/signal_generate`: `pid` (the target).
    pub signal_pid: u32,
    /// `signal/signal_generate`: `code` (`si_code`).
    pub signal_code: u32,
}

/// Offsets into kernel structs, from BTF at load time, for reading the name
/// of the executed file (`current->mm->exe_file->f_path.dentry->d_name.name`):
/// a symlink `k -> kubectl` runs with comm `k` but that name is `kubectl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExeNameOffsets {
    /// 0: no BTF, the gate matches by comm only.
    pub enabled: u32,
    pub task_mm: u32,
    pub mm_exe_file: u32,
    /// `file.f_path` + `path.dentry`.
    pub file_dentry: u32,
    /// `dentry.d_name` + `qstr.name`.
    pub dentry_name: u32,
    /// `mm_struct.arg_start`: where argv[0] of the new image starts.
    pub mm_arg_start: u32,
    /// `file.f_inode`, `inode.i_uid`, `inode.i_nlink`: a file root does not
    /// own, or with other links than one, is judged by what it is.
    pub file_inode: u32,
    pub inode_uid: u32,
    pub inode_nlink: u32,
    /// `mm_struct.arg_end`: where the new image's argv ends.
    pub mm_arg_end: u32,
    /// `dentry.d_parent`, `dentry.d_inode`, `inode.i_ino`, `inode.i_sb`,
    /// `super_block.s_dev`: the directory the executed file is in, which
    /// must be one of `EXEC_DIRS` for a file of root's to run unjudged.
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
}

/// Offsets into kernel structs for the BPF LSM hooks, from BTF at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LsmOffsets {
    pub task_tgid: u32,
    pub file_mode: u32,
    /// `file.f_path` + `path.dentry`.
    pub file_dentry: u32,
    pub path_dentry: u32,
    pub dentry_inode: u32,
    pub dentry_parent: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub task_start_time: u32,
    pub file_flags: u32,
    /// `sock.sk_peer_pid`: on a listening unix socket, its listener's `struct pid`.
    pub sock_peer_pid: u32,
    /// `pid.numbers[0].nr`: the pid in the initial namespace.
    pub pid_nr: u32,
    /// `unix_sock.path` + `path.dentry`: the socket file (NULL for abstract names).
    pub unix_dentry: u32,
}

/// Key of the `PROTECTED` map: a file by device (the kernel's `s_dev`
/// encoding, `major << 20 | minor`) and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// `PROTECTED` flag: session processes may not write, truncate, unlink or rename this file.
pub const PROTECT_FILE: u32 = 1 << 0;
/// `PROTECTED` flag: as `PROTECT_FILE` for every entry directly inside this directory,
/// including files created or replaced later (atomic renames give new inodes).
pub const PROTECT_ENTRIES: u32 = 1 << 1;
/// Capacity of the protected-file map.
pub const MAX_PROTECTED: u32 = 1_024;
/// Capacity of the map of the system's program directories (`EXEC_DIRS`).
pub const MAX_EXEC_DIRS: u32 = 256;

/// Syscall gate operations, as bits (the order of the policy's `Operation`).
pub const GATE_UNLINK: u32 = 1 << 0;
pub const GATE_RMDIR: u32 = 1 << 1;
pub const GATE_RENAME: u32 = 1 << 2;
pub const GATE_TRUNCATE: u32 = 1 << 3;
pub const GATE_WRITE: u32 = 1 << 4;
pub const GATE_CHMOD: u32 = 1 << 5;
pub const GATE_CHOWN: u32 = 1 << 6;
/// Not a `[[protect]]` operation: a session process's connect to a unix
/// stream socket served from outside its session, held by the escape check
/// (`escape_unix_stream_connect`); its "root" is the socket's file.
pub const ESCAPE_CONNECT: u32 = 1 << 31;
/// `GateRoot::owner` of a root that is protected in every session.
pub const ANY_OWNER: u32 = u32::MAX;
/// Capacity of the protected-root map of the LSM syscall gate.
pub const MAX_GATE_ROOTS: u32 = 4_096;
/// Capacity of the map of remembered gate decisions.
pub const MAX_GATE_DECISIONS: u32 = 16_384;

/// `ReportCall` argument index meaning "none".
pub const NO_ARG: u32 = u32::MAX;
/// Bytes of each path a `ReportEvent` carries (longer paths are cut).
pub const REPORT_PATH: usize = 256;
/// Capacity of the report-only call map (system call numbers).
pub const MAX_REPORT_CALLS: u32 = 64;
/// Bytes of a `REPORT_QUIET_OPENS` key: an absolute path, zero-padded (so
/// at most `QUIET_PATH - 2` bytes long: a longer read is cut, never quiet).
pub const QUIET_PATH: usize = 16;
/// Capacity of `REPORT_QUIET_OPENS`.
pub const MAX_QUIET_PATHS: u32 = 16;

/// Value of `REPORT_CALLS`, keyed by system call number: where a gated
/// call's arguments are (indices into the six syscall arguments, or `NO_ARG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReportCall {
    /// `GATE_*` bit.
    pub op: u32,
    /// open(2) flags (the call is reported only when they write) or other flags.
    pub flags_arg: u32,
    /// 1: `flags_arg` holds open flags.
    pub open_flags: u32,
    pub path_args: [u32; 2],
    pub dirfd_args: [u32; 2],
    pub _pad: u32,
}

/// A gated call seen by the report-only tracepoint: what guardd needs to
/// resolve its paths (as raw as the call passed them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportEvent {
    /// `kind` is `GateReported`; `op` the `GATE_*` bit.
    pub event: Event,
    pub flags: u64,
    /// AT_FDCWD (-100) where the call has no directory fd.
    pub dirfd: [i32; 2],
    pub paths: [[u8; REPORT_PATH]; 2],
}

/// Value of `GATE_ROOTS`, keyed by the `FileKey` of a protected root: which
/// operations below it are held, denied or audited, in whose sessions.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateRoot {
    pub hold: u32,
    pub deny: u32,
    pub audit: u32,
    /// Operations not gated at and below this directory (`except` paths).
    pub exempt: u32,
    /// Session owner uid, or `ANY_OWNER`.
    pub owner: u32,
    pub _pad: u32,
}

/// Value of `GATE_HELD`, keyed by pid: the call that stopped the process,
/// until guardd has decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateHeldEntry {
    pub ktime_ns: u64,
    /// `task_struct.start_time`: names the process across pid reuse.
    pub start_ns: u64,
    pub root: FileKey,
    pub session_id: u32,
    pub tid: u32,
    pub op: u32,
    pub uid: u32,
}

/// Key of `GATE_DECIDED`: a process and a protected root.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GateDecisionKey {
    pub pid: u32,
    pub _pad: u32,
    pub root: FileKey,
}

/// Value of `GATE_DECIDED`: what guardd decided for that process and root.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateDecision {
    /// Must equal the process's own start time (else: a reused pid, no decision).
    pub start_ns: u64,
    /// 1: allowed, 0: refused with EPERM.
    pub allow: u32,
    pub _pad: u32,
}

/// The client-library function an API probe sits on: its attach cookie.
/// guardd fails a denied call with the function's own error value.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiHook {
    /// OpenSSL `int SSL_write(SSL *, const void *, int)`.
    SslWrite = 1,
    /// OpenSSL `int SSL_write_ex(SSL *, const void *, size_t, size_t *)`.
    SslWriteEx = 2,
    /// GnuTLS `ssize_t gnutls_record_send(gnutls_session_t, const void *, size_t)`.
    GnutlsRecordSend = 3,
    /// libpq `PGresult *PQexec(PGconn *, const char *query)`.
    PqExec = 4,
    /// libpq `PQexecParams(PGconn *, const char *command, ...)`.
    PqExecParams = 5,
    /// libpq `int PQsendQuery(PGconn *, const char *query)`.
    PqSendQuery = 6,
    /// libpq `int PQsendQueryParams(PGconn *, const char *command, ...)`.
    PqSendQueryParams = 7,
    /// libpq `PQprepare(PGconn *, const char *name, const char *query, ...)`.
    PqPrepare = 8,
    /// libpq `int PQsendPrepare(PGconn *, const char *name, const char *query, ...)`.
    PqSendPrepare = 9,
    /// OpenSSL `void SSL_free(SSL *)`: the connection's state goes.
    SslFree = 10,
    /// GnuTLS `void gnutls_deinit(gnutls_session_t)`.
    GnutlsDeinit = 11,
    /// glibc's `dlopen`, on return: a session process mapped a library,
    /// maybe a client library of its own (a wheel's bundled libpq) that
    /// guardd is to probe before the process goes on.
    Dlopen = 12,
    /// OpenSSL's internal write that `SSL_write` and `SSL_write_ex` call
    /// (`ssl_write_internal(SSL *, const void *, size_t, ...)`), probed in
    /// their place where its first instruction is one the kernel emulates.
    SslWriteInternal = 13,
    /// Go's `func (c *crypto/tls.Conn) Write(b []byte) (int, error)`, in the
    /// register ABI: `c` in RAX, `b`'s pointer and length in RBX and RCX.
    GoTlsWrite = 14,
    /// OpenSSL `SSL *SSL_new(SSL_CTX *)`: a session thread the write probes
    /// do not follow yet makes a TLS connection; it stops until they do.
    SslNew = 15,
    /// GnuTLS `int gnutls_init(gnutls_session_t *, unsigned int)`: the same.
    GnutlsInit = 16,
}

impl ApiHook {
    pub const ALL: [ApiHook; 16] = [
        Self::SslWrite,
        Self::SslWriteEx,
        Self::GnutlsRecordSend,
        Self::PqExec,
        Self::PqExecParams,
        Self::PqSendQuery,
        Self::PqSendQueryParams,
        Self::PqPrepare,
        Self::PqSendPrepare,
        Self::SslFree,
        Self::GnutlsDeinit,
        Self::Dlopen,
        Self::SslWriteInternal,
        Self::GoTlsWrite,
        Self::SslNew,
        Self::GnutlsInit,
    ];

    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|hook| *hook as u32 == value)
    }

    /// The function the probe is attached to (exported, but for `SslWriteInternal`).
    pub fn symbol(self) -> &'static str {
        match self {
            Self::SslWrite => "SSL_write",
            Self::SslWriteEx => "SSL_write_ex",
            Self::GnutlsRecordSend => "gnutls_record_send",
            Self::PqExec => "PQexec",
            Self::PqExecParams => "PQexecParams",
            Self::PqSendQuery => "PQsendQuery",
            Self::PqSendQueryParams => "PQsendQueryParams",
            Self::PqPrepare => "PQprepare",
            Self::PqSendPrepare => "PQsendPrepare",
            Self::SslFree => "SSL_free",
            Self::GnutlsDeinit => "gnutls_deinit",
            Self::Dlopen => "dlopen",
            Self::SslWriteInternal => "ssl_write_internal",
            Self::GoTlsWrite => "crypto/tls.(*Conn).Write",
            Self::SslNew => "SSL_new",
            Self::GnutlsInit => "gnutls_init",
        }
    }

    /// Whether it carries SQL (else: bytes of a TLS stream, or a free).
    pub fn is_sql(self) -> bool {
        matches!(
            self,
            Self::PqExec
                | Self::PqExecParams
                | Self::PqSendQuery
                | Self::PqSendQueryParams
                | Self::PqPrepare
                | Self::PqSendPrepare
        )
    }
}

/// Bytes of a TLS write the kernel reads to let a lone GET, HEAD or OPTIONS
/// request through without a stop (longer writes stop).
pub const API_PEEK: usize = 2048;
/// Bytes of an SQL string the kernel reads to let a lone SELECT or SHOW through.
pub const API_SQL_PEEK: usize = 256;
/// Capacity of `API_HELD` and of `API_CONNS`.
pub const MAX_API_HELD: u32 = 4_096;
pub const MAX_API_CONNS: u32 = 16_384;
/// `API_CONNS` value meaning "pass every write that does not start like a
/// request line" (a connection guardd reads as another protocol).
pub const API_OPAQUE: u64 = u64::MAX;
/// `API_CONNS` value meaning "HTTP/2: pass a write of whole frames of which
/// none carries a header block"; guardd reads every other write.
pub const API_HTTP2: u64 = u64::MAX - 1;
/// Frames of one write the kernel looks at (a write of more stops).
pub const API_HTTP2_FRAMES: u32 = 16;
/// Bytes of an HTTP/2 write with a GET's header block that the kernel copies
/// to guardd and lets through (a longer one stops). A power of two.
pub const API_HTTP2_COPY: usize = 512;
/// Leading fields of that block the kernel reads for `:method: GET`.
pub const API_HTTP2_FIELDS: u32 = 3;

/// An HTTP/2 write the kernel let through with a GET's header block in it,
/// for guardd to keep the connection's HPACK table: `event.kind` is
/// `ApiHttp2Passed`, `event.op` the hook, `event.root.ino` the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ApiWriteEvent {
    pub event: Event,
    /// The write's buffer (a write made again from the same buffer with the
    /// same bytes is OpenSSL's retry of it, read once).
    pub buf: u64,
    pub len: u64,
    pub bytes: [u8; API_HTTP2_COPY],
}

/// Value of `API_HELD`, keyed by thread id: a client call an API probe
/// stopped, until guardd has decided. The entry registers let guardd fail
/// a denied call (return to `ret` with the function's error value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ApiHeldEntry {
    pub ktime_ns: u64,
    /// The buffer (TLS) or query string (SQL), an address in the process.
    pub buf: u64,
    /// The buffer's length (0 for SQL: a C string).
    pub len: u64,
    /// `SSL *`, `gnutls_session_t` or `PGconn *`: names the connection.
    pub conn: u64,
    /// Stack pointer and return address at the function's entry.
    pub sp: u64,
    pub ret: u64,
    /// The probed instruction: where the thread must still be (or one
    /// instruction on) for guardd to fail its call.
    pub ip: u64,
    pub session_id: u32,
    /// The thread group (process) id.
    pub pid: u32,
    pub uid: u32,
    /// The probe's attach cookie (`API_COOKIE_*`).
    pub hook: u32,
}

/// Attach cookie of an API probe: the `ApiHook` in the low byte ...
pub const API_COOKIE_HOOK: u32 = 0xff;
/// ... and from bit 16 the offset of a field in the connection (the first
/// argument, Go's receiver; 0: not known). On OpenSSL's writes: `shutdown`
/// in its `SSL`; guardd fails a denied write by setting `SSL_SENT_SHUTDOWN`
/// there, so that OpenSSL refuses the write itself and the client closes
/// the connection. On Go's: `activeCall` in its `tls.Conn`, whose low bit
/// makes `Write` return `net.ErrClosed` the same way. On libpq's queries: the database name's pointer in its
/// `PGconn`, which guardd reads to name the database.
pub const API_COOKIE_FIELD_SHIFT: u32 = 16;
/// Set on the link of a probe event that several functions share (the
/// writes that follow the sessions): the low byte is then the event's
/// index, and `API_POINTS` has each function's own cookie under
/// `index << 12 | (probed address & 0xfff)` (a page offset is the same in
/// every process that maps the file).
pub const API_COOKIE_POINTS: u32 = 1 << 8;
/// Capacity of `API_POINTS`.
pub const MAX_API_POINTS: u32 = 1_024;

/// Key of `API_CONNS`: a connection of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ApiConnKey {
    pub pid: u32,
    pub _pad: u32,
    pub conn: u64,
}

// A change to any of these sizes (or to a field of a struct pinned as a map's
// key or value) must come with a new LAYOUT_VERSION.
const _: () = assert!(core::mem::size_of::<LsmOffsets>() == 56);
const _: () = assert!(core::mem::size_of::<GateRoot>() == 24);
const _: () = assert!(core::mem::size_of::<ReportCall>() == 32);
const _: () = assert!(core::mem::size_of::<ReportEvent>() == 64 + 16 + 2 * REPORT_PATH);
const _: () = assert!(core::mem::size_of::<GateHeldEntry>() == 48);
const _: () = assert!(core::mem::size_of::<GateDecisionKey>() == 24);
const _: () = assert!(core::mem::size_of::<GateDecision>() == 16);
const _: () = assert!(core::mem::size_of::<FileKey>() == 16);
const _: () = assert!(core::mem::size_of::<ExeNameOffsets>() == 60);
const _: () = assert!(core::mem::size_of::<SessionEntry>() == 16);
const _: () = assert!(core::mem::size_of::<HeldEntry>() == 16);
const _: () = assert!(core::mem::size_of::<Event>() == 64);
const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 20);
const _: () = assert!(core::mem::size_of::<ContinuedEntry>() == 16);
const _: () = assert!(core::mem::size_of::<ApiHeldEntry>() == 72);
const _: () = assert!(core::mem::size_of::<ApiConnKey>() == 16);
const _: () = assert!(core::mem::size_of::<ArgvFilter>() == 48);
const _: () = assert!(core::mem::size_of::<ArgvWordKey>() == 4 + ARGV_WORD_LEN);
const _: () = assert!(core::mem::size_of::<ApiWriteEvent>() == 64 + 16 + API_HTTP2_COPY);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data: repr(C), no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::SessionEntry {}
    unsafe impl aya::Pod for super::HeldEntry {}
    unsafe impl aya::Pod for super::ContinuedEntry {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::ExeNameOffsets {}
    unsafe impl aya::Pod for super::LsmOffsets {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::GateRoot {}
    unsafe impl aya::Pod for super::ReportCall {}
    unsafe impl aya::Pod for super::GateHeldEntry {}
    unsafe impl aya::Pod for super::GateDecisionKey {}
    unsafe impl aya::Pod for super::GateDecision {}
    unsafe impl aya::Pod for super::ApiHeldEntry {}
    unsafe impl aya::Pod for super::ApiConnKey {}
    unsafe impl aya::Pod for super::ArgvFilter {}
    unsafe impl aya::Pod for super::ArgvWordKey {}
}

/// Key of the `PROGRAMS` map for a program name: the kernel's `comm`, which
/// is the basename of the executed file (for a script too) cut to 15 bytes.
pub fn comm_key(name: &[u8]) -> Comm {
    let mut key = [0u8; COMM_LEN];
    let len = name.len().min(COMM_LEN - 1);
    key[..len].copy_from_slice(&name[..len]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_key_truncates_like_the_kernel() {
        assert_eq!(&comm_key(b"terraform")[..10], b"terraform\0");
        let long = comm_key(b"a-very-long-program-name");
        assert_eq!(&long[..15], b"a-very-long-pro");
        assert_eq!(long[15], 0);
    }

    #[test]
    fn event_kind_round_trips() {
        for kind in 1..=15 {
            assert_eq!(EventKind::from_u32(kind).unwrap() as u32, kind);
        }
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(16), None);
    }
}
