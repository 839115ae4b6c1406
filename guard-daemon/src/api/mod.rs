//! The API-client gate's reading of what a stopped process was about to
//! send: HTTP/1.x requests in TLS writes (`http`, `conns`), the AWS call
//! in a request (`aws`), which libraries carry the probes (`libs`) and
//! where on their functions (`prologue`; Go binaries' own write: `golang`),
//! and the stopped process's memory (`memory`).
//! Judging is the policy's (`policy::api`).
pub mod aws;
pub mod conns;
pub mod golang;
pub mod http;
pub mod http2;
pub mod libs;
pub mod memory;
pub mod prologue;

use crate::policy::api::ApiCall;

/// The call of the first request in `bytes` (for `guardctl explain`).
pub fn call_in_request(bytes: &[u8]) -> Result<ApiCall, String> {
    let stream = http::parse(bytes, 0);
    let request = stream
        .requests
        .first()
        .ok_or("no HTTP/1.x request head in the input (a blank line ends the head)")?;
    Ok(conns::call_of(request, aws::call_of(request)))
}
