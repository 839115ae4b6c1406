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

/// Reads `data` as the writes a client made on one TLS connection, cut
/// where the first byte says, then as one raw request and as SQL: the
/// API-client gate's reading never panics, whatever the bytes.
pub fn api_writes(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let policy = policy_for_api();
    let mut conns = crate::api::conns::Conns::default();
    let step = usize::from(cut).max(1);
    for (at, write) in rest.chunks(step).enumerate() {
        // Every third write as if more of it were past what guardd reads.
        let unread = if at % 3 == 2 { u64::from(cut) } else { 0 };
        let read = conns.read_write(1, 7, at as u64, write, unread);
        for call in &read.calls {
            let _ = policy.judge_api(call);
            let _ = call.describe();
        }
    }
    if let Ok(call) = crate::api::call_in_request(rest) {
        let _ = policy.judge_api(&call);
    }
    let text = String::from_utf8_lossy(rest);
    let _ = policy.judge_api(&crate::policy::api::ApiCall {
        sql: Some(text.into_owned()),
        ..Default::default()
    });
}

fn policy_for_api() -> &'static crate::policy::Policy {
    static POLICY: std::sync::OnceLock<crate::policy::Policy> = std::sync::OnceLock::new();
    POLICY.get_or_init(crate::policy::Policy::embedded_default)
}
