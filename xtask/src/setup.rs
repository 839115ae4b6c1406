//! Installs what a fresh machine lacks. Every step checks first, so running
//! it again does nothing.
use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

use crate::cmd::{self, output};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Commands the integration tests run, and the Debian packages that provide them.
const TEST_COMMANDS: &[(&str, &str)] = &[
    ("sh", "dash"),
    ("bash", "bash"),
    ("setsid", "util-linux"),
    ("nohup", "coreutils"),
    ("xargs", "findutils"),
    ("python3", "python3"),
    ("systemd-analyze", "systemd"),
    ("setpriv", "util-linux"),
    // Approval tests make their keys with OpenSSH, as users do.
    ("ssh-keygen", "openssh-client"),
    // Desktop-notification test: a real session bus and a monitor on it.
    ("dbus-daemon", "dbus-daemon"),
    ("dbus-monitor", "dbus-bin"),
    // Escape-check tests: a tmux server outside the session, a renamed client inside.
    ("tmux", "tmux"),
    // vm-test: the emulator, a static busybox for the initramfs, and cpio to pack it.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    // vm-test's second image: a Debian root file system with systemd.
    ("mmdebstrap", "mmdebstrap"),
    ("pkg-config", "pkg-config"),
    // API-client gate tests: a throwaway PostgreSQL cluster, psql, and
    // pg_config to build psycopg2 against the system's libpq.
    ("psql", "postgresql-client"),
    // Node's own OpenSSL, probed in the node binary.
    ("node", "nodejs"),
    // A GnuTLS client (gnutls_record_send).
    ("gnutls-cli", "gnutls-bin"),
    // Go clients built by the tests (crypto/tls, found in the pclntab).
    ("go", "golang-go"),
    ("pg_config", "libpq-dev"),
];

/// Files of Debian packages the build links against: (file, package).
const BUILD_FILES: &[(&str, &str)] = &[
    // guardctl run's seccomp filter and guardd's notification handling.
    ("/usr/include/seccomp.h", "libseccomp-dev"),
    // OpenSSL clients of the API-client gate's tests and bench.
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
    // The AWS SDK for Go v2 (S3, EC2), for a Go client built by the tests.
    (
        "/usr/share/gocode/src/github.com/aws/aws-sdk-go-v2/service/ec2/api_client.go",
        "golang-github-aws-aws-sdk-go-v2-dev",
    ),
];

/// Debian's kubectl (package kubernetes-client), unpacked here rather than
/// installed: a host may have another `kubectl` package owning /usr/bin/kubectl.
pub const KUBECTL: &str = "target/kubectl/usr/bin/kubectl";

/// Debian's nats-server for the fleet tests, unpacked here rather than
/// installed: the package enables a machine-wide service on 0.0.0.0:4222.
pub const NATS_SERVER: &str = "target/nats-server/usr/sbin/nats-server";

/// The API-client gate tests' Python packages, into `target/api-venv`:
/// boto3 and moto's server (AWS over TLS on loopback), psycopg2 built
/// against the system's libpq (the wheel `psycopg2-binary` bundles its own).
const API_VENV_PACKAGES: &[&str] = &["boto3==1.44.18", "moto[server]==5.2.6", "psycopg2==2.9.10"];
/// Where the tests find it (tests/api_gate.rs reads the same path).
pub const API_VENV: &str = "target/api-venv";

pub fn run() -> anyhow::Result<()> {
    rust_toolchains()?;
    bpf_linker()?;
    apt_packages()?;
    postgres_server()?;
    api_venv()?;
    unpacked_deb("kubernetes-client", KUBECTL, "target/kubectl")?;
    unpacked_deb("nats-server", NATS_SERVER, "target/nats-server")?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn rust_toolchains() -> anyhow::Result<()> {
    let toolchains =
        output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is required")?;
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let nightly = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !nightly.lines().any(|c| c.starts_with("rust-src")) {
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let stable = output(Command::new("rustup").args(["component", "list", "--installed"]))
        .unwrap_or_default();
    for component in ["clippy", "rustfmt"] {
        if !stable.lines().any(|c| c.starts_with(component)) {
            cmd::run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// bpf-linker must link the LLVM that the nightly rustc ships (DESIGN.md 5):
/// a plain `cargo install bpf-linker` wants a system LLVM that is not here.
fn bpf_linker() -> anyhow::Result<()> {
    // aya-build runs the linker through `rustup run nightly`, which puts the
    // nightly's libLLVM on the library path; check it the same way.
    let installed =
        output(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"]));
    if installed.is_some_and(|v| v.trim() == format!("bpf-linker {BPF_LINKER_VERSION}")) {
        return Ok(());
    }
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("rustc +nightly -vV failed")?;
    let major = llvm_major(&verbose).context("no LLVM version in `rustc +nightly -vV`")?;
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("nightly sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let prefix = format!("libLLVM.so.{major}");
    let library = fs::read_dir(&lib_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
        })
        .with_context(|| format!("no {prefix}* in {}", lib_dir.display()))?;
    let llvm_prefix = home()?.join(format!(".cache/agent-guard/llvm-{major}"));
    fs::create_dir_all(llvm_prefix.join("lib"))?;
    let link = llvm_prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&library, &link)?;
    cmd::run(
        cmd::cargo()
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &llvm_prefix),
    )
}

fn llvm_major(rustc_verbose: &str) -> Option<u32> {
    let version = rustc_verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))?;
    version.split('.').next()?.trim().parse().ok()
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = TEST_COMMANDS
        .iter()
        .filter(|(command, _)| {
            output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_none()
        })
        .map(|(_, package)| *package)
        .chain(
            BUILD_FILES
                .iter()
                .filter(|(file, _)| !std::path::Path::new(file).exists())
                .map(|(_, package)| *package),
        )
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!("missing Debian packages {missing:?}: install them or run as root");
    }
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Debian's `package`, unpacked into `into` (for `file` in it) without
/// installing it.
fn unpacked_deb(package: &str, file: &str, into: &str) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    if root.join(file).exists() {
        return Ok(());
    }
    let download = root.join(format!("{into}-deb"));
    fs::create_dir_all(&download)?;
    cmd::run_in(
        &download,
        Command::new("apt-get").args(["download", package]),
    )?;
    let deb = fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    cmd::run_in(
        &root,
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(into),
    )
}

/// The PostgreSQL server's programs (initdb, pg_ctl), which Debian keeps
/// out of PATH under /usr/lib/postgresql/VERSION/bin.
fn postgres_server() -> anyhow::Result<()> {
    let found = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|version| version.path().join("bin/initdb").exists());
    if found {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing the PostgreSQL server (apt-get install postgresql): install it or run as root"
        );
    }
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A venv with the pinned packages; made again when the pins change.
fn api_venv() -> anyhow::Result<()> {
    let venv = cmd::workspace_root().join(API_VENV);
    let stamp = venv.join("agent-guard-packages");
    let wanted = API_VENV_PACKAGES.join("\n");
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(&venv);
    cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    cmd::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--no-binary", "psycopg2"])
            .args(API_VENV_PACKAGES),
    )?;
    fs::write(&stamp, wanted)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn llvm_major_is_read_from_rustc() {
        let text = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(super::llvm_major(text), Some(22));
        assert_eq!(super::llvm_major("rustc 1.0"), None);
    }
}
