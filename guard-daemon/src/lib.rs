//! agent-guard: holds destructive commands run by AI coding agents until a
//! human approves them. Reading order, kernel to audit log:
//! `kernel` (programs, maps) -> `daemon` (event loop) -> `guard` (sessions,
//! policy, holds, approvals) -> `policy` -> `holds` -> `server`/`protocol`
//! (control socket) -> `audit`.
pub mod approval;
pub mod audit;
pub mod btf;
pub mod client;
pub mod daemon;
pub mod docs;
pub mod escape;
pub mod fuzzing;
pub mod gate;
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
pub mod protected;
pub mod protocol;
pub mod server;
pub mod state;
pub mod stats;
pub mod tracer;
