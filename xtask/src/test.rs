use anyhow::bail;

use crate::{build, cmd, setup};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        build::DAEMON_FEATURES,
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run(cmd::cargo().args(["test"]))?;
    build::release_build()?;
    // Packaging is part of the product: build it and check its contents.
    crate::dist::package()?;
    if !cmd::is_root() {
        bail!("the integration tests load eBPF programs and run as root: run `cargo xtask test` as root");
    }
    let release = cmd::workspace_root().join("target/release");
    cmd::run(
        cmd::cargo()
            .args(["test", "-p", "integration-tests"])
            .env("GUARDD_BIN", release.join("guardd"))
            .env("GUARDCTL_BIN", release.join("guardctl")),
    )?;
    // The same tests on a second kernel, with the BPF LSM.
    crate::vm::run()
}
