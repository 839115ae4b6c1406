//! Entry points shared by the fuzz targets and the test that replays their
//! corpus, so both exercise exactly the same code.

/// Parses `data` as a policy on its own (`base = "none"` or not, as written)
/// and, when it loads, judges a few commands with it.
pub fn policy_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = crate::policy::Policy::parse(text, "fuzz") {
        for argv in [&["rm", "-rf", "/"][..], &["git", "push", "-f"], &["x"]] {
            let _ = policy.evaluate(argv);
        }
    }
}

/// Decodes `data` as a control-socket request line.
pub fn request_line(data: &[u8]) {
    let _ = crate::protocol::decode_request(data);
}
