//! The syscall gate in guardd, one file per mechanism: `lsm` (BPF LSM hooks,
//! every session), `seccomp` (user notification in `guardctl run`
//! sessions) and `report` (tracepoints that only audit, where neither runs).
use super::*;

mod lsm;
mod report;
mod seccomp;

pub(in crate::guard) use lsm::LsmGate;
pub(in crate::guard) use seccomp::GateRequest;
