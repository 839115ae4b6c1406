//! Ending everything a guardd pinned, once none runs.
use std::{fs, path::Path};

use aya::{
    maps::{HashMap, MapData},
    programs::links::PinnedLink,
};
use guard_common::{names::map, ContinuedEntry, GateHeldEntry, HeldEntry};

use super::{
    load::{LSM_PROGRAMS, PROGRAMS},
    pins::{lock_pin_dir, Pins},
    report::{report_link, REPORT_TRACEPOINTS},
    Continuation, KernelError,
};

/// Ends everything pinned under `pin_dir`: the links (which detaches the
/// programs) and the maps. Returns the pids HELD and GATE_HELD still list,
/// each with the SIGCONT another process sent it, so the caller can deny them.
pub fn teardown(pin_dir: &Path) -> Result<Vec<(u32, Option<Continuation>)>, KernelError> {
    let pins = Pins {
        root: pin_dir.to_path_buf(),
    };
    let _lock = match lock_pin_dir(pin_dir, "guardd is running with") {
        Err(KernelError::Pin(why)) if pin_dir.exists() => return Err(KernelError::Pin(why)),
        other => other.ok(),
    };
    let mut held = Vec::new();
    if let Ok(data) = MapData::from_pin(pins.map(map::HELD)) {
        if let Ok(map) = HashMap::<_, u32, HeldEntry>::try_from(aya::maps::Map::HashMap(data)) {
            let continued = MapData::from_pin(pins.map(map::CONTINUED))
                .ok()
                .and_then(|data| {
                    HashMap::<_, u32, ContinuedEntry>::try_from(aya::maps::Map::LruHashMap(data))
                        .ok()
                });
            held = map
                .iter()
                .filter_map(Result::ok)
                .map(|(pid, entry)| {
                    let mark = continued.as_ref().and_then(|c| c.get(&pid, 0).ok());
                    (
                        pid,
                        mark.and_then(|mark| Continuation::of_stop(&mark, &entry)),
                    )
                })
                .collect();
        }
    }
    // Processes the LSM gate stopped: without the programs their call would run.
    if let Ok(data) = MapData::from_pin(pins.map(map::GATE_HELD)) {
        if let Ok(map) = HashMap::<_, u32, GateHeldEntry>::try_from(aya::maps::Map::HashMap(data)) {
            held.extend(map.keys().filter_map(Result::ok).map(|pid| (pid, None)));
        }
    }
    let names = PROGRAMS
        .iter()
        .map(|(name, _, _)| *name)
        .chain(LSM_PROGRAMS.iter().map(|(name, _, _)| *name));
    let report_links = REPORT_TRACEPOINTS.iter().map(|tp| report_link(tp));
    for name in names.map(str::to_string).chain(report_links) {
        if let Ok(link) = PinnedLink::from_pin(pins.link(&name)) {
            drop(link.unpin());
        }
    }
    for name in map::ALL {
        let _ = fs::remove_file(pins.map(name));
    }
    for dir in ["maps", "links", ""] {
        let _ = fs::remove_dir(pin_dir.join(dir));
    }
    Ok(held)
}
