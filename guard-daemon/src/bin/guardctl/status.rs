use std::{path::Path, process::ExitCode};

use guard_daemon::protocol::{Request, Response};

/// Show what guardd enforces and with which kernel mechanisms.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// List every watched program: whether the kernel reads its argv (and
    /// which arguments stop it) or stops each exec, and why.
    #[arg(long)]
    prefilter: bool,
    /// Every mechanism's whole text, the loaded programs and the latencies.
    #[arg(long, short)]
    verbose: bool,
}

/// A mechanism's line is cut here unless --verbose.
const LINE: usize = 110;

pub fn run(socket: &Path, relay: &super::fleet::Relay, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(url) = &relay.fleet {
        return super::fleet::status(relay, url, args.json);
    }
    let response = super::call(socket, Request::Status)?;
    let Response::Status(status) = response else {
        return Err(super::unexpected(response));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("guardd {} (pid {})", status.version, status.pid);
    println!(
        "policy: {} ({} rules, {} watched programs)\n  version {}",
        status.policy.source,
        status.policy.rules,
        status.policy.watched_programs,
        status.policy.version
    );
    if let Some(err) = &status.policy.last_reload_error {
        println!("  last reload refused (the policy above stays in force): {err}");
    }
    if let Some(err) = &status.policy.fleet_refused {
        println!("  {err} (the policy above stays in force)");
    }
    println!(
        "sessions: {}   pending: {}",
        status.sessions.len(),
        status.pending
    );
    for session in &status.sessions {
        println!(
            "  {:<8} {:<12} uid {:<6} workspace {}",
            session.id,
            session.agent.as_deref().unwrap_or(&session.origin),
            session.uid,
            session
                .workspace
                .as_deref()
                .unwrap_or("none (started in / or a home directory)")
        );
    }
    if let Some(why) = &status.lsm_missing {
        println!(
            "BPF LSM: not here ({why}). Where the kernel allows it, boot with bpf in its lsm= list \
             (the current list is in /sys/kernel/security/lsm); the mechanisms below say what \
             replaces it."
        );
    }
    println!("mechanisms:");
    for (capability, mechanism) in
        mechanism_lines(&status.mechanisms, status.lsm_missing.as_deref())
    {
        match args.verbose {
            true => println!("  {capability:<24} {mechanism}"),
            false => println!("  {capability:<24} {}", cut(&mechanism, LINE)),
        }
    }
    if !args.verbose {
        println!("  (--verbose: each line whole, the loaded programs, latencies)");
    }
    if args.verbose {
        println!("programs:");
        for program in &status.programs {
            println!(
                "  {:<16} id {:<6} {}",
                program.name, program.id, program.tracepoint
            );
        }
    }
    let s = &status.stats;
    println!(
        "API gate: {} client calls stopped; {} session processes stopped at their first TLS connection to be followed",
        s.api_stops, s.tls_follows
    );
    println!(
        "exec gate: {} stops ({} allowed, {} held, {} denied, {} recovered from the kernel map); {} events lost (ring buffer full); {} stops killed (no room to record them)",
        s.stops, s.allowed, s.held, s.denied, s.recovered_from_map, s.events_lost, s.stops_killed
    );
    let prefiltered = status.prefilters.iter().filter(|p| p.prefiltered).count();
    println!(
        "  argv prefilter: {} watched execs ran without a stop; {prefiltered} of {} watched programs are read in the kernel, the others stop on every exec (--prefilter lists them)",
        s.prefilter_passed,
        status.prefilters.len()
    );
    if !s.quiet_opens.is_empty() {
        println!(
            "syscall gate (report only): {} writing opens of {} not sent to guardd (device files only root can replace, no [[protect]] entry covers them)",
            s.quiet_opens_skipped,
            s.quiet_opens.join(", ")
        );
    }
    if args.prefilter {
        for program in &status.prefilters {
            let how = if program.prefiltered {
                "argv"
            } else {
                "always"
            };
            println!("  {:<24} {how:<7} {}", program.program, program.detail);
        }
    }
    for (what, l) in [
        ("stop -> event", &s.event_latency),
        ("stop -> decision", &s.decision_latency),
    ]
    .into_iter()
    .filter(|_| args.verbose)
    {
        println!(
            "  {what:<17} p50 {} us  p99 {} us  max {} us  ({} samples)",
            l.p50_us, l.p99_us, l.max_us, l.samples
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The mechanisms as printed: the LSM's absence named once (above), and
/// capabilities of one family with the same text on one line
/// (`syscall_gate.{unlink,rmdir}`).
fn mechanism_lines(
    mechanisms: &[(String, String)],
    lsm_missing: Option<&str>,
) -> Vec<(String, String)> {
    let mut lines: Vec<(String, Vec<String>, String)> = Vec::new();
    for (capability, text) in mechanisms {
        let text = match lsm_missing {
            Some(why) => text.replace(why, "no BPF LSM"),
            None => text.clone(),
        };
        let (family, member) = capability.split_once('.').unwrap_or((capability, ""));
        match lines.last_mut() {
            Some((last, members, last_text))
                if last == family && !member.is_empty() && *last_text == text =>
            {
                members.push(member.to_string())
            }
            _ => lines.push((family.to_string(), vec![member.to_string()], text)),
        }
    }
    lines
        .into_iter()
        .map(|(family, members, text)| match members.as_slice() {
            [only] if only.is_empty() => (family, text),
            [only] => (format!("{family}.{only}"), text),
            many => (format!("{family}.{{{}}}", many.join(",")), text),
        })
        .collect()
}

/// `text` cut to `width` characters, with an ellipsis where it was cut.
fn cut(text: &str, width: usize) -> String {
    match text.char_indices().nth(width) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lsm_reason_is_said_once_and_one_family_shares_a_line() {
        let why = "the BPF LSM is not active";
        let m = |k: &str, v: &str| (k.to_string(), v.to_string());
        let lines = mechanism_lines(
            &[
                m("exec_hold", "tracepoint"),
                m("syscall_gate.unlink", &format!("report only: {why}")),
                m("syscall_gate.rmdir", &format!("report only: {why}")),
                m("syscall_gate.chown", "seccomp"),
            ],
            Some(why),
        );
        assert_eq!(
            lines,
            [
                m("exec_hold", "tracepoint"),
                m("syscall_gate.{unlink,rmdir}", "report only: no BPF LSM"),
                m("syscall_gate.chown", "seccomp"),
            ]
        );
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("abc", 3), "abc");
    }
}
