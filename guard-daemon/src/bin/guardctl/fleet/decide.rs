//! `guardctl --fleet URL pending | approve ID --sign KEY | deny ID --sign KEY`:
//! the holds of every host, read from the relay's stream, and decisions
//! signed here and published for the host that holds the request.
use std::{process::ExitCode, time::Duration};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use guard_daemon::{
    approval::Decision,
    escape::escape_bytes,
    fleet::{
        subjects::{self, HoldState},
        unix_now,
    },
};

use super::{connect, runtime, states, Relay};

/// How long a decision waits to be seen taken.
const DECIDED_WAIT: Duration = Duration::from_secs(10);

pub fn pending(relay: &Relay, url: &str, json: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = connect(relay, url).await?;
        let js = jetstream::new(client);
        let now = unix_now();
        let open: Vec<HoldState> = states(&js)
            .await?
            .into_iter()
            .filter(|s| s.hold.is_some())
            .collect();
        if json {
            println!("{}", serde_json::to_string_pretty(&open)?);
            return Ok(ExitCode::SUCCESS);
        }
        if open.is_empty() {
            println!("no pending requests on the relay");
        }
        for state in &open {
            let hold = state.hold.as_ref().expect("filtered");
            // Hosts and guardd escape what they publish; a relay is not
            // trusted to, so everything is escaped again here.
            println!(
                "{}  {}  rule {}  held {}s (as of {}s ago)\n    {}",
                escape_bytes(state.host.as_bytes()),
                escape_bytes(hold.id.as_bytes()),
                escape_bytes(hold.rule.as_bytes()),
                hold.held_secs,
                now.saturating_sub(state.at),
                escape_bytes(hold.argv.join(" ").as_bytes()),
            );
            if let Some(operation) = &hold.operation {
                println!("    call {}", escape_bytes(operation.as_bytes()));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Signs `decision` of hold `id` (on `host`, where ids could collide) with
/// `key` and publishes it for that host; waits to see it taken.
pub fn decide(
    relay: &Relay,
    id: &str,
    host: Option<&str>,
    key: Option<&std::path::Path>,
    decision: Decision,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    let url = relay.fleet.as_deref().context("no --fleet relay")?;
    let key = key.context("--fleet decides with --sign KEY only: the host checks the signature")?;
    runtime()?.block_on(async {
        let client = connect(relay, url).await?;
        let js = jetstream::new(client.clone());
        let candidates: Vec<HoldState> = states(&js)
            .await?
            .into_iter()
            .filter(|s| s.id == id && s.hold.is_some())
            .filter(|s| host.is_none_or(|h| s.host == h))
            .collect();
        let state = match candidates.as_slice() {
            [one] => one,
            [] => bail!("no pending request {id} on the relay"),
            _ => bail!("{id} is pending on several hosts: name one with --host"),
        };
        let hold = state.hold.as_ref().expect("filtered");
        let token =
            super::super::sign::sign_hold(hold, key, decision, super::super::decide::TOKEN_TTL)?;
        let message = subjects::Decision {
            id: id.to_string(),
            token,
            deny: decision == Decision::Deny,
            reason,
        };
        client
            .publish(
                subjects::decisions(&state.host),
                serde_json::to_vec(&message)?.into(),
            )
            .await?;
        client.flush().await?;
        // Taken when the hold's state changes; a host may need a second
        // approver, or be offline (it keeps holding; the token expires).
        let subject = subjects::hold(&state.host, id);
        let stream = js.get_stream(subjects::HOLDS_STREAM).await?;
        let deadline = tokio::time::Instant::now() + DECIDED_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(last) = stream.get_last_raw_message_by_subject(&subject).await else {
                continue;
            };
            let Ok(now) = serde_json::from_slice::<HoldState>(&last.payload) else {
                continue;
            };
            if let Some(ended) = now.ended {
                println!("{id} on {}: ended ({ended})", state.host);
                return Ok(ExitCode::SUCCESS);
            }
            let Some(now) = now.hold else { continue };
            let needed = now.approvals_needed as usize;
            if now.approved_by.len() > hold.approved_by.len() && now.approved_by.len() < needed {
                println!(
                    "{id} on {}: approval counted, {} of {needed}",
                    state.host,
                    now.approved_by.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
        eprintln!(
            "guardctl: published; {} has not acted on it within {}s (offline, or it refused \
             the token: its audit log says why)",
            state.host,
            DECIDED_WAIT.as_secs()
        );
        Ok(ExitCode::from(1))
    })
}
