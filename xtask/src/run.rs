use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::bail;

use crate::{build, cmd};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    build::run()?;
    if !cmd::is_root() {
        bail!("guardd loads eBPF programs: run `cargo xtask run` as root");
    }
    let guardd = cmd::workspace_root().join("target/release/guardd");
    eprintln!("xtask: {} {}", guardd.display(), args.join(" "));
    Err(Command::new(guardd).args(args).exec().into())
}
