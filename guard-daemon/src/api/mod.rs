//! The API-client gate's reading of what a stopped process was about to
//! send: HTTP/1.x requests in TLS writes (`http`, `conns`), the AWS call
//! in a request (`aws`), and which libraries carry the probes (`libs`).
//! Judging is the policy's (`policy::api`).
pub mod aws;
pub mod conns;
pub mod http;
pub mod libs;
