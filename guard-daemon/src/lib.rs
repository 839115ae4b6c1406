//! agent-guard: holds destructive commands run by AI coding agents until a
//! human approves them. Reading order, kernel to audit log: `kernel`
//! (programs, maps) -> `daemon` (event reader) -> `guard` (events,
//! exec_gate, approvals, finish) -> `policy` -> `request` -> `holds` ->
//! `server`/`protocol` (control socket) -> `audit`.
//!
//! Words (docs/architecture.md has the long form):
//! - *session*: an agent's process tree, launched by `guardctl run` or
//!   detected at an agent's exec; the kernel's `SESSIONS` map lists it.
//! - *stop*: a process the kernel stopped for guardd to judge; *hold*: a stop
//!   waiting for people (`holds::Hold`).
//! - *request*: what a stopped process runs and where, read from /proc once
//!   (`request::Request`); *hold terms*: what its rule asks (`policy::HoldTerms`).
//! - *exec gate*: stops watched programs at exec. *syscall gate*: holds file
//!   calls on `[[protect]]` paths, by the BPF LSM, seccomp (`seccomp`) or report-only
//!   tracepoints (`guard::syscall_gate`).
//! - *escape checks*: calls that make outside processes do a session's work.
//! - *self-protection*: keeping sessions off guardd, its holds and its own
//!   files (`protected`).
//! - *outcome* and *finish*: how a stop or hold ends, and the one function
//!   every end goes through (`guard::finish`).
pub mod api;
pub mod approval;
pub mod audit;
pub mod btf;
pub mod client;
pub mod daemon;
pub mod docs;
pub mod escape;
pub mod fleet;
pub mod freezer;
pub mod fuzzing;
pub mod guard;
pub mod holds;
pub mod kernel;
pub mod notice;
pub mod notify;
pub mod pam;
pub mod policy;
pub mod policy_lock;
pub mod polkit;
pub mod process;
pub mod procfs;
pub mod program_files;
pub mod protected;
pub mod protocol;
pub mod request;
pub mod seccomp;
pub mod server;
pub mod state;
pub mod stats;
pub mod systemd;
pub mod tracer;
