//! Any bytes on the control socket: a request or an error message, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    guard_daemon::fuzzing::request_line(data);
});
