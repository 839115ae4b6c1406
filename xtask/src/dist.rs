//! `cargo xtask dist`: a tarball (and a .deb where dpkg-deb exists) with the
//! binaries, the systemd unit, the starter config, man pages and completions.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{build, cmd};

/// Paths every package must contain.
pub const CONTENTS: &[&str] = &[
    "usr/bin/guardd",
    "usr/bin/guardctl",
    "usr/lib/systemd/system/agent-guard.service",
    "usr/lib/sysusers.d/agent-guard.conf",
    "usr/share/polkit-1/actions/org.agent-guard.policy",
    "etc/agent-guard/policy.toml",
    "etc/pam.d/agent-guard",
    "usr/share/man/man8/guardd.8",
    "usr/share/man/man1/guardctl.1",
    "usr/share/man/man1/guardctl-approve.1",
    "usr/share/bash-completion/completions/guardctl",
    "usr/share/zsh/vendor-completions/_guardctl",
    "usr/share/fish/vendor_completions.d/guardctl.fish",
    "usr/share/doc/agent-guard/README.md",
    "usr/share/doc/agent-guard/policy.md",
];

pub fn run() -> anyhow::Result<()> {
    build::run()?;
    let packages = package()?;
    for package in packages {
        eprintln!("xtask: wrote {}", package.display());
    }
    Ok(())
}

/// Packages the release build (which must exist) and checks the contents.
pub fn package() -> anyhow::Result<Vec<PathBuf>> {
    let root = cmd::workspace_root();
    package_build(
        &root.join("target/release"),
        env!("CARGO_PKG_VERSION"),
        &root.join("target/dist"),
    )
}

/// Packages the guardd and guardctl in `release` as `version` into `dist`.
pub fn package_build(release: &Path, version: &str, dist: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let root = cmd::workspace_root();
    let stage = dist.join(format!("agent-guard-{version}"));
    let _ = fs::remove_dir_all(&stage);
    let copy = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let target = stage.join(to);
        fs::create_dir_all(target.parent().unwrap())?;
        fs::copy(from, &target).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    copy(&release.join("guardd"), "usr/bin/guardd", 0o755)?;
    copy(&release.join("guardctl"), "usr/bin/guardctl", 0o755)?;
    copy(
        &root.join("packaging/agent-guard.service"),
        "usr/lib/systemd/system/agent-guard.service",
        0o644,
    )?;
    copy(
        &root.join("packaging/agent-guard.sysusers"),
        "usr/lib/sysusers.d/agent-guard.conf",
        0o644,
    )?;
    copy(
        &root.join("packaging/org.agent-guard.policy"),
        "usr/share/polkit-1/actions/org.agent-guard.policy",
        0o644,
    )?;
    copy(
        &root.join("packaging/policy.toml"),
        "etc/agent-guard/policy.toml",
        0o644,
    )?;
    copy(
        &root.join("packaging/pam.d/agent-guard"),
        "etc/pam.d/agent-guard",
        0o644,
    )?;
    copy(
        &root.join("README.md"),
        "usr/share/doc/agent-guard/README.md",
        0o644,
    )?;
    copy(
        &root.join("docs/policy.md"),
        "usr/share/doc/agent-guard/policy.md",
        0o644,
    )?;

    let completions = dist.join("completions");
    let _ = fs::remove_dir_all(&completions);
    cmd::run(
        Command::new(release.join("guardctl"))
            .arg("generate")
            .arg("--man")
            .arg(stage.join("usr/share/man/man1"))
            .arg("--completions")
            .arg(&completions),
    )?;
    cmd::run(
        Command::new(release.join("guardd"))
            .arg("--generate-man")
            .arg(stage.join("usr/share/man/man8")),
    )?;
    copy(
        &completions.join("guardctl.bash"),
        "usr/share/bash-completion/completions/guardctl",
        0o644,
    )?;
    copy(
        &completions.join("_guardctl"),
        "usr/share/zsh/vendor-completions/_guardctl",
        0o644,
    )?;
    copy(
        &completions.join("guardctl.fish"),
        "usr/share/fish/vendor_completions.d/guardctl.fish",
        0o644,
    )?;
    for path in CONTENTS {
        anyhow::ensure!(stage.join(path).exists(), "package is missing {path}");
    }
    // The starter config must be a valid policy.
    cmd::run(
        Command::new(release.join("guardctl"))
            .args(["policy", "check"])
            .arg(stage.join("etc/agent-guard/policy.toml")),
    )?;

    let tarball = dist.join(format!(
        "agent-guard-{version}-{}.tar.gz",
        std::env::consts::ARCH
    ));
    cmd::run(
        Command::new("tar")
            .arg("--owner=root")
            .arg("--group=root")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&stage)
            .arg("."),
    )?;
    let mut packages = vec![tarball];
    if cmd::output(Command::new("dpkg-deb").arg("--version")).is_some() {
        packages.push(deb(&stage, dist, version)?);
    }
    Ok(packages)
}

fn deb(stage: &Path, dist: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let control = stage.join("DEBIAN");
    fs::create_dir_all(&control)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    fs::write(
        control.join("control"),
        format!(
            "Package: agent-guard\nVersion: {version}\nArchitecture: {arch}\nMaintainer: agent-guard developers <agent-guard@localhost>\n\
             Depends: libc6, libseccomp2\nSection: admin\nPriority: optional\n\
             Description: hold destructive commands of AI coding agents until a human approves\n \
             eBPF-based daemon (guardd) and CLI (guardctl).\n"
        ),
    )?;
    fs::write(
        control.join("conffiles"),
        "/etc/agent-guard/policy.toml\n/etc/pam.d/agent-guard\n",
    )?;
    // Maintainer scripts: the group on install, a restart on upgrade, the
    // teardown on remove, everything gone on purge.
    for script in ["postinst", "prerm", "postrm"] {
        let to = control.join(script);
        fs::copy(
            cmd::workspace_root().join("packaging/debian").join(script),
            &to,
        )?;
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755))?;
    }
    let deb = dist.join(format!("agent-guard_{version}_{arch}.deb"));
    cmd::run(
        Command::new("dpkg-deb")
            .arg("--root-owner-group")
            .arg("--build")
            .arg(stage)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&control)?;
    Ok(deb)
}
