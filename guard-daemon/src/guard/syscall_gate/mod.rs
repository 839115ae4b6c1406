//! The syscall gate in guardd, one file per mechanism: `lsm` (BPF LSM hooks,
//! every session), `seccomp` (user notification in `guardctl run`
//! sessions) and `report` (tracepoints that only audit, where neither runs).
use super::*;
use crate::policy::protect::Protection;

mod cover;
mod lsm;
mod report;
mod seccomp;

pub(in crate::guard) use lsm::LsmGate;
pub(in crate::guard) use seccomp::{home_of, GateRequest};

/// What the syscall gates keep between calls.
#[derive(Default)]
pub(in crate::guard) struct SyscallGates {
    /// Decisions on gated trees, for the rest of the process's calls there.
    decisions: std::collections::HashMap<crate::holds::GateGroup, bool>,
    /// The BPF LSM gate's roots and the processes it has decisions for.
    lsm: LsmGate,
    /// `[[protect]]` with `~` and `{workspace}` expanded, per session owner
    /// uid and workspace.
    protected_sets: std::collections::HashMap<
        (u32, Option<std::path::PathBuf>),
        crate::policy::protect::ProtectedSet,
    >,
    /// The `[[protect]]` entries the listeners' threads answer uncovered
    /// calls by (published on first use and on each policy load).
    published: crate::seccomp::SharedProtections,
    publishing: bool,
}

impl SyscallGates {
    /// A new policy: the expanded `[[protect]]` sets are built again on
    /// use, and the listeners' threads take its entries.
    pub(in crate::guard) fn policy_changed(&mut self, protections: &[Protection]) {
        self.protected_sets.clear();
        if self.publishing {
            crate::seccomp::publish(&self.published, protections);
        }
    }
}
