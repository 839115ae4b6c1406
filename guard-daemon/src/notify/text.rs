//! One line for people about an audit record, for Slack-compatible `text`
//! fields and desktop notifications. Record values are already escaped for
//! control characters; Slack's three special characters are escaped here.
use serde_json::Value;

/// (summary, body) of a record.
pub fn describe(host: &str, record: &Value) -> (String, String) {
    let field = |name: &str| record[name].as_str().unwrap_or("").to_string();
    let id = field("request_id");
    let command = record["argv"]
        .as_array()
        .map(|argv| {
            argv.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let by = field("approver");
    let reason = field("reason");
    let summary = match (field("event").as_str(), field("decision").as_str()) {
        ("hold", _) | ("readopt", _) => format!("agent-guard held request {id} on {host}"),
        ("approve", "hold") => format!("agent-guard: request {id} has an approval ({reason})"),
        ("approve", _) => format!("agent-guard: request {id} approved"),
        ("deny", _) => format!("agent-guard: request {id} denied"),
        ("timeout", decision) => format!("agent-guard: request {id} timed out ({decision})"),
        ("refuse", _) => format!("agent-guard refused an attempt on request {id}"),
        ("exit", _) => format!("agent-guard: held request {id} exited"),
        (event, _) => format!("agent-guard {event} {id}").trim_end().to_string(),
    };
    let mut body = vec![format!("`{}`", code(&command))];
    let operation = field("operation");
    if !operation.is_empty() {
        // A held system call of that command (the syscall gate).
        body.push(format!("operation: `{}`", code(&operation)));
    }
    for (label, name) in [("rule", "rule"), ("agent", "agent"), ("cwd", "cwd")] {
        let value = field(name);
        if !value.is_empty() {
            body.push(format!("{label}: {value}"));
        }
    }
    if let Some(session) = record["session"].as_u64() {
        body.push(format!("session: {session}"));
    }
    if !by.is_empty() {
        body.push(format!("by: {by}"));
    }
    if !reason.is_empty() && field("event") != "approve" {
        body.push(format!("why: {reason}"));
    }
    if matches!(field("event").as_str(), "hold" | "readopt") {
        body.push(format!(
            "approve: `guardctl approve {id}` or `guardctl approve {id} --token TOKEN`; deny: `guardctl deny {id}`"
        ));
    }
    (summary, body.join("\n"))
}

/// The Slack `text`: summary, then the body, with &, < and > escaped.
pub fn slack(host: &str, record: &Value) -> String {
    let (summary, body) = describe(host, record);
    format!("{summary}\n{body}")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A backtick would end the code span early.
fn code(text: &str) -> String {
    text.replace('`', "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_text_names_the_command_and_how_to_decide() {
        let record = serde_json::json!({
            "event": "hold", "request_id": "ab-3", "argv": ["terraform", "destroy", "<x>`y`&"],
            "rule": "tf", "session": 4, "agent": "claude", "cwd": "/srv"
        });
        let text = slack("build1", &record);
        assert!(
            text.starts_with("agent-guard held request ab-3 on build1\n"),
            "{text}"
        );
        assert!(
            text.contains("`terraform destroy &lt;x&gt;'y'&amp;`"),
            "{text}"
        );
        assert!(text.contains("guardctl approve ab-3"), "{text}");
        assert!(text.contains("session: 4"), "{text}");
    }

    #[test]
    fn decisions_say_who_decided() {
        let record = serde_json::json!({
            "event": "deny", "request_id": "ab-3", "argv": ["rm"], "approver": "uid:0", "decision": "deny"
        });
        let (summary, body) = describe("h", &record);
        assert_eq!(summary, "agent-guard: request ab-3 denied");
        assert!(body.contains("by: uid:0"), "{body}");
    }

    #[test]
    fn gated_calls_name_their_operation() {
        let record = serde_json::json!({
            "event": "hold", "request_id": "ab-4", "argv": ["python3", "-c", "..."],
            "operation": "unlink /home/dev/.ssh/id_ed25519"
        });
        let (_, body) = describe("h", &record);
        assert!(
            body.contains("operation: `unlink /home/dev/.ssh/id_ed25519`"),
            "{body}"
        );
    }
}
