//! `terraform apply PLAN` and `tofu apply PLAN`: argv says nothing of what a
//! saved plan does, so the plan file is read (a zip whose `tfplan` entry is
//! the `tfplan.Plan` protobuf message of terraform's planfile.proto). A plan
//! that deletes, replaces ("delete and recreate") or forgets a resource is
//! judged as a `destroy`, listing those resources; a plan that cannot be read
//! is judged as one too. The file is read when the exec stops: it can still
//! change before terraform reads it, so the pack holds every apply anyway and
//! this only decides which terms apply and what the person is shown.
use std::{io::Read as _, path::PathBuf};

use super::{command::CommandContext, elsewhere::Elsewhere, files, spec::Spec};
use crate::escape::escape_bytes;

/// The plan file's format version this reader knows (terraform >= 1.0 and
/// OpenTofu write 3).
const FORMAT_VERSION: u64 = 3;
/// At most this much of a plan file, and of its `tfplan` entry, is read.
const PLAN_LIMIT: u64 = 64 << 20;
/// Resources named in the reason, at most.
const LISTED: usize = 20;

#[derive(Clone, PartialEq, prost::Message)]
struct Plan {
    #[prost(uint64, tag = "1")]
    version: u64,
    #[prost(message, repeated, tag = "3")]
    resource_changes: Vec<ResourceInstanceChange>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceInstanceChange {
    #[prost(string, tag = "7")]
    deposed_key: String,
    #[prost(message, optional, tag = "9")]
    change: Option<Change>,
    #[prost(string, tag = "13")]
    addr: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Change {
    #[prost(int32, tag = "1")]
    action: i32,
}

/// What a planned action does to what exists; None for no-op, create,
/// read and update.
fn destructive(action: i32) -> Option<&'static str> {
    match action {
        0..=3 => None,
        5 => Some("deletes"),
        6 => Some("replaces (delete, then create)"),
        7 => Some("replaces (create, then delete)"),
        8 | 9 => Some("forgets"),
        // An action this reader does not know: counted against the plan.
        _ => Some("does an unknown action to"),
    }
}

/// Whether judging `program` reads a plan file (it needs the cwd).
pub fn reads(program: &str) -> bool {
    matches!(program, "terraform" | "tofu")
}

/// The `destroy` a saved plan amounts to, if it deletes, replaces or forgets
/// anything or cannot be read.
pub fn destroys(command: &CommandContext, spec: &Spec) -> Option<Elsewhere> {
    if !reads(&command.program) {
        return None;
    }
    let parsed = spec.parse(command.argv.get(1..).unwrap_or_default());
    let (subcommand, rest) = parsed.words.split_first()?;
    let plan = rest.first().filter(|_| subcommand == "apply")?;
    let chdir = spec.canonical("-chdir");
    let dir = (parsed.options.iter())
        .filter(|(name, _)| *name == chdir)
        .fold(PathBuf::from(command.cwd.as_deref()?), |at, (_, d)| {
            at.join(d)
        });
    let path = dir.join(plan);
    let via = match read_plan(&command.inside_root(&path)) {
        Ok(changes) if changes.is_empty() => return None,
        Ok(changes) => format!(
            "the saved plan {}, which {}",
            path.display(),
            list(&changes)
        ),
        Err(why) => format!("the saved plan {}, unreadable ({why})", path.display()),
    };
    let argv = vec![command.argv[0].clone(), "destroy".to_string()];
    Some(Elsewhere {
        via,
        command: CommandContext::from_argv(&argv).with_context_of(command),
    })
}

/// The plan's destructive changes: what it does, and to which address.
fn read_plan(path: &std::path::Path) -> Result<Vec<(&'static str, String)>, String> {
    let bytes = files::read_regular(path, PLAN_LIMIT).map_err(|err| err.to_string())?;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|err| err.to_string())?;
    let entry = archive
        .by_name("tfplan")
        .map_err(|err| format!("tfplan: {err}"))?;
    let mut tfplan = Vec::new();
    entry
        .take(PLAN_LIMIT + 1)
        .read_to_end(&mut tfplan)
        .map_err(|err| format!("tfplan: {err}"))?;
    if tfplan.len() as u64 > PLAN_LIMIT {
        return Err(format!("tfplan larger than {PLAN_LIMIT} bytes"));
    }
    let plan =
        <Plan as prost::Message>::decode(tfplan.as_slice()).map_err(|err| err.to_string())?;
    if plan.version != FORMAT_VERSION {
        return Err(format!(
            "format version {}, not {FORMAT_VERSION}",
            plan.version
        ));
    }
    Ok(plan
        .resource_changes
        .iter()
        .filter_map(|change| {
            let action = change.change.as_ref().map_or(0, |c| c.action);
            let what = destructive(action)?;
            // Addresses carry for_each keys the agent chose: escaped.
            let addr = escape_bytes(change.addr.as_bytes());
            let addr = match change.deposed_key.as_str() {
                "" => addr,
                key => format!("{addr} (deposed {})", escape_bytes(key.as_bytes())),
            };
            Some((what, addr))
        })
        .collect())
}

/// "deletes a, b; replaces (delete, then create) c", at most `LISTED` names.
fn list(changes: &[(&'static str, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (what, addr) in changes.iter().take(LISTED) {
        match groups.iter_mut().find(|(w, _)| w == what) {
            Some((_, addrs)) => addrs.push(addr),
            None => groups.push((what, vec![addr])),
        }
    }
    let mut text = (groups.iter())
        .map(|(what, addrs)| format!("{what} {}", addrs.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    if changes.len() > LISTED {
        text.push_str(&format!(" and {} more", changes.len() - LISTED));
    }
    text
}

#[cfg(test)]
mod tests;
