use std::{
    collections::VecDeque,
    io::{BufRead as _, IsTerminal as _, Write as _},
    path::Path,
    process::ExitCode,
    sync::mpsc,
};

use guard_daemon::{
    client,
    protocol::{HoldView, Request, Response},
};

/// Follow holds and decisions as they happen; on a terminal, approve or deny them.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line: the pending holds first, then every audit record.
    #[arg(long)]
    json: bool,
    /// Only show, never ask (the default when stdin or stdout is not a terminal).
    #[arg(long)]
    no_prompt: bool,
}

/// What the loop waits on: guardd's stream, or a line the person typed.
enum Input {
    Guardd(Result<Response, client::ClientError>),
    Typed(String),
    GuarddClosed,
}

pub fn run(socket: &Path, relay: &super::fleet::Relay, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(url) = &relay.fleet {
        return super::fleet::watch(relay, url, args.json);
    }
    let stream = client::stream(socket, Request::Watch)?;
    let prompt = !args.json
        && !args.no_prompt
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal();
    let (send, inputs) = mpsc::channel();
    let from_guardd = send.clone();
    std::thread::spawn(move || {
        for response in stream {
            if from_guardd.send(Input::Guardd(response)).is_err() {
                return;
            }
        }
        let _ = from_guardd.send(Input::GuarddClosed);
    });
    if prompt {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if send.send(Input::Typed(line)).is_err() {
                    return;
                }
            }
        });
    }
    let mut out = std::io::stdout().lock();
    // Holds shown and not yet decided, oldest first: the prompt asks about the first.
    let mut undecided: VecDeque<String> = VecDeque::new();
    // What came while an approval was asking for a password, handled after it.
    let mut deferred: VecDeque<Input> = VecDeque::new();
    loop {
        let input = match deferred.pop_front() {
            Some(input) => input,
            None => match inputs.recv() {
                Ok(input) => input,
                Err(_) => break,
            },
        };
        match input {
            Input::GuarddClosed => break,
            Input::Guardd(response) => {
                let response = response?;
                if args.json {
                    writeln!(out, "{}", serde_json::to_string(&response)?)?;
                    out.flush()?;
                    continue;
                }
                match response {
                    Response::Pending { holds } => {
                        for hold in &holds {
                            write!(out, "{}", describe_hold(hold))?;
                            undecided.push_back(hold.id.clone());
                        }
                    }
                    Response::Event { record } => {
                        if record["event"] == "hold" {
                            write!(out, "{}", describe_held_record(&record))?;
                            undecided.push_back(field(&record, "request_id"));
                        } else {
                            writeln!(out, "{}", describe(&record))?;
                            if ends_request(&record) {
                                let id = field(&record, "request_id");
                                undecided.retain(|pending| *pending != id);
                            }
                        }
                    }
                    Response::Error { message } => writeln!(out, "guardd: {message}")?,
                    other => writeln!(out, "{other:?}")?,
                }
            }
            Input::Typed(line) => {
                if let Some(id) = undecided.front().cloned() {
                    match line.trim() {
                        "a" | "approve" => {
                            // The stdin thread owns the terminal: a password
                            // prompt's answer is the next line it reads.
                            let ask = |prompt: &str, echo: bool| {
                                eprint!("{prompt}");
                                let _quiet = (!echo).then(super::decide::EchoOff::new);
                                loop {
                                    match inputs.recv() {
                                        Ok(Input::Typed(line)) => {
                                            if !echo {
                                                eprintln!();
                                            }
                                            return Some(line);
                                        }
                                        Ok(other) => deferred.push_back(other),
                                        Err(_) => return None,
                                    }
                                }
                            };
                            let result = super::decide::approve_with(socket, id.clone(), ask);
                            report(&mut out, result)?
                        }
                        "d" | "deny" => report(
                            &mut out,
                            super::call(
                                socket,
                                Request::Deny {
                                    id: id.clone(),
                                    reason: Some("denied in guardctl watch".into()),
                                },
                            ),
                        )?,
                        "s" | "skip" => {
                            undecided.pop_front();
                            undecided.push_back(id);
                        }
                        _ => writeln!(out, "answer a (approve), d (deny) or s (skip)")?,
                    }
                }
            }
        }
        if prompt {
            if let Some(id) = undecided.front() {
                write!(out, "request {id}: [a]pprove, [d]eny, [s]kip? ")?;
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the record closes its request (it leaves the pending list).
fn ends_request(record: &serde_json::Value) -> bool {
    match record["event"].as_str() {
        Some("deny" | "timeout" | "exit" | "release") => true,
        Some("approve") => record["decision"] == "allow",
        _ => false,
    }
}

fn report(out: &mut impl std::io::Write, result: anyhow::Result<Response>) -> std::io::Result<()> {
    match result {
        Ok(Response::Decided { id, state }) => writeln!(out, "{id}: {state:?}"),
        Ok(Response::Error { message }) => writeln!(out, "guardd: {message}"),
        Ok(other) => writeln!(out, "{other:?}"),
        Err(err) => writeln!(out, "guardctl: {err}"),
    }
}

fn field(record: &serde_json::Value, name: &str) -> String {
    record[name].as_str().unwrap_or("").to_string()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A hold in full, for the person who decides: what, where, why, who asked.
struct HoldText<'a> {
    id: &'a str,
    argv: &'a [String],
    /// A held system call (the syscall gate).
    operation: Option<&'a str>,
    rule: &'a str,
    why: &'a [String],
    agent: Option<&'a str>,
    session: u64,
    uid: u64,
    cwd: &'a str,
    exe: &'a str,
    context: &'a [String],
    ancestry: &'a [String],
    approvals: String,
}

impl std::fmt::Display for HoldText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HELD {}: {}", self.id, self.argv.join(" "))?;
        if let Some(operation) = self.operation {
            writeln!(f, "  operation {operation}")?;
        }
        writeln!(f, "  rule      {} ({})", self.rule, self.why.join("; "))?;
        writeln!(
            f,
            "  session   {} (agent {}), uid {}",
            self.session,
            self.agent.unwrap_or("-"),
            self.uid
        )?;
        writeln!(f, "  cwd       {}", self.cwd)?;
        writeln!(f, "  exe       {}", self.exe)?;
        if !self.context.is_empty() {
            writeln!(f, "  context   {}", self.context.join(" "))?;
        }
        if !self.ancestry.is_empty() {
            writeln!(f, "  ancestry  {}", self.ancestry.join(" <- "))?;
        }
        writeln!(f, "  approvals {}", self.approvals)
    }
}

fn describe_hold(hold: &HoldView) -> String {
    let mut who = if hold.approvers.is_empty() {
        String::new()
    } else {
        format!(", from {}", hold.approvers.join(" or "))
    };
    for list in &hold.also_approvers {
        match list.is_empty() {
            true => who.push_str(", also root or the command's own user"),
            false => who.push_str(&format!(", also from {}", list.join(" or "))),
        }
    }
    HoldText {
        id: &hold.id,
        argv: &hold.argv,
        operation: hold.operation.as_deref(),
        rule: &hold.rule,
        why: &hold.why,
        agent: hold.agent.as_deref(),
        session: hold.session.into(),
        uid: hold.uid.into(),
        cwd: &hold.cwd,
        exe: &hold.exe,
        context: &hold.context,
        ancestry: &hold.ancestry,
        approvals: format!(
            "{} of {} needed{who} (so far: {})",
            hold.approved_by.len(),
            hold.approvals_needed,
            if hold.approved_by.is_empty() {
                "none".to_string()
            } else {
                hold.approved_by.join(", ")
            }
        ),
    }
    .to_string()
}

fn describe_held_record(record: &serde_json::Value) -> String {
    let (argv, why, context, ancestry) = (
        strings(&record["argv"]),
        strings(&record["why"]),
        strings(&record["context"]),
        strings(&record["ancestry"]),
    );
    HoldText {
        id: record["request_id"].as_str().unwrap_or(""),
        argv: &argv,
        operation: record["operation"].as_str(),
        rule: record["rule"].as_str().unwrap_or(""),
        why: &why,
        agent: record["agent"].as_str(),
        session: record["session"].as_u64().unwrap_or(0),
        uid: record["uid"].as_u64().unwrap_or(0),
        cwd: record["cwd"].as_str().unwrap_or(""),
        exe: record["exe"].as_str().unwrap_or(""),
        context: &context,
        ancestry: &ancestry,
        approvals: "none yet (see `guardctl pending`)".into(),
    }
    .to_string()
}

/// One line for a person: what happened to which request. Values are already escaped.
fn describe(record: &serde_json::Value) -> String {
    let argv = strings(&record["argv"]);
    let mut line = format!("{} {}", field(record, "event"), field(record, "request_id"));
    for (label, name) in [
        ("decision", "decision"),
        ("rule", "rule"),
        ("by", "approver"),
        ("via", "channel"),
        ("why", "reason"),
    ] {
        let value = field(record, name);
        if !value.is_empty() {
            line.push_str(&format!(" {label}={value}"));
        }
    }
    if !argv.is_empty() {
        line.push_str(&format!(": {}", argv.join(" ")));
    }
    line
}
