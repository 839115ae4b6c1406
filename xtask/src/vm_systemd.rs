//! `cargo xtask vm-test`, second image: the .deb under real systemd. A Debian
//! root file system of the host's release (mmdebstrap: systemd, dbus,
//! polkitd, sudo, OpenSSH's client) is the initramfs of the same cloud
//! kernel, with systemd as init; a unit in it runs
//! `tests/systemd/install-as-admin.sh`, which installs the package with apt
//! and drives it as an administrator would: README.md's "Installing as a
//! service". Booted with the BPF LSM (everything, an upgrade to a guardd of
//! the next map layout among it) and without it (install, hold, approvals,
//! remove and purge).
use std::{
    fs,
    hash::{Hash as _, Hasher as _},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{build, cmd, dist, vm};

/// What the image has besides Debian's minimal base (apt, dpkg, coreutils,
/// passwd, util-linux): init, a bus and polkit for approvals, and ssh-keygen
/// for the second approver's signing key.
const INCLUDE: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "polkitd",
    "libpam-systemd",
    "sudo",
    "procps",
    "openssh-client",
    "libseccomp2",
];
const RESULT: &str = "AGENT-GUARD-SYSTEMD-RESULT:";
const SECURITY: &str = "AGENT-GUARD-SYSTEMD-SECURITY:";
const TIMEOUT: Duration = Duration::from_secs(20 * 60);
const SCRIPT: &str = "tests/systemd/install-as-admin.sh";
const TEST_UNIT: &str = "[Unit]
Description=agent-guard: install and drive the package as an administrator
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/lib/agent-guard-test/install-as-admin.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
ExecStopPost=/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
";

pub fn run(kernel: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let base = rootfs()?;
    let current = deb_in(&dist_of_this_build()?)?;
    let next = deb_in(&next_layout_build()?)?;
    let initrd = initrd(&base, &current, &next)?;
    let mut failed = Vec::new();
    // AGENT_GUARD_SYSTEMD_MODE=full or short boots only that one (while working on it).
    let only = std::env::var("AGENT_GUARD_SYSTEMD_MODE").ok();
    let modes = [
        ("full", "lockdown,capability,bpf"),
        ("short", "lockdown,capability"),
    ];
    for (mode, lsm) in modes
        .into_iter()
        .filter(|(mode, _)| only.as_deref().is_none_or(|o| o == *mode))
    {
        let append = format!(
            "console=ttyS0 loglevel=3 quiet rdinit=/sbin/init systemd.show_status=false \
             lsm={lsm} panic=-1 softlockup_panic=1 agent_guard_test={mode}"
        );
        let (outcome, console) = vm::boot(kernel, &initrd, &append, RESULT, TIMEOUT)?;
        if let Some(score) = console
            .iter()
            .find_map(|line| line.trim().strip_prefix(SECURITY))
        {
            eprintln!("xtask: systemd-analyze security: {}", score.trim());
        }
        match outcome.as_str() {
            "ok" => eprintln!("xtask: vm-test (systemd, lsm={lsm}) passed"),
            _ => failed.push(format!("lsm={lsm}: {outcome}")),
        }
    }
    if !failed.is_empty() {
        bail!("vm-test (systemd): {}", failed.join(" / "));
    }
    eprintln!(
        "xtask: vm-test (systemd) passed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// The host's Debian release: the package's binaries link its glibc.
fn codename() -> anyhow::Result<String> {
    let release = fs::read_to_string("/etc/os-release").context("/etc/os-release")?;
    release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
        .context("no VERSION_CODENAME in /etc/os-release")
}

/// The root file system as a cpio archive, built once per release and
/// package list and cached.
fn rootfs() -> anyhow::Result<PathBuf> {
    let codename = codename()?;
    let mut key = std::collections::hash_map::DefaultHasher::new();
    INCLUDE.hash(&mut key);
    let cpio = vm::cache_dir()?.join(format!(
        "debian-{codename}-systemd-{:016x}.cpio",
        key.finish()
    ));
    if cpio.exists() {
        return Ok(cpio);
    }
    let root = vm::cache_dir()?.join(format!("debian-{codename}-systemd.root"));
    let _ = fs::remove_dir_all(&root);
    cmd::run(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--quiet"])
            .arg(format!("--include={}", INCLUDE.join(",")))
            .arg(&codename)
            .arg(&root),
    )?;
    let partial = cpio.with_extension("partial");
    pack(&root, &partial)?;
    fs::rename(&partial, &cpio)?;
    fs::remove_dir_all(&root)?;
    Ok(cpio)
}

fn pack(dir: &Path, cpio: &Path) -> anyhow::Result<()> {
    cmd::run_in(
        dir,
        Command::new("sh").args([
            "-c",
            &format!(
                "find . | cpio --quiet -o -H newc -R 0:0 > '{}'",
                cpio.display()
            ),
        ]),
    )
}

fn work_dir() -> PathBuf {
    cmd::workspace_root().join("target/vm-systemd")
}

/// target/dist, packaged from the release build (`cargo xtask test` has
/// just made both; `cargo xtask vm-test` alone makes them here).
fn dist_of_this_build() -> anyhow::Result<PathBuf> {
    build::release_build()?;
    dist::package()?;
    Ok(cmd::workspace_root().join("target/dist"))
}

/// Version N+1 for the upgrade test: this source built with the next map
/// layout (feature `next-layout`), packaged as VERSION+next-layout. The
/// feature keeps its own build artifacts, so the release build is only
/// relinked afterwards.
fn next_layout_build() -> anyhow::Result<PathBuf> {
    build::release_build_with(&format!(
        "{},guard-daemon/next-layout",
        build::DAEMON_FEATURES
    ))?;
    let release = cmd::workspace_root().join("target/release");
    let binaries = work_dir().join("next-layout/bin");
    fs::create_dir_all(&binaries)?;
    for name in ["guardd", "guardctl"] {
        fs::copy(release.join(name), binaries.join(name))?;
    }
    build::release_build()?;
    let dist = work_dir().join("next-layout/dist");
    let version = format!("{}+next-layout", env!("CARGO_PKG_VERSION"));
    dist::package_build(&binaries, &version, &dist)?;
    Ok(dist)
}

fn deb_in(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("no .deb in {}", dir.display()))
}

/// The root file system followed by a second archive with the packages,
/// the test script and its unit (the kernel unpacks both, in order).
fn initrd(base: &Path, current: &Path, next: &Path) -> anyhow::Result<PathBuf> {
    let overlay = work_dir().join("overlay");
    let _ = fs::remove_dir_all(&overlay);
    let packages = overlay.join("root/agent-guard");
    fs::create_dir_all(packages.join("upgrade"))?;
    fs::copy(current, packages.join(current.file_name().unwrap()))?;
    fs::copy(
        next,
        packages.join("upgrade").join(next.file_name().unwrap()),
    )?;
    let tests = overlay.join("usr/local/lib/agent-guard-test");
    fs::create_dir_all(&tests)?;
    let script = tests.join("install-as-admin.sh");
    fs::copy(cmd::workspace_root().join(SCRIPT), &script)?;
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let units = overlay.join("etc/systemd/system");
    fs::create_dir_all(units.join("multi-user.target.wants"))?;
    fs::write(units.join("agent-guard-vm-test.service"), TEST_UNIT)?;
    symlink(
        "../agent-guard-vm-test.service",
        units.join("multi-user.target.wants/agent-guard-vm-test.service"),
    )?;
    // The console is the test's output, not a login prompt.
    symlink("/dev/null", units.join("serial-getty@ttyS0.service"))?;
    fs::write(overlay.join("etc/hostname"), "agent-guard-vm\n")?;
    let overlay_cpio = work_dir().join("overlay.cpio");
    pack(&overlay, &overlay_cpio)?;
    let initrd = work_dir().join("initrd.cpio");
    let mut out = fs::File::create(&initrd)?;
    for part in [base, overlay_cpio.as_path()] {
        std::io::copy(&mut fs::File::open(part)?, &mut out)?;
    }
    Ok(initrd)
}
