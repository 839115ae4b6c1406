#!/bin/bash
# README.md's "Installing as a service", done as an administrator would, in a
# Debian VM booted with systemd (`cargo xtask vm-test` boots it with and
# without the BPF LSM). Every check prints one line; the last line is
#   AGENT-GUARD-SYSTEMD-RESULT: ok | failed: WHAT; WHAT...
# The kernel command line says what to run: agent_guard_test=full (restart,
# reload, watchdog, upgrade) or agent_guard_test=short (install, hold,
# approvals, remove).
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
packages=/root/agent-guard
mode=short
grep -q agent_guard_test=full /proc/cmdline && mode=full
failures=()

say() { echo "systemd-test: $*"; }
fail() { say "FAILED: $*"; failures+=("$*"); }
check() {
    local what=$1
    shift
    if "$@"; then say "ok: $what"; else fail "$what"; fi
}
# until_true SECONDS COMMAND...: COMMAND succeeded within SECONDS.
until_true() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.5
    done
}
as() {
    local user=$1
    shift
    runuser -l "$user" -c "$*"
}
journal_has() { journalctl -b -u agent-guard -o cat --no-pager | grep -qF -- "$1"; }
unit() { systemctl show -p "$1" --value agent-guard; }
active() { [ "$(systemctl is-active agent-guard)" = active ]; }
# The pending holds, one per line, without blanks ("id":"...",...).
holds() { guardctl pending --json 2>/dev/null | tr -d ' \t\n' | sed 's/},{"id"/}\n{"id"/g'; }
# The id of the pending hold whose argv has WORD (empty if none).
hold_of() { holds | grep -F "\"$1\"" | grep -o '"id":"[^"]*"' | head -n 1 | cut -d'"' -f4; }
pid_of_hold() { holds | grep -F "\"id\":\"$1\"" | grep -o '"pid":[0-9]*' | head -n 1 | cut -d: -f2; }
pending_has() { [ -n "$1" ] && holds | grep -qF "\"id\":\"$1\""; }
stopped_processes() { ps -eo pid=,stat=,args= | awk '$2 ~ /^[Tt]/'; }
nothing_stopped() { [ -z "$(stopped_processes)" ]; }
# Starts alice's agent in her project, where it runs `terraform destroy`; HOLD
# is then the id of the held command.
hold_alices_destroy() {
    as alice 'mkdir -p ~/project && rm -f ~/project/destroyed'
    cd /home/alice/project || return
    # setpriv execs: runuser and su wait for their child with WUNTRACED and
    # stop themselves when it stops, as a held command is.
    setpriv --reuid=alice --regid=alice --init-groups --reset-env -- \
        guardctl run -- terraform destroy -auto-approve >>/tmp/alice.out 2>&1 &
    cd / || return
    HOLD=
    until_true 60 eval 'HOLD=$(hold_of destroy); [ -n "$HOLD" ]'
    say "alice's terraform destroy is held as ${HOLD:-(nothing)}"
    [ -n "$HOLD" ] || sed 's/^/systemd-test: alice| /' /tmp/alice.out
}
# The stand-in terraform leaves this file when it runs.
not_run() { ! [ -e /home/alice/project/destroyed ]; }

say "mode $mode, kernel $(uname -r), lsm=$(cat /sys/kernel/security/lsm)"

# --- install and start ----------------------------------------------------
check "apt installs the package" apt-get install -y -q "$packages"/agent-guard_*.deb
check "the package made the group agent-guard" getent group agent-guard
check "systemctl enable --now agent-guard" systemctl enable --now agent-guard
check "the unit is active" active
check "the unit is Type=notify (active means guardd said READY)" [ "$(unit Type)" = notify ]
check "guardd logs to the journal" journal_has "guardd ready"
check "with its fields as journal fields" \
    bash -c "journalctl -b -u agent-guard -o verbose --no-pager | grep -q '^ *F_SOCKET=/run/agent-guard/guardd.sock'"
check "the journal has no terminal colour codes" \
    bash -c "! journalctl -b -u agent-guard -o cat --no-pager | grep -q $'\e\\['"
check "systemctl status shows guardd's status line" \
    bash -c "systemctl status agent-guard --no-pager | grep -q 'Status: \"policy'"
guardctl status | head -n 8 | sed 's/^/systemd-test: status| /'
check "under the unit's hardening, held commands are frozen" \
    bash -c "guardctl status --verbose | grep hold_release_protection | grep -q 'moved into a frozen leaf'"
guardctl status --verbose | grep -E 'hold_release_protection|BPF LSM' | cut -c1-300 | sed 's/^/systemd-test: status| /'

# --- people: alice runs an agent, bob approves, carol is not in the group --
for user in alice bob; do useradd -m -s /bin/bash -G agent-guard "$user"; done
useradd -m -s /bin/bash carol
# A stand-in for terraform: what it destroys is a file it leaves in the project.
printf '#!/bin/sh\necho "terraform $*" >"$HOME/project/destroyed"\n' >/usr/local/bin/terraform
chmod 755 /usr/local/bin/terraform
as bob "mkdir -p ~/.ssh && ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519"
echo "bob $(cat /home/bob/.ssh/id_ed25519.pub)" >/etc/agent-guard/allowed_signers
cat >>/etc/agent-guard/policy.toml <<'EOF'

[approvals]
allowed_signers = "/etc/agent-guard/allowed_signers"
EOF
check "systemctl reload agent-guard" systemctl reload agent-guard
check "the reload took the new policy" until_true 10 journal_has "SIGHUP: policy reloaded"

hold_alices_destroy
first=$HOLD
check "alice's terraform destroy is held" [ -n "$first" ]
check "held means not run" not_run
check "carol (not in the group) is refused by the socket's permissions" \
    bash -c "! runuser -l carol -c 'guardctl pending' >/tmp/carol.out 2>&1 && grep -qi 'permission denied' /tmp/carol.out"
check "alice cannot approve her own agent's command without authenticating" \
    bash -c "! runuser -l alice -c 'guardctl approve $first' </dev/null >/tmp/alice-approve.out 2>&1"
check "after alice's refused approval the command is still held" pending_has "$first"
check "after alice's refused approval nothing ran" not_run

if [ "$mode" = full ]; then
    # --- restart, broken policy, watchdog: the hold stays ---------------------
    check "systemctl restart with a hold pending" systemctl restart agent-guard
    check "the unit is active after the restart" active
    check "the restarted guardd holds it under the same id" until_true 30 pending_has "$first"
    check "nothing ran across the restart" not_run

    cp /etc/agent-guard/policy.toml /root/policy.good
    echo 'this = [is not toml' >>/etc/agent-guard/policy.toml
    systemctl reload agent-guard
    check "a broken policy: systemctl status says it was refused" until_true 15 \
        bash -c "systemctl status agent-guard --no-pager | grep -q 'Status: \"policy refused'"
    systemctl status agent-guard --no-pager | grep 'Status:' | sed 's/^/systemd-test: status| /'
    check "a broken policy keeps the old one (the hold stays)" pending_has "$first"
    cp /root/policy.good /etc/agent-guard/policy.toml
    systemctl reload agent-guard
    check "the mended policy is taken" until_true 15 \
        bash -c "systemctl status agent-guard --no-pager | grep -q 'Status: \"policy .* in force'"

    main=$(unit MainPID)
    kill -STOP "$main"
    say "guardd (pid $main) stopped with SIGSTOP; WatchdogSec=$(unit WatchdogUSec)"
    check "the watchdog restarts a stopped guardd" until_true 120 \
        bash -c "[ \"\$(systemctl show -p MainPID --value agent-guard)\" != $main ] && systemctl is-active -q agent-guard"
    check "systemd named the watchdog" journal_has "Watchdog timeout"
    check "the hold survived the watchdog restart under its id" until_true 30 pending_has "$first"
    check "nothing ran across the watchdog restart" not_run

    # --- upgrade to a guardd whose maps have another layout -------------------
    old_layout=$(ls /sys/fs/bpf/agent-guard | grep '^layout-')
    check "apt upgrades to the next version" apt-get install -y -q "$packages"/upgrade/agent-guard_*.deb
    new_layout=$(ls /sys/fs/bpf/agent-guard | grep '^layout-')
    say "pin layout: $old_layout before the upgrade, $new_layout after"
    check "the new version runs maps of another layout" \
        bash -c "[ -n '$new_layout' ] && [ '$new_layout' != '$old_layout' ]"
    check "the unit is active after the upgrade" active
    check "the upgraded guardd holds it under the same id" until_true 30 pending_has "$first"
    check "nothing ran across the upgrade" not_run
    systemd-analyze security agent-guard --no-pager | tail -n 1 | sed 's/^/AGENT-GUARD-SYSTEMD-SECURITY: /'
fi

# --- a second user approves ----------------------------------------------
check "bob approves with his signed token" as bob "guardctl approve $first --sign ~/.ssh/id_ed25519"
if ! until_true 30 bash -c '[ -e /home/alice/project/destroyed ]'; then
    fail "approved: alice's command ran"
    guardctl pending | sed 's/^/systemd-test: pending| /'
    tail -n 6 /var/log/agent-guard/audit.jsonl | sed 's/^/systemd-test: audit| /'
    journalctl -b -u agent-guard -o cat --no-pager | tail -n 15 | sed 's/^/systemd-test: journal| /'
else
    say "ok: approved: alice's command ran"
fi
check "the audit log names bob's key" grep -q 'key:bob' /var/log/agent-guard/audit.jsonl

# --- uninstall: the hold pending at removal is denied ---------------------
hold_alices_destroy
last=$HOLD
check "a second hold is pending before apt remove" [ -n "$last" ]
held_pid=$(pid_of_hold "$last")
check "apt remove" apt-get remove -y -q agent-guard
check "the unit is gone" bash -c "! systemctl is-active -q agent-guard"
check "the held command was killed" bash -c "! kill -0 ${held_pid:-0} 2>/dev/null"
check "the command denied at removal did not run" not_run
check "nothing is left stopped" nothing_stopped
check "no pins are left" bash -c "! [ -e /sys/fs/bpf/agent-guard ]"
check "no frozen cgroups are left" bash -c "! [ -e /sys/fs/cgroup/agent-guard ]"
check "no state is left" bash -c "[ -z \"\$(ls -A /var/lib/agent-guard 2>/dev/null)\" ]"
check "apt purge" apt-get purge -y -q agent-guard
check "purge removed the group" bash -c "! getent group agent-guard"
check "purge removed the configuration and the logs" \
    bash -c "! [ -e /etc/agent-guard ] && ! [ -e /var/log/agent-guard ] && ! [ -e /var/lib/agent-guard ]"
stopped_processes | sed 's/^/systemd-test: left stopped| /'

if [ ${#failures[@]} -eq 0 ]; then
    echo "AGENT-GUARD-SYSTEMD-RESULT: ok"
else
    printf -v joined '%s; ' "${failures[@]}"
    echo "AGENT-GUARD-SYSTEMD-RESULT: failed: $joined"
fi
