use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use guard_daemon::{
    client::{self, ClientError},
    policy::{Action, CommandContext, Explanation, OnTimeout, Policy},
    protocol::{Request, Response},
};

/// Show what the policy would do with a command, and why.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// Judge with this policy file (and policy.d/ beside it) instead of asking guardd.
    #[arg(long, value_name = "FILE")]
    policy: Option<std::path::PathBuf>,
    /// Working directory to judge the command in (default: the current one).
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variable for the judgement (repeatable; HOME defaults to yours).
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    /// Judge an API call by the `[[api]]` rules instead: ARGV is `aws
    /// SERVICE OPERATION [REGION]`, `http METHOD HOST PATH` or `sql[@DATABASE] TEXT`.
    #[arg(long, conflicts_with = "request")]
    api: bool,
    /// Judge the raw HTTP/1.x request in FILE (`-`: stdin) by the `[[api]]` rules.
    #[arg(long, value_name = "FILE")]
    request: Option<std::path::PathBuf>,
    #[arg(
        required_unless_present = "request",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGV"
    )]
    argv: Vec<String>,
}

pub fn run(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if args.api || args.request.is_some() {
        return run_api(socket, args);
    }
    let mut env: Vec<(String, String)> = args
        .env
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--env {pair:?} is not K=V"))
        })
        .collect::<anyhow::Result<_>>()?;
    if !env.iter().any(|(k, _)| k == "HOME") {
        if let Some(home) = std::env::var_os("HOME") {
            env.push(("HOME".into(), home.to_string_lossy().into_owned()));
        }
    }
    let cwd = match args.cwd {
        Some(cwd) => cwd,
        None => std::env::current_dir()?.to_string_lossy().into_owned(),
    };
    let local = |policy: &Policy| {
        let mut command = CommandContext::from_argv(&args.argv);
        command.cwd = Some(cwd.clone());
        command.env = env.clone();
        let mut explanation = policy.judge(&command);
        explanation.kernel = Some(policy.kernel_says(&args.argv, |_| None));
        explanation
    };
    let explanation = match &args.policy {
        Some(file) => local(&Policy::load(file)?),
        None => {
            let request = Request::Explain {
                argv: args.argv.clone(),
                cwd: Some(cwd.clone()),
                env: env.clone(),
            };
            match client::call(socket, request) {
                Ok(Response::Explain(explanation)) => *explanation,
                Ok(Response::Error { message }) => anyhow::bail!("{message}"),
                Ok(other) => return Err(super::unexpected(other)),
                Err(ClientError::Connect { path, .. }) => {
                    eprintln!("guardctl: guardd not reachable at {}; judging with the embedded default policy", path.display());
                    local(&Policy::embedded_default())
                }
                Err(err) => return Err(err.into()),
            }
        }
    };
    print(&explanation, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `--api` and `--request`: judged by guardd, or by `--policy` here.
fn run_api(socket: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let request = match &args.request {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            Some(text)
        }
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let call = args.api.then(|| args.argv.join(" "));
    let explanation = match &args.policy {
        Some(file) => {
            let policy = Policy::load(file)?;
            let call = match (&call, &request) {
                (Some(call), _) => guard_daemon::policy::api::ApiCall::parse(call),
                (None, Some(request)) => guard_daemon::api::call_in_request(request.as_bytes()),
                (None, None) => unreachable!("clap requires one"),
            };
            policy.judge_api(&call.map_err(anyhow::Error::msg)?)
        }
        None => match client::call(socket, Request::ExplainApi { call, request })? {
            Response::Explain(explanation) => *explanation,
            Response::Error { message } => anyhow::bail!("{message}"),
            other => return Err(super::unexpected(other)),
        },
    };
    if !args.json {
        println!("call: {}", explanation.program);
    }
    print(&explanation, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print(explanation: &Explanation, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(explanation)?);
        return Ok(());
    }
    let action = serde_json::to_value(explanation.action)?;
    println!(
        "{} (rule {})",
        action.as_str().unwrap_or("?"),
        explanation.rule.as_deref().unwrap_or("none")
    );
    if !explanation.why.is_empty() {
        println!("  why: {}", explanation.why.join("; "));
    }
    if explanation.matched.len() > 1 {
        println!("  matched: {}", explanation.matched.join(", "));
    }
    if let Some(kernel) = &explanation.kernel {
        println!("  in a session: {kernel}");
    }
    if let Some(message) = &explanation.message {
        println!("  message: {message}");
    }
    if explanation.action == Action::Hold {
        let terms = &explanation.terms;
        println!(
            "  hold: {} approval(s) from {}{}; {} after {}s",
            terms.approvals_needed(),
            terms.approvers_in_words(),
            if terms.self_approval {
                ""
            } else {
                " (not the session's own user)"
            },
            match terms.on_timeout {
                OnTimeout::Allow => "allowed",
                OnTimeout::Deny => "denied",
            },
            terms.timeout_secs
        );
    }
    if !explanation.terms_from.is_empty() {
        println!(
            "  terms: the strictest of rules {}",
            explanation.terms_from.join(", ")
        );
    }
    Ok(())
}
