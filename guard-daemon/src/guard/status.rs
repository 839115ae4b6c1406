//! `guardctl status`: which mechanism does what on this host, said plainly,
//! and never a mechanism that is not confirmed.
use super::*;

impl Guard {
    pub fn status(&self) -> Response {
        Response::Status(Box::new(StatusView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            policy: PolicySummary {
                source: self.policy.source.clone(),
                version: self.policy.version.clone(),
                last_reload_error: self.source.last_reload_error.clone(),
                fleet_refused: self.source.bundle_refused.clone(),
                rules: self.policy.rules.len(),
                watched_programs: self.policy.watched_programs().len(),
                agents: self.policy.agents.programs.clone(),
                local_auth: self.policy.approvals.local_auth,
            },
            sessions: self.sessions.iter().map(SessionView::from).collect(),
            pending: self.holds.len(),
            mechanisms: mechanisms(
                &self.kernel,
                &self.policy,
                &self.exec_gate.program_files,
                &self.hold_keeping(),
            )
            .into_iter()
            .chain(self.own_mechanisms())
            .chain([self.pin_layout_status(), self.api_gate_status()])
            .collect(),
            programs: self.kernel.loaded_programs().to_vec(),
            stats: GateStats {
                events_lost: self.kernel.events_lost(),
                stops_killed: self.kernel.stops_killed(),
                prefilter_passed: self.kernel.prefilter_passed(),
                quiet_opens_skipped: self.kernel.quiet_opens(),
                quiet_opens: self.kernel.report_quiet_opens().to_vec(),
                ..self.exec_gate.stats.view()
            },
            prefilters: self.prefilter_views(),
            lsm_missing: self.kernel.lsm_missing().map(str::to_string),
        }))
    }
}

/// Default-pack rules that keep sessions from disabling agent-guard.
const SELF_PROTECTION_RULES: &[&str] = &[
    "guard-stop-service",
    "guard-signal",
    "guard-files",
    "guard-bpftool",
];

pub(super) fn mechanisms(
    kernel: &Kernel,
    policy: &Policy,
    program_files: &ProgramFiles,
    hold_keeping: &str,
) -> Vec<(String, String)> {
    let rules: Vec<&str> = SELF_PROTECTION_RULES
        .iter()
        .copied()
        .filter(|id| policy.rule(id).is_some())
        .collect();
    let rules = if rules.is_empty() {
        "no guard-* rules in the loaded policy".to_string()
    } else {
        format!("policy rules {}", rules.join(", "))
    };
    let (lsm_self, lsm_release) = match kernel.lsm_missing() {
        None => (
            "BPF LSM: session processes may not signal or trace guardd, use bpf(2), or write, truncate, unlink or rename agent-guard's files".to_string(),
            "BPF LSM task_kill: only guardd may SIGCONT a held process".to_string(),
        ),
        Some(why) => (
            format!("BPF LSM (task_kill, ptrace, bpf, file_open, path_*): not here: {why}"),
            format!("BPF LSM task_kill: not here: {why}"),
        ),
    };
    let program_recognition = if kernel.recognises_exe_names() {
        format!(
            "comm, the executed file's name (symlinks) and, for busybox, argv[0] (BTF offsets); \
             files root does not own or that are not in a program directory, hard links and \
             memfds are stopped and known by inode, content or ELF build-id ({} installed \
             files of watched programs); script runners ({}) given a file stop, and a copy \
             or symlink of a watched script they run is known by inode or content; a copy \
             root put into a program directory, a binary with its build-id altered, a \
             script altered by one byte and a script a shell sources or reads from a pipe \
             are known by their name only",
            program_files.len(),
            program_files.script_runners().join(" ")
        )
    } else {
        "none beyond comm: no kernel BTF, a symlink, link or copy of a watched program \
         under another name is not stopped"
            .to_string()
    };
    let own_paths = policy
        .protections
        .iter()
        .find(|p| p.id == crate::policy::protect::SELF_ID)
        .map_or_else(
            || "none".to_string(),
            |p| format!("{:?} {}", p.action, p.paths.join(" ")),
        );
    [
        ("program_recognition", program_recognition.to_string()),
        ("exec_hold", "tracepoint sched/sched_process_exec + SIGSTOP before the first instruction".into()),
        ("session_tracking", "tracepoints sched/sched_process_fork and sched/sched_process_exit".into()),
        ("agent_detection", "exec of agent programs (kernel), interpreter argv (daemon), /proc scan at start".into()),
        ("hold_release_protection", format!("{hold_keeping}; {lsm_release}")),
        ("self_protection", format!(
            "{rules}; {lsm_self}; [[protect]] {} (built in, by the syscall gate below): {own_paths}",
            crate::policy::protect::SELF_ID
        )),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(syscall_gate(kernel, policy))
    .chain(std::iter::once(session_escape(kernel, policy)))
    .collect()
}

/// `[defaults] session_escape`: how session processes are kept from using
/// processes outside the session.
pub(super) fn session_escape(kernel: &Kernel, policy: &Policy) -> (String, String) {
    let how = match (policy.session_escape, kernel.lsm_missing()) {
        (crate::policy::EscapeMode::Allow, _) => {
            "off: [defaults] session_escape = \"allow\"".to_string()
        }
        (crate::policy::EscapeMode::Deny, Some(why)) => {
            format!("{SESSION_ESCAPE_SECCOMP}; not here: detected sessions (no seccomp filter; the BPF LSM does not run: {why})")
        }
        (crate::policy::EscapeMode::Deny, None) => format!(
            "{SESSION_ESCAPE_SECCOMP}; BPF LSM in every session, launched or detected: \
             ptrace_access_check makes attaching to, or reading or writing the memory of, a \
             process outside the session fail with EPERM, and unix_stream_connect holds a \
             detected session's connects to those sockets"
        ),
    };
    ("session_escape".into(), how)
}

/// What `guardctl status` says of the escape checks where they are on.
const SESSION_ESCAPE_SECCOMP: &str = "seccomp in `guardctl run` sessions: ptrace attach/seize, \
     process_vm_writev and pidfd_getfd on processes outside the session fail with EPERM; connects \
     to tmux, screen, systemd manager and D-Bus session bus sockets served from outside are held";

/// Per gated operation: how it is held, where.
pub(super) fn syscall_gate(kernel: &Kernel, policy: &Policy) -> Vec<(String, String)> {
    use crate::policy::{protect::Operation, GateMode};
    Operation::ALL
        .iter()
        .map(|operation| {
            let protected = policy
                .protections
                .iter()
                .filter(|p| p.operations.contains(operation))
                .count();
            let report = match (kernel.report_missing(), kernel.report_failed()) {
                (Some(why), _) => format!("not reported either ({why})"),
                (None, Some(why)) => format!(
                    "NOT WORKING: report only, but attaching its tracepoints failed ({why}); \
                     retried every few seconds, each failure audited"
                ),
                (None, None) => "report only (tracepoints syscalls/sys_enter_*, attached while a session \
                         runs: the call runs, an audit record says so)"
                    .to_string(),
            };
            let how = match (policy.syscall_gate, kernel.lsm_missing()) {
                (GateMode::Off, _) => {
                    "off: [defaults] syscall_gate = false (see docs/syscall-gate.md)".to_string()
                }
                _ if protected == 0 => "none: no [[protect]] entry covers it".to_string(),
                (_, None) => format!(
                    "BPF LSM in every session, launched or detected ({protected} [[protect]] entries); \
                     a hold stops the process and its call restarts after the decision"
                ),
                (GateMode::On, Some(why)) => format!(
                    "seccomp user notification in `guardctl run` sessions ({protected} [[protect]] entries); \
                     other sessions: {report} (no BPF LSM: {why})"
                ),
                (_, Some(why)) => format!(
                    "{report} in every session: the BPF LSM does not run here ({why}); \
                     [defaults] syscall_gate = true holds the calls of `guardctl run` sessions with seccomp"
                ),
            };
            (format!("syscall_gate.{}", operation.name()), how)
        })
        .collect()
}

impl Guard {
    /// The start log's one line when `[[protect]]` entries (`--protect`
    /// paths among them) are only reported on this host.
    pub fn protections_unenforced(&self) -> Option<String> {
        let why = self.kernel.lsm_missing()?;
        if self.policy.syscall_gate != crate::policy::GateMode::Auto {
            return None;
        }
        let ids: Vec<&str> = (self.policy.protections.iter())
            .map(|p| p.id.as_str())
            .filter(|id| *id != crate::policy::protect::SELF_ID)
            .collect();
        (!ids.is_empty()).then(|| {
            format!(
                "[[protect]] {} NOT enforced, only reported: no BPF LSM here ({why}) and \
                 [defaults] syscall_gate = \"auto\"; syscall_gate = true holds their calls in \
                 `guardctl run` sessions (seccomp)",
                ids.join(", ")
            )
        })
    }
}
