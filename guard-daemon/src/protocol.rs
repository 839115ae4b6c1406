//! The control-socket protocol shared by guardd and guardctl: one JSON object
//! per line in each direction, request then response. The types are in the
//! guard-protocol crate (serde only, so that xtask can use them too); this
//! module keeps their old paths.
pub use guard_protocol::*;
