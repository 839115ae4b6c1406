//! `cargo xtask fuzz --time SECS [TARGET]`: runs the cargo-fuzz targets
//! (installing cargo-fuzz when missing), adding what they find to the corpus
//! that `cargo test` replays.
use std::process::Command;

use crate::{cmd, setup};

pub const TARGETS: &[&str] = &["protocol_decode", "policy_parse", "api_writes"];

pub fn run(seconds: u64, target: Option<String>) -> anyhow::Result<()> {
    setup::run()?;
    if cmd::output(Command::new("cargo").args(["fuzz", "--version"])).is_none() {
        cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let root = cmd::workspace_root();
    let targets: Vec<&str> = match &target {
        Some(name) => vec![name.as_str()],
        None => TARGETS.to_vec(),
    };
    for name in targets {
        let corpus = root.join("fuzz/corpus").join(name);
        std::fs::create_dir_all(&corpus)?;
        cmd::run(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "run", name])
                .arg(&corpus)
                .arg(root.join("fuzz/seeds").join(name))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                // The targets never load programs: skip building them.
                .env("AYA_BUILD_SKIP", "1"),
        )?;
    }
    Ok(())
}
