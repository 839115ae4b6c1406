use std::{io::Write as _, path::Path, process::ExitCode};

use guard_daemon::{
    client,
    protocol::{Request, Response},
};

/// Follow holds and decisions as they happen.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line: the pending holds first, then every audit record.
    #[arg(long)]
    json: bool,
}

pub fn run(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for response in client::stream(socket, Request::Watch)? {
        let response = response?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&response)?)?;
            out.flush()?;
            continue;
        }
        match response {
            Response::Pending { holds } => {
                for hold in holds {
                    writeln!(
                        out,
                        "pending {}: {} (rule {}, {}/{} approvals)",
                        hold.id,
                        hold.argv.join(" "),
                        hold.rule,
                        hold.approved_by.len(),
                        hold.approvals_needed
                    )?;
                }
            }
            Response::Event { record } => writeln!(out, "{}", describe(&record))?,
            Response::Error { message } => writeln!(out, "guardd: {message}")?,
            other => writeln!(out, "{other:?}")?,
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line for a person: what happened to which request. Values are already escaped.
fn describe(record: &serde_json::Value) -> String {
    let field = |name: &str| record[name].as_str().unwrap_or("").to_string();
    let argv: Vec<&str> = record["argv"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut line = format!("{} {}", field("event"), field("request_id"));
    for (label, name) in [
        ("decision", "decision"),
        ("rule", "rule"),
        ("by", "approver"),
        ("via", "channel"),
        ("why", "reason"),
    ] {
        let value = field(name);
        if !value.is_empty() {
            line.push_str(&format!(" {label}={value}"));
        }
    }
    if !argv.is_empty() {
        line.push_str(&format!(": {}", argv.join(" ")));
    }
    line
}
