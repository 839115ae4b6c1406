//! The pin directory: its lock, its layout, and pinning again what was removed.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};

use super::{layout, mount_pseudo_fs, Kernel, KernelError};

/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Locks the pin directory for as long as the returned file is open: two
/// guardds on one pin directory would share its maps and take each other's
/// events, and a teardown would pull the programs from under a running one.
pub(super) fn lock_pin_dir(root: &Path, busy: &str) -> Result<fs::File, KernelError> {
    let pin_err = |err: std::io::Error| KernelError::Pin(format!("{}: {err}", root.display()));
    let dir = fs::File::open(root).map_err(pin_err)?;
    match rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(dir),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(KernelError::Pin(format!(
            "{busy} {} (stop it first, or give each its own --pin-dir)",
            root.display()
        ))),
        Err(err) => Err(pin_err(err.into())),
    }
}

/// The pin directory: `maps/NAME` and `links/NAME`.
#[derive(Clone)]
pub(super) struct Pins {
    pub(super) root: PathBuf,
}

impl Pins {
    pub(super) fn prepare(root: &Path) -> Result<Self, KernelError> {
        let pins = Self {
            root: root.to_path_buf(),
        };
        ensure_bpffs(root)?;
        for dir in ["maps", "links"] {
            fs::create_dir_all(root.join(dir))
                .map_err(|err| KernelError::Pin(format!("{}: {err}", root.join(dir).display())))?;
        }
        Ok(pins)
    }

    pub(super) fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    pub(super) fn link(&self, name: &str) -> PathBuf {
        self.root.join("links").join(name)
    }

    /// Pins `link` in place of the previous run's: the new program is attached
    /// before the old one is detached, so nothing runs unguarded in between.
    pub(super) fn replace_link(&self, name: &str, link: FdLink) -> Result<PinnedLink, KernelError> {
        let path = self.link(name);
        if path.exists() {
            match PinnedLink::from_pin(&path) {
                Ok(old) => drop(old.unpin()),
                Err(_) => drop(fs::remove_file(&path)),
            }
        }
        link.pin(&path)
            .map_err(|err| KernelError::Pin(format!("{}: {err}", path.display())))
    }

    /// Unpins (and so detaches) every link under `links/` that is not named in
    /// `ours`: those another version of guardd pinned under names this one
    /// does not use (programs renamed or dropped since). Called once this
    /// guardd's own links are attached and pinned, so that nothing runs
    /// unguarded in between. Returns what it found, each as `links/NAME`,
    /// with why it could not be removed.
    pub(super) fn remove_links_except(&self, ours: &[&str]) -> Vec<StaleLink> {
        let Ok(dir) = fs::read_dir(self.root.join("links")) else {
            return Vec::new();
        };
        let mut stale: Vec<StaleLink> = dir
            .filter_map(Result::ok)
            .filter(|entry| {
                !ours
                    .iter()
                    .any(|own| entry.file_name().to_str() == Some(own))
            })
            .map(|entry| {
                let path = entry.path();
                let removed = match PinnedLink::from_pin(&path) {
                    // Dropping the fd (the last reference) detaches the program.
                    Ok(link) => link.unpin().map(drop),
                    Err(_) => fs::remove_file(&path),
                };
                StaleLink {
                    pin: format!("links/{}", entry.file_name().to_string_lossy()),
                    left: removed.err().map(|err| err.to_string()),
                }
            })
            .collect();
        stale.sort_by(|a, b| a.pin.cmp(&b.pin));
        stale
    }
}

/// A link pinned under a name this guardd does not use, found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLink {
    /// `links/NAME`, under the pin directory.
    pub pin: String,
    /// Why it is still pinned (None: it was removed, its program detached).
    pub left: Option<String>,
}

/// Mounts bpffs at /sys/fs/bpf when the pin directory is there and it is not mounted.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    let bpffs = Path::new("/sys/fs/bpf");
    // f_type's width differs between architectures, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let is_bpffs = |path: &Path| {
        nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 as i64 == BPF_FS_MAGIC)
    };
    if pin_dir.starts_with(bpffs) && !is_bpffs(bpffs) {
        mount_pseudo_fs("bpf", bpffs).map_err(|err| {
            KernelError::Pin(format!("mounting bpffs at {}: {err}", bpffs.display()))
        })?;
    }
    let probe = pin_dir.ancestors().find(|p| p.exists()).unwrap_or(bpffs);
    if !is_bpffs(probe) {
        return Err(KernelError::Pin(format!(
            "{} is not on a bpf file system",
            pin_dir.display()
        )));
    }
    Ok(())
}

impl Kernel {
    /// Pins again every link and map whose pin someone removed (guardd's own
    /// fds kept them attached meanwhile); returns what was re-pinned. The
    /// pin directory itself is made again if it went.
    pub fn repin_missing(&mut self) -> Result<Vec<String>, KernelError> {
        let links_gone: Vec<String> = self
            .links
            .keys()
            .filter(|name| !self.pins.link(name).exists())
            .cloned()
            .collect();
        let maps_gone: Vec<&'static str> = self
            .maps
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !self.pins.map(name).exists())
            .collect();
        let marker = layout::marker(&self.pins.root);
        let unmarked = !marker.exists();
        if links_gone.is_empty() && maps_gone.is_empty() && !unmarked {
            return Ok(Vec::new());
        }
        Pins::prepare(&self.pins.root)?;
        let mut repinned = Vec::new();
        if unmarked {
            // Without it the next guardd would take these maps for another layout's.
            layout::mark(&self.pins.root)
                .map_err(|err| KernelError::Pin(format!("{}: {err}", marker.display())))?;
            repinned.extend(marker.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        for name in links_gone {
            let path = self.pins.link(&name);
            let link = FdLink::from(self.links.remove(&name).expect("listed above"));
            // A failed pin drops the fd, which detaches the program: say so.
            let pinned = link.pin(&path).map_err(|err| {
                KernelError::Pin(format!(
                    "{}: {err}: the program is DETACHED",
                    path.display()
                ))
            })?;
            self.links.insert(name.clone(), pinned);
            repinned.push(format!("links/{name}"));
        }
        for name in maps_gone {
            let path = self.pins.map(name);
            let (_, data) = self
                .maps
                .iter()
                .find(|(n, _)| *n == name)
                .expect("listed above");
            data.pin(&path)
                .map_err(|err| KernelError::Pin(format!("{}: {err}", path.display())))?;
            repinned.push(format!("maps/{name}"));
        }
        Ok(repinned)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pins.root
    }
}
