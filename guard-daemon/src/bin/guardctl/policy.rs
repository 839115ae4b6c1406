use std::{path::PathBuf, process::ExitCode};

use guard_daemon::policy::Policy;

/// Policy file tools.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Check policy files (syntax, rules, examples); exit 0 when all are valid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Check { files } = command;
    let mut ok = true;
    for file in files {
        // Each file is checked as it would be loaded: on the default pack unless it says base = "none".
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("{}: {err}", file.display());
                ok = false;
                continue;
            }
        };
        // The id guardd keeps for its own files is refused here as guardd refuses it.
        match Policy::parse(&text, &file.display().to_string())
            .and_then(|policy| policy.with_self_protection(&[]))
        {
            Ok(policy) => println!(
                "{}: ok ({} rules, version {})",
                file.display(),
                policy.rules.len(),
                policy.version
            ),
            Err(err) => {
                eprintln!("{err}");
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
