//! `guardctl --fleet URL watch`: every host's holds as they come and end.
//! The holds pending now come first; then each change, as the hosts
//! publish them. It only shows: deciding takes `approve`/`deny --sign`.
use std::{process::ExitCode, time::Duration};

use async_nats::jetstream;
use futures_util::StreamExt as _;
use guard_daemon::{
    escape::escape_bytes,
    fleet::subjects::{self, HoldState},
};

use super::{connect, runtime, Relay};

pub fn watch(relay: &Relay, url: &str, json: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let js = jetstream::new(connect(relay, url).await?);
        let stream = loop {
            match js.get_stream(subjects::HOLDS_STREAM).await {
                Ok(stream) => break stream,
                // No host has published yet.
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        // The last state of every hold, then each new one: nothing published
        // between reading what is pending and following is missed.
        let mut messages = super::last_states(&stream).await?;
        let mut caught_up = stream.cached_info().state.messages == 0;
        if !json && !caught_up {
            println!("pending now:");
        }
        // Holds shown while catching up: their ends are news, even then.
        let mut shown = std::collections::HashSet::new();
        while let Some(message) = messages.next().await {
            let message = message?;
            let last_of_catch_up =
                !caught_up && message.info().map_or(true, |info| info.pending == 0);
            match serde_json::from_slice::<HoldState>(&message.payload) {
                // While catching up, holds that ended before are history.
                Ok(state) if caught_up || state.hold.is_some() || shown.contains(&state.id) => {
                    if !caught_up {
                        shown.insert(state.id.clone());
                    }
                    show(&state, json)?;
                }
                Ok(_) => {}
                Err(err) => eprintln!(
                    "guardctl: a hold state on {} is not readable, skipped: {err}",
                    escape_bytes(message.subject.as_bytes())
                ),
            }
            if last_of_catch_up {
                caught_up = true;
                if !json {
                    println!("following (Ctrl-C to stop):");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn show(state: &HoldState, json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(state)?)?;
        return Ok(out.flush()?);
    }
    // Hosts escape what they publish; the relay is not trusted to.
    let host = escape_bytes(state.host.as_bytes());
    let id = escape_bytes(state.id.as_bytes());
    match (&state.hold, &state.ended) {
        (Some(hold), _) => writeln!(
            out,
            "{host}  {id}  held by rule {}  ({} of {} approvals)\n    {}",
            escape_bytes(hold.rule.as_bytes()),
            hold.approved_by.len(),
            hold.approvals_needed,
            escape_bytes(hold.argv.join(" ").as_bytes()),
        )?,
        (None, Some(ended)) => writeln!(
            out,
            "{host}  {id}  ended: {}",
            escape_bytes(ended.as_bytes())
        )?,
        (None, None) => writeln!(out, "{host}  {id}  ended")?,
    }
    Ok(out.flush()?)
}
