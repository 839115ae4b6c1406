//! Names of the maps and programs in the eBPF object, as the daemon looks
//! them up, pins them and tears them down. aya's macros take the names from
//! the identifiers in `guard-ebpf` (a `#[map(name = ...)]` wants a literal),
//! so guard-daemon's tests check each of these against the built object.

/// Map names (the identifiers of the `#[map]` statics in `guard-ebpf/src/maps.rs`).
pub mod map {
    pub const SESSIONS: &str = "SESSIONS";
    pub const HELD: &str = "HELD";
    pub const CONTINUED: &str = "CONTINUED";
    pub const PROGRAMS: &str = "PROGRAMS";
    pub const EVENTS: &str = "EVENTS";
    pub const PROTECTED: &str = "PROTECTED";
    pub const GUARDD: &str = "GUARDD";
    pub const SETTINGS: &str = "SETTINGS";
    pub const GATE_ROOTS: &str = "GATE_ROOTS";
    pub const GATE_HELD: &str = "GATE_HELD";
    pub const GATE_DECIDED: &str = "GATE_DECIDED";
    pub const REPORT_CALLS: &str = "REPORT_CALLS";
    pub const OVERFLOWS: &str = "OVERFLOWS";
    pub const EXEC_DIRS: &str = "EXEC_DIRS";
    pub const API_HELD: &str = "API_HELD";
    pub const API_CONNS: &str = "API_CONNS";
    pub const API_SCRATCH: &str = "API_SCRATCH";
    pub const API_HELD_PROCS: &str = "API_HELD_PROCS";
    pub const API_POINTS: &str = "API_POINTS";
    pub const ARGV_FILTERS: &str = "ARGV_FILTERS";
    pub const ARGV_WORDS: &str = "ARGV_WORDS";
    pub const ARGV_SCRATCH: &str = "ARGV_SCRATCH";
    pub const KERNEL_COUNTS: &str = "KERNEL_COUNTS";
    pub const REPORT_QUIET_OPENS: &str = "REPORT_QUIET_OPENS";

    /// Every map, each pinned under the pin directory.
    pub const ALL: [&str; 24] = [
        SESSIONS,
        HELD,
        PROGRAMS,
        EVENTS,
        PROTECTED,
        GUARDD,
        GATE_ROOTS,
        GATE_HELD,
        GATE_DECIDED,
        REPORT_CALLS,
        OVERFLOWS,
        CONTINUED,
        SETTINGS,
        EXEC_DIRS,
        API_HELD,
        API_CONNS,
        API_SCRATCH,
        API_HELD_PROCS,
        API_POINTS,
        ARGV_FILTERS,
        ARGV_WORDS,
        ARGV_SCRATCH,
        KERNEL_COUNTS,
        REPORT_QUIET_OPENS,
    ];
}

/// Program names (the functions of `guard-ebpf`).
pub mod program {
    pub const SESSIONS_FORK: &str = "sessions_fork";
    pub const SESSIONS_EXIT: &str = "sessions_exit";
    pub const EXEC_GATE: &str = "exec_gate";
    pub const HOLDS_SIGNAL_GENERATE: &str = "holds_signal_generate";
    pub const REPORT_SYSCALL: &str = "report_syscall";

    pub const SELF_PROTECT_TASK_KILL: &str = "self_protect_task_kill";
    pub const SELF_PROTECT_PTRACE: &str = "self_protect_ptrace";
    pub const SELF_PROTECT_BPF: &str = "self_protect_bpf";
    pub const SELF_PROTECT_BPF_6_9: &str = "self_protect_bpf_6_9";
    pub const SELF_PROTECT_FILE_OPEN: &str = "self_protect_file_open";
    pub const SELF_PROTECT_PATH_UNLINK: &str = "self_protect_path_unlink";
    pub const SELF_PROTECT_PATH_RMDIR: &str = "self_protect_path_rmdir";
    pub const SELF_PROTECT_PATH_MKNOD: &str = "self_protect_path_mknod";
    pub const SELF_PROTECT_PATH_RENAME: &str = "self_protect_path_rename";
    pub const SELF_PROTECT_PATH_RENAME_5_7: &str = "self_protect_path_rename_5_7";
    pub const SELF_PROTECT_PATH_TRUNCATE: &str = "self_protect_path_truncate";
    pub const GATE_PATH_UNLINK: &str = "gate_path_unlink";
    pub const GATE_PATH_RMDIR: &str = "gate_path_rmdir";
    pub const GATE_PATH_LINK: &str = "gate_path_link";
    pub const GATE_PATH_MKNOD: &str = "gate_path_mknod";
    pub const GATE_PATH_RENAME: &str = "gate_path_rename";
    pub const GATE_PATH_RENAME_5_7: &str = "gate_path_rename_5_7";
    pub const GATE_PATH_TRUNCATE: &str = "gate_path_truncate";
    pub const GATE_PATH_CHMOD: &str = "gate_path_chmod";
    pub const GATE_PATH_CHOWN: &str = "gate_path_chown";
    pub const GATE_FILE_OPEN: &str = "gate_file_open";
    pub const ESCAPE_UNIX_STREAM_CONNECT: &str = "escape_unix_stream_connect";
    pub const API_TLS_WRITE: &str = "api_tls_write";
    pub const API_SQL_QUERY: &str = "api_sql_query";
    pub const API_TLS_FREE: &str = "api_tls_free";
    pub const API_DLOPEN_RETURN: &str = "api_dlopen_return";
    pub const API_TLS_START: &str = "api_tls_start";

    /// Every program of the object.
    pub const ALL: [&str; 32] = [
        SESSIONS_FORK,
        SESSIONS_EXIT,
        EXEC_GATE,
        HOLDS_SIGNAL_GENERATE,
        REPORT_SYSCALL,
        SELF_PROTECT_TASK_KILL,
        SELF_PROTECT_PTRACE,
        SELF_PROTECT_BPF,
        SELF_PROTECT_BPF_6_9,
        SELF_PROTECT_FILE_OPEN,
        SELF_PROTECT_PATH_UNLINK,
        SELF_PROTECT_PATH_RMDIR,
        SELF_PROTECT_PATH_MKNOD,
        SELF_PROTECT_PATH_RENAME,
        SELF_PROTECT_PATH_RENAME_5_7,
        SELF_PROTECT_PATH_TRUNCATE,
        GATE_PATH_UNLINK,
        GATE_PATH_RMDIR,
        GATE_PATH_MKNOD,
        GATE_PATH_RENAME,
        GATE_PATH_RENAME_5_7,
        GATE_PATH_LINK,
        GATE_PATH_TRUNCATE,
        GATE_PATH_CHMOD,
        GATE_PATH_CHOWN,
        GATE_FILE_OPEN,
        ESCAPE_UNIX_STREAM_CONNECT,
        API_TLS_WRITE,
        API_SQL_QUERY,
        API_TLS_FREE,
        API_DLOPEN_RETURN,
        API_TLS_START,
    ];
}
