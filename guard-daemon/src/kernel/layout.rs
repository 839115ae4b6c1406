//! The layout version of the pinned maps (`guard_common::LAYOUT_VERSION`).
//!
//! It is kept as an empty directory `layout-N` next to `maps/` and `links/`:
//! bpffs holds only BPF objects and directories, and a name is read alike by
//! `ls`, by `guardd --teardown` and by the tests.
//!
//! Maps of another layout (or of none: pins from before the marker) are never
//! loaded on. Their pins are removed before fresh maps are loaded, and of the
//! old HELD and GATE_HELD only the keys are read (a pid, when the map's key
//! size says so), never a value: a value of another layout would be misread.
use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use guard_common::{names::map, LAYOUT_VERSION};

use super::{pins::Pins, KernelError};

const PREFIX: &str = "layout-";

/// What a pin directory says of its maps' layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No map is pinned: nothing to reuse.
    NoPins,
    /// Maps of this guardd's layout: they are reused.
    Same,
    /// Maps of another layout; None: unmarked (pins from before the marker)
    /// or marked unreadably.
    Other(Option<u32>),
}

/// The layout of the maps pinned under `root`.
pub(super) fn found(root: &Path) -> Found {
    let maps_pinned = fs::read_dir(root.join("maps")).is_ok_and(|mut dir| dir.next().is_some());
    let versions: Vec<Option<u32>> = markers(root).into_iter().map(|(_, v)| v).collect();
    classify(maps_pinned, &versions)
}

fn classify(maps_pinned: bool, markers: &[Option<u32>]) -> Found {
    match markers {
        _ if !maps_pinned => Found::NoPins,
        [Some(version)] if *version == LAYOUT_VERSION => Found::Same,
        [one] => Found::Other(*one),
        // None, or several (a run that ended while marking): trust none.
        _ => Found::Other(None),
    }
}

/// Some(version) for a marker's name (Some(None): a marker whose version
/// does not parse), None for any other name.
fn parse(name: &str) -> Option<Option<u32>> {
    let version = name.strip_prefix(PREFIX)?;
    Some(
        version
            .parse()
            .ok()
            .filter(|_| version.bytes().all(|b| b.is_ascii_digit())),
    )
}

fn markers(root: &Path) -> Vec<(PathBuf, Option<u32>)> {
    let Ok(dir) = fs::read_dir(root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse(entry.file_name().to_str()?)?;
            Some((entry.path(), version))
        })
        .collect()
}

/// This guardd's marker.
pub(super) fn marker(root: &Path) -> PathBuf {
    root.join(format!("{PREFIX}{LAYOUT_VERSION}"))
}

/// Marks the maps pinned under `root` as of this guardd's layout (and of no other).
pub(super) fn mark(root: &Path) -> io::Result<()> {
    let own = marker(root);
    for (path, _) in markers(root) {
        if path != own {
            fs::remove_dir(&path)?;
        }
    }
    match fs::create_dir(&own) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => Err(err),
        _ => Ok(()),
    }
}

/// Removes every marker (teardown, and before the maps they describe go).
pub(super) fn unmark(root: &Path) {
    for (path, _) in markers(root) {
        let _ = fs::remove_dir(path);
    }
}

/// For the audit log and status.
pub fn describe(version: Option<u32>) -> String {
    match version {
        Some(version) => format!("layout {version}"),
        None => "no readable layout marker (pins from before layout versions)".into(),
    }
}

/// The pids a map keyed by pid lists, from its keys alone (its values may be
/// of another layout). Bounded: keys deleted mid-walk make it start over.
pub(super) fn pids(data: &MapData) -> Result<Vec<u32>, String> {
    let info = data.info().map_err(|err| err.to_string())?;
    if info.key_size() as usize != size_of::<u32>() {
        return Err(format!(
            "its keys are {} bytes, not a pid's 4",
            info.key_size()
        ));
    }
    /// `union bpf_attr` as BPF_MAP_GET_NEXT_KEY reads it.
    #[repr(C)]
    struct NextKey {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let fd = data.fd().as_fd().as_raw_fd();
    let mut pids = Vec::new();
    let mut key: Option<u32> = None;
    for _ in 0..2 * info.max_entries().max(1) {
        let mut next = 0u32;
        let attr = NextKey {
            map_fd: fd as u32,
            _pad: 0,
            key: key.as_ref().map_or(0, |k| k as *const u32 as u64),
            next_key: &mut next as *mut u32 as u64,
        };
        // SAFETY: `attr` and the key buffers it points to live across the
        // call and are the sizes the kernel reads and writes (4-byte keys).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKey,
                size_of::<NextKey>(),
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(format!("reading its keys: {err}"));
        }
        pids.push(next);
        key = Some(next);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// What a start on pins of another layout found, for guardd to re-hold.
#[derive(Debug, Clone)]
pub struct LayoutChange {
    /// The old pins' version (None: unmarked).
    pub found: Option<u32>,
    /// Pids the old HELD listed (Err: why it could not be read).
    pub held: Result<Vec<u32>, String>,
    /// Pids the old GATE_HELD listed.
    pub gate_held: Result<Vec<u32>, String>,
}

/// The maps of another layout, unpinned but kept open until the new
/// programs have replaced the old ones.
pub(super) struct OldPins {
    found: Option<u32>,
    held: Result<MapData, String>,
    gate_held: Result<MapData, String>,
}

impl OldPins {
    /// Keeps the old HELD and GATE_HELD open, then removes the marker and
    /// every map pin (the old programs keep their maps through their links
    /// until the new programs replace them).
    pub(super) fn set_aside(pins: &Pins, found: Option<u32>) -> Result<Self, KernelError> {
        let open = |name| MapData::from_pin(pins.map(name)).map_err(|err| err.to_string());
        let old = Self {
            found,
            held: open(map::HELD),
            gate_held: open(map::GATE_HELD),
        };
        unmark(&pins.root);
        let maps = pins.root.join("maps");
        let pin_err = |err: io::Error| KernelError::Pin(format!("{}: {err}", maps.display()));
        for entry in fs::read_dir(&maps).map_err(pin_err)? {
            fs::remove_file(entry.map_err(pin_err)?.path()).map_err(pin_err)?;
        }
        Ok(old)
    }

    /// Once the new programs are attached (and links no program of this
    /// guardd has are gone, `Pins::remove_links_except`): reads the pids the
    /// old maps listed, what the old programs stopped until they were
    /// detached included.
    pub(super) fn finish(self) -> LayoutChange {
        LayoutChange {
            found: self.found,
            held: self.held.and_then(|data| pids(&data)),
            gate_held: self.gate_held.and_then(|data| pids(&data)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pins_marked_with_this_layout_are_reused() {
        let this = Some(LAYOUT_VERSION);
        assert_eq!(classify(false, &[]), Found::NoPins);
        assert_eq!(classify(false, &[Some(0)]), Found::NoPins);
        assert_eq!(classify(true, &[this]), Found::Same);
        assert_eq!(classify(true, &[]), Found::Other(None));
        assert_eq!(classify(true, &[None]), Found::Other(None));
        assert_eq!(
            classify(true, &[Some(LAYOUT_VERSION + 1)]),
            Found::Other(Some(LAYOUT_VERSION + 1))
        );
        assert_eq!(classify(true, &[this, Some(0)]), Found::Other(None));
    }

    #[test]
    fn markers_are_named_by_their_version() {
        assert_eq!(parse("layout-1"), Some(Some(1)));
        assert_eq!(parse("layout-12"), Some(Some(12)));
        assert_eq!(parse("layout-+1"), Some(None));
        assert_eq!(parse("layout-x"), Some(None));
        assert_eq!(parse("maps"), None);
        let root = std::env::temp_dir().join(format!("agent-guard-layout-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("maps")).unwrap();
        assert_eq!(found(&root), Found::NoPins);
        fs::write(root.join("maps/HELD"), "").unwrap();
        assert_eq!(found(&root), Found::Other(None));
        fs::create_dir(root.join("layout-0")).unwrap();
        assert_eq!(found(&root), Found::Other(Some(0)));
        mark(&root).unwrap();
        assert_eq!(found(&root), Found::Same);
        assert!(!root.join("layout-0").exists());
        mark(&root).unwrap();
        unmark(&root);
        assert_eq!(found(&root), Found::Other(None));
        fs::remove_dir_all(&root).unwrap();
    }
}
