use crate::{cmd, setup};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    release_build()
}

/// Optional parts built into the guardd that xtask runs, tests and packages.
pub const DAEMON_FEATURES: &str = "guard-daemon/desktop";

/// Leaves target/release/guardd (with the eBPF object embedded) and guardctl.
pub fn release_build() -> anyhow::Result<()> {
    release_build_with(DAEMON_FEATURES)
}

/// The release build with `features` (comma-separated, `package/feature`).
pub fn release_build_with(features: &str) -> anyhow::Result<()> {
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "guard-daemon",
        "--bins",
        "--features",
        features,
    ]))
}
