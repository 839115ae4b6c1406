use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use guard_daemon::protocol::{Request, Response};

/// Show what the loaded policy would do with a command.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// Working directory to judge the command in.
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variable for the judgement (repeatable).
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGV"
    )]
    argv: Vec<String>,
}

pub fn run(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let env = args
        .env
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--env {pair:?} is not K=V"))
        })
        .collect::<anyhow::Result<_>>()?;
    let response = super::call(
        socket,
        Request::Explain {
            argv: args.argv,
            cwd: args.cwd,
            env,
        },
    )?;
    let Response::Explain(explanation) = response else {
        return Err(super::unexpected(response));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        let action = serde_json::to_value(explanation.action)?;
        println!(
            "{} (rule {}; matched: {})",
            action.as_str().unwrap_or("?"),
            explanation.rule.as_deref().unwrap_or("none"),
            if explanation.matched.is_empty() {
                "nothing".to_string()
            } else {
                explanation.matched.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
