//! Any policy text: a policy or an error naming the problem, never a panic;
//! a policy that loads also judges commands without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    guard_daemon::fuzzing::policy_text(data);
});
