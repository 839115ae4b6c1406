//! `guardctl --fleet URL ...`: the holds, hosts and policy bundles of every
//! host that joined the relay, read and decided from here. Nothing needs a
//! shell on a host; each host checks every signature itself.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt as _;
use guard_daemon::{
    escape::escape_bytes,
    fleet::subjects::{self, HoldState},
};

mod decide;
mod publish;
mod status;
mod watch;

pub use decide::{decide, pending};
pub use publish::publish;
pub use status::status;
pub use watch::watch;

/// How to reach the relay.
#[derive(clap::Args, Clone)]
pub struct Relay {
    /// The fleet's NATS relay (`nats://host:4222`): `pending`, `approve`
    /// and `deny` then act on the holds of every host that joined it.
    #[arg(long, global = true, env = "AGENT_GUARD_FLEET")]
    pub fleet: Option<String>,
    /// A NATS credentials file for the relay.
    #[arg(long, global = true, requires = "fleet")]
    pub fleet_credentials: Option<PathBuf>,
    /// A PEM CA file for the relay's TLS certificate.
    #[arg(long, global = true, requires = "fleet")]
    pub fleet_ca: Option<PathBuf>,
}

const READ_WAIT: Duration = Duration::from_secs(5);

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(super) async fn connect(relay: &Relay, url: &str) -> anyhow::Result<async_nats::Client> {
    guard_daemon::fleet::connect(
        url,
        "guardctl",
        relay.fleet_credentials.as_deref(),
        relay.fleet_ca.as_deref(),
        false,
    )
    .await
    .map_err(|why| anyhow::anyhow!("fleet relay {url}: {why}"))
}

/// Every hold's last state on the relay.
/// The last message of every hold's subject, then each new one.
pub(super) async fn last_states(
    stream: &jetstream::stream::Stream,
) -> anyhow::Result<consumer::pull::Ordered> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::ALL_HOLDS.into(),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

pub(super) async fn states(js: &jetstream::Context) -> anyhow::Result<Vec<HoldState>> {
    let mut stream = match js.get_stream(subjects::HOLDS_STREAM).await {
        Ok(stream) => stream,
        // No host has published yet.
        Err(_) => return Ok(Vec::new()),
    };
    if stream.info().await?.state.messages == 0 {
        return Ok(Vec::new());
    }
    let mut messages = last_states(&stream).await?;
    let mut states = Vec::new();
    while let Some(message) = tokio::time::timeout(READ_WAIT, messages.next())
        .await
        .context("the relay stopped sending the holds")?
    {
        let message = message?;
        match serde_json::from_slice::<HoldState>(&message.payload) {
            Ok(state) => states.push(state),
            Err(err) => eprintln!(
                "guardctl: a hold state on {} is not readable, skipped: {err}",
                escape_bytes(message.subject.as_bytes())
            ),
        }
        if message.info().map_or(true, |info| info.pending == 0) {
            break;
        }
    }
    Ok(states)
}
