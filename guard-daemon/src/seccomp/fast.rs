//! Answers, on the listener's own thread and without guardd's lock, the
//! gated calls no `[[protect]]` entry covers: most of a session's file
//! calls. The entries are those guardd published for the policy in force;
//! until it has, and for a session without a known owner, every call takes
//! guardd's path.
use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use super::Call;
use crate::policy::protect::{Places, ProtectedSet, Protection};

/// The `[[protect]]` entries in force, published on each policy load.
#[derive(Debug, Default)]
pub struct Published {
    generation: u64,
    entries: Option<Arc<Vec<Protection>>>,
}

pub type SharedProtections = Arc<RwLock<Published>>;

/// Puts `entries` in force for every listener's next call.
pub fn publish(shared: &SharedProtections, entries: &[Protection]) {
    let mut published = shared.write().unwrap_or_else(|e| e.into_inner());
    published.generation += 1;
    published.entries = Some(Arc::new(entries.to_vec()));
}

/// One session's view: its owner's home and its workspace expand `~` and
/// `{workspace}`, as guardd's own check does.
pub struct FastPath {
    shared: SharedProtections,
    home: PathBuf,
    workspace: Option<PathBuf>,
    built: Option<(u64, Arc<Vec<Protection>>, ProtectedSet)>,
}

impl FastPath {
    pub fn new(shared: SharedProtections, home: PathBuf, workspace: Option<PathBuf>) -> Self {
        Self {
            shared,
            home,
            workspace,
            built: None,
        }
    }

    /// Whether no protection covers a path of `call` (it continues). False
    /// where that is not known yet: guardd decides.
    pub fn uncovered(&mut self, call: &Call) -> bool {
        let (generation, entries) = {
            let published = self.shared.read().unwrap_or_else(|e| e.into_inner());
            match &published.entries {
                None => return false,
                Some(entries) => (published.generation, entries.clone()),
            }
        };
        if self
            .built
            .as_ref()
            .is_none_or(|(built, ..)| *built != generation)
        {
            let places = Places {
                home: &self.home,
                workspace: self.workspace.as_deref(),
            };
            let set = ProtectedSet::new(&entries, places);
            self.built = Some((generation, entries, set));
        }
        let Some((_, entries, set)) = &self.built else {
            return false;
        };
        let operations = || std::iter::once(call.operation).chain(call.also);
        !call
            .paths
            .iter()
            .any(|path| operations().any(|operation| set.find(entries, path, operation).is_some()))
    }
}
