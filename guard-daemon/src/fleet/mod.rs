//! The fleet relay (docs/fleet.md): guardd publishes every audit record,
//! and each hold and its end, to a NATS JetStream that the team's approvers
//! read, and takes signed decisions for its own host from it. The relay is
//! untrusted: a decision is a token guardd checks exactly as `guardctl
//! approve --token`, so a relay can delay or drop, never approve; no hold
//! needs it to be kept or ended.
pub mod bundle;
mod policy;
mod relay;
pub mod subjects;

pub use policy::bucket;
pub use relay::{connect, ensure_streams, run};

/// Seconds since the epoch, as messages on the relay carry time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
