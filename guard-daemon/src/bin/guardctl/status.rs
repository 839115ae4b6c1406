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
}

pub fn run(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
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
    println!("mechanisms:");
    for (capability, mechanism) in &status.mechanisms {
        println!("  {capability:<24} {mechanism}");
    }
    println!("programs:");
    for program in &status.programs {
        println!(
            "  {:<16} id {:<6} {}",
            program.name, program.id, program.tracepoint
        );
    }
    let s = &status.stats;
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
    ] {
        println!(
            "  {what:<17} p50 {} us  p99 {} us  max {} us  ({} samples)",
            l.p50_us, l.p99_us, l.max_us, l.samples
        );
    }
    Ok(ExitCode::SUCCESS)
}
