//! The syscall gate where the BPF LSM runs. This machine's kernel refuses
//! LSM programs, so the figure comes from vm-test's kernel (the
//! distribution's cloud kernel) booted with `lsm=...,bpf` under QEMU: in one
//! boot, unlinks of unprotected files in a `guardctl run` session of a
//! guardd on the bench's policy (its LSM hooks judge them in the kernel),
//! against the same loop without guardd just before and just after, over
//! ROUNDS rounds. Emulation (TCG) slows both sides alike; the ratio counts.
use std::{fs, os::unix::fs::PermissionsExt as _, process::Command, time::Duration};

use anyhow::{bail, Context as _};

use super::exec::{Pair, ROUNDS};
use crate::{cmd, vm};

const RESULT: &str = "AGENT-GUARD-VM-BENCH:";
const ROUND: &str = "AGENT-GUARD-VM-BENCH-ROUND:";
/// Unlinks per loop (fewer than on the host: every instruction is emulated).
pub(super) const UNLINKS: u32 = 5_000;
const TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Microseconds per unlink without and with guardd, per round; Err says
/// why it could not be measured (no QEMU, no kernel image).
pub(super) fn run(policy: &str) -> Result<Pair, String> {
    measure(policy).map_err(|err| format!("{err:#}"))
}

fn measure(policy: &str) -> anyhow::Result<Pair> {
    eprintln!("xtask: bench syscall gate under the BPF LSM (a VM)");
    let kernel = vm::kernel_image()?;
    let (guardd, guardctl) = vm::static_daemon()?;
    let dir = cmd::workspace_root().join("target/vm-bench");
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for sub in [
        "bin",
        "bench",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root/work",
    ] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy(vm::static_busybox()?, root.join("bin/busybox"))?;
    fs::copy(&guardd, root.join("bench/guardd"))?;
    fs::copy(&guardctl, root.join("bench/guardctl"))?;
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-static", "-o"])
            .arg(root.join("bench/unlinks"))
            .arg(cmd::workspace_root().join("xtask/bench/unlinks.c")),
    )?;
    fs::write(root.join("bench/policy.toml"), policy)?;
    let init = root.join("init");
    fs::write(
        &init,
        INIT.replace("@MOUNTS@", vm::INIT_MOUNTS)
            .replace("@UNLINKS@", &UNLINKS.to_string())
            .replace("@ROUNDS@", &ROUNDS.to_string()),
    )?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let cpio = dir.join("initramfs.cpio");
    vm::pack(&root, &cpio)?;
    let append = "console=ttyS0 loglevel=5 lsm=lockdown,capability,bpf panic=-1";
    let (outcome, console) = vm::boot(&kernel, &cpio, append, RESULT, TIMEOUT)?;
    if outcome != "ok" {
        bail!("the VM's bench failed: {outcome}");
    }
    let mut pair = Pair::default();
    for line in &console {
        let Some(rest) = line.trim().strip_prefix(ROUND) else {
            continue;
        };
        let figures: Vec<f64> = rest
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("a round's line: {line}"))?;
        let [before, gated, after] = figures[..] else {
            bail!("a round's line: {line}");
        };
        pair.without.push((before + after) / 2.0);
        pair.with.push(gated);
    }
    if pair.with.len() != ROUNDS {
        bail!("{} rounds measured of {ROUNDS}", pair.with.len());
    }
    Ok(pair)
}

/// The VM's /init: ROUNDS rounds, each failing unless guardd's status says
/// the BPF LSM gates unlinks (a figure of the report-only program would
/// not be this one).
const INIT: &str = r#"@MOUNTS@mount -t tmpfs tmpfs /tmp
echo "agent-guard vm bench: kernel $(uname -r), lsm=$(cat /sys/kernel/security/lsm)"
G="--socket /run/guardd.sock"
D="$G --audit-log /tmp/audit.jsonl --pin-dir /sys/fs/bpf/bench --state-dir /tmp/state"
files() {
  rm -rf /root/work/u && mkdir /root/work/u && cd /root/work/u
  seq 0 $((@UNLINKS@ - 1)) | sed 's/^/f/' | xargs touch
  cd /root/work
}
plain() { files && /bench/unlinks /root/work/u @UNLINKS@; }
failed=""
r=0
while [ $r -lt @ROUNDS@ ] && [ -z "$failed" ]; do
  r=$((r + 1))
  before=$(plain)
  /bench/guardd --config /bench/policy.toml $D >/tmp/guardd.log 2>&1 &
  guardd=$!
  n=0
  until /bench/guardctl $G status >/tmp/status 2>/dev/null; do
    n=$((n + 1)); [ $n -gt 600 ] && break; sleep 0.1
  done
  if ! grep -q "syscall_gate[.{a-z,]*unlink.*BPF LSM in every session" /tmp/status; then
    grep syscall_gate /tmp/status; cat /tmp/guardd.log
    failed="the BPF LSM does not gate unlinks"
  fi
  files
  gated=$(/bench/guardctl $G run -- /bench/unlinks /root/work/u @UNLINKS@) || failed="the gated loop failed"
  kill $guardd; wait $guardd
  after=$(plain)
  echo "AGENT-GUARD-VM-BENCH-ROUND: $before $gated $after"
done
/bench/guardd --teardown $D >/dev/null 2>&1
if [ -z "$failed" ]; then
  echo "AGENT-GUARD-VM-BENCH: ok"
else
  echo "AGENT-GUARD-VM-BENCH: failed: $failed"
fi
poweroff -f
"#;
