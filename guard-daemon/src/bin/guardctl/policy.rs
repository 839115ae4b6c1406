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
    /// With --fleet: sign FILE and publish it as the next version of a
    /// policy bundle; hosts whose `[fleet] policy_signers` list the key load
    /// it on top of their own files.
    Publish {
        /// The policy layer (a policy file without `[fleet]`, paths absolute).
        file: PathBuf,
        /// The signing key (as for `guardctl sign --key`).
        #[arg(long)]
        sign: PathBuf,
        /// The bundle: hosts follow the one their `[fleet] policy_name` names.
        #[arg(long, default_value = "default")]
        name: String,
        /// The version (default: the one on the relay plus one); hosts take
        /// only versions newer than the one they run.
        #[arg(long)]
        version: Option<u64>,
    },
}

pub fn run(relay: &super::fleet::Relay, command: Command) -> anyhow::Result<ExitCode> {
    let files = match command {
        Command::Check { files } => files,
        Command::Publish {
            file,
            sign,
            name,
            version,
        } => return super::fleet::publish(relay, &file, &sign, &name, version),
    };
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
