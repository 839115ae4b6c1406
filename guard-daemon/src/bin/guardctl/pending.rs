use std::{path::Path, process::ExitCode};

use guard_daemon::{
    escape::escape_bytes,
    protocol::{Request, Response},
};

/// List held requests.
#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(socket: &Path, relay: &super::fleet::Relay, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(url) = &relay.fleet {
        return super::fleet::pending(relay, url, args.json);
    }
    let response = super::call(socket, Request::Pending)?;
    let Response::Pending { holds } = response else {
        return Err(super::unexpected(response));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&holds)?);
        return Ok(ExitCode::SUCCESS);
    }
    if holds.is_empty() {
        println!("no pending requests");
    }
    for hold in holds {
        // argv is already escaped by guardd; escape again anything a terminal could act on.
        println!(
            "{}  pid {}  session {}  rule {}  held {}s  expires in {}s\n    {}\n    cwd {}",
            hold.id,
            hold.pid,
            hold.session,
            hold.rule,
            hold.held_secs,
            hold.expires_in_secs,
            escape_bytes(hold.argv.join(" ").as_bytes()),
            escape_bytes(hold.cwd.as_bytes()),
        );
        // The held system call or API call (`POST ec2 us-east-1 TerminateInstances`).
        if let Some(operation) = &hold.operation {
            println!("    call {}", escape_bytes(operation.as_bytes()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
