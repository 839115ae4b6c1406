//! Ending everything a guardd pinned, once none runs.
use std::{fs, path::Path};

use aya::{
    maps::{HashMap, MapData},
    programs::links::PinnedLink,
};
use guard_common::{names::map, ContinuedEntry, HeldEntry};

use super::{
    layout::{self, Found},
    pins::{lock_pin_dir, Pins},
    Continuation, KernelError,
};

/// Ends everything pinned under `pin_dir`: the links (which detaches the
/// programs) and the maps, of whichever layout. Returns the pids HELD and
/// GATE_HELD still list, each with the SIGCONT another process sent it
/// (known only for maps of this layout), so the caller can deny them.
pub fn teardown(pin_dir: &Path) -> Result<Vec<(u32, Option<Continuation>)>, KernelError> {
    let pins = Pins {
        root: pin_dir.to_path_buf(),
    };
    let _lock = match lock_pin_dir(pin_dir, "guardd is running with") {
        Err(KernelError::Pin(why)) if pin_dir.exists() => return Err(KernelError::Pin(why)),
        other => other.ok(),
    };
    let found = layout::found(pin_dir);
    if let Found::Other(version) = found {
        tracing::warn!(
            "pins under {} have {}: only the pids HELD and GATE_HELD list are read",
            pin_dir.display(),
            layout::describe(version)
        );
    }
    let mut held = Vec::new();
    if let Ok(data) = MapData::from_pin(pins.map(map::HELD)) {
        let pids = layout::pids(&data).unwrap_or_else(|err| {
            tracing::error!("HELD: {err}: the state file alone names the held processes");
            Vec::new()
        });
        // Entries are read only where their layout is this guardd's.
        let entries = (found == Found::Same)
            .then(|| HashMap::<_, u32, HeldEntry>::try_from(aya::maps::Map::HashMap(data)).ok())
            .flatten();
        let continued = entries
            .as_ref()
            .and_then(|_| MapData::from_pin(pins.map(map::CONTINUED)).ok())
            .and_then(|data| {
                HashMap::<_, u32, ContinuedEntry>::try_from(aya::maps::Map::LruHashMap(data)).ok()
            });
        held = pids
            .into_iter()
            .map(|pid| {
                let entry = entries.as_ref().and_then(|e| e.get(&pid, 0).ok());
                let mark = continued.as_ref().and_then(|c| c.get(&pid, 0).ok());
                let continuation = mark
                    .zip(entry)
                    .and_then(|(mark, entry)| Continuation::of_stop(&mark, &entry));
                (pid, continuation)
            })
            .collect();
    }
    // Processes the LSM gate stopped: without the programs their call would run.
    if let Ok(data) = MapData::from_pin(pins.map(map::GATE_HELD)) {
        match layout::pids(&data) {
            Ok(pids) => held.extend(pids.into_iter().map(|pid| (pid, None))),
            Err(err) => tracing::error!("GATE_HELD: {err}"),
        }
    }
    // Every link and map pinned here, also those of programs and maps another
    // layout had and this one has not.
    for entry in fs::read_dir(pin_dir.join("links"))
        .into_iter()
        .flatten()
        .flatten()
    {
        match PinnedLink::from_pin(entry.path()) {
            Ok(link) => drop(link.unpin()),
            Err(_) => drop(fs::remove_file(entry.path())),
        }
    }
    // The API probes' tracefs events, now that no link holds them.
    let group = super::uprobe_events::group_of(pin_dir);
    for (event, err) in super::uprobe_events::remove_group(&group) {
        tracing::error!("tracefs probe {event} not removed: {err}");
    }
    layout::unmark(pin_dir);
    for entry in fs::read_dir(pin_dir.join("maps"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = fs::remove_file(entry.path());
    }
    for dir in ["maps", "links", ""] {
        let _ = fs::remove_dir(pin_dir.join(dir));
    }
    Ok(held)
}
