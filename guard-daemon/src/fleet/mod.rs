//! The fleet relay (docs/fleet.md): guardd publishes every audit record,
//! and each hold and its end, to a NATS JetStream that the team's approvers
//! read, and takes signed decisions for its own host from it. The relay is
//! untrusted: a decision is a token guardd checks exactly as `guardctl
//! approve --token`, so a relay can delay or drop, never approve; no hold
//! needs it to be kept or ended.
mod relay;
pub mod subjects;

pub use relay::{connect, run};
