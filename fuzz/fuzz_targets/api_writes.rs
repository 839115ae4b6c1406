//! Any bytes as the writes of a TLS connection, a raw request and SQL: the
//! API-client gate reads and judges them without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    guard_daemon::fuzzing::api_writes(data);
});
