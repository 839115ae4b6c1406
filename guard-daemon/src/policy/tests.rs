use super::*;

const TEST_POLICY: &str = r#"
version = 1
[defaults]
hold_timeout = "90s"

[[rule]]
id = "tf-destroy"
programs = ["terraform"]
args_any = ["destroy"]
action = "hold"

[[rule]]
id = "tf-destroy-scratch"
programs = ["terraform"]
args_all = ["destroy", "-target=scratch"]
action = "allow"

[[rule]]
id = "tf-nuke"
programs = ["terraform"]
args_all = ["destroy", "--nuke"]
action = "deny"
message = "never"

[[rule]]
id = "tf-log"
programs = ["terraform"]
args_any = ["apply"]
action = "audit"
timeout = "5s"
"#;

fn test_policy() -> Policy {
    Policy::parse(TEST_POLICY, "test").unwrap()
}

fn decide(policy: &Policy, argv: &[&str]) -> (Action, Option<String>) {
    let explanation = policy.evaluate(argv[0], argv);
    (explanation.action, explanation.rule)
}

#[test]
fn precedence_allow_carves_out_then_most_severe_wins() {
    let p = test_policy();
    assert_eq!(
        decide(&p, &["terraform", "destroy"]),
        (Action::Hold, Some("tf-destroy".into()))
    );
    assert_eq!(
        decide(&p, &["terraform", "destroy", "-target=scratch"]),
        (Action::Allow, Some("tf-destroy-scratch".into()))
    );
    assert_eq!(
        decide(&p, &["terraform", "--nuke", "destroy"]),
        (Action::Deny, Some("tf-nuke".into()))
    );
    assert_eq!(
        decide(&p, &["terraform", "apply"]),
        (Action::Audit, Some("tf-log".into()))
    );
    assert_eq!(decide(&p, &["terraform", "plan"]), (Action::Allow, None));
    assert_eq!(decide(&p, &["tofu", "destroy"]), (Action::Allow, None));
}

#[test]
fn timeouts_come_from_rule_or_defaults() {
    let p = test_policy();
    assert_eq!(
        p.rule("tf-destroy").unwrap().timeout,
        Duration::from_secs(90)
    );
    assert_eq!(p.rule("tf-log").unwrap().timeout, Duration::from_secs(5));
}

#[test]
fn watched_programs_exclude_allow_only_programs() {
    let p = Policy::parse(
        r#"
version = 1
[[rule]]
id = "a"
programs = ["ls"]
action = "allow"
[[rule]]
id = "b"
programs = ["rm", "shred"]
action = "hold"
[[rule]]
id = "c"
programs = ["rm"]
action = "audit"
"#,
        "t",
    )
    .unwrap();
    assert_eq!(p.watched_programs(), vec!["rm", "shred"]);
}

#[test]
fn invalid_policies_are_refused_with_the_reason() {
    let cases = [
        ("version = 2", "schema version 2"),
        ("version = 1\n[[rule]]\nid='x'\nprograms=[]\naction='hold'", "names no programs"),
        (
            "version = 1\n[[rule]]\nid='x'\nprograms=['a']\naction='hold'\n[[rule]]\nid='x'\nprograms=['a']\naction='hold'",
            "used twice",
        ),
        ("version = 1\n[[rule]]\nid='x'\nprograms=['a']\naction='explode'", "unknown variant"),
        ("version = 1\nbogus = 3", "unknown field"),
        ("version = 1\n[[rule]]\nid='x'\nprograms=['a']\nargs_any=['a||b']\naction='hold'", "empty alternative"),
    ];
    for (text, expected) in cases {
        let err = Policy::parse(text, "bad.toml").unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(err.contains("bad.toml"), "{err}");
    }
}

#[test]
fn default_policy_holds_the_classics() {
    let p = Policy::embedded_default();
    let held = [
        &["terraform", "destroy"][..],
        &["terraform", "apply", "-destroy"],
        &["tofu", "-chdir=infra", "destroy", "-auto-approve"],
        &["rm", "-rf", "/srv/data"],
        &["rm", "-fr", "/srv/data"],
        &["rm", "-r", "-f", "x"],
        &["rm", "-Rf", "x"],
        &["rm", "--recursive", "--force", "x"],
        &["git", "push", "--force", "origin", "main"],
        &["git", "push", "origin", "+main"],
        &["git", "push", "--force-with-lease=main", "origin"],
        &["kubectl", "--context", "prod", "delete", "ns", "payments"],
        &["aws", "ec2", "terminate-instances", "--instance-ids", "i-1"],
        &["aws", "s3", "rm", "s3://b", "--recursive"],
        &["psql", "-c", "DROP DATABASE prod;"],
        &["redis-cli", "FLUSHALL"],
    ];
    for argv in held {
        assert_eq!(decide(&p, argv).0, Action::Hold, "{argv:?}");
    }
    let allowed = [
        &["terraform", "plan"][..],
        &["rm", "-r", "build"],
        &["rm", "file"],
        &["git", "push", "origin", "main"],
        &["kubectl", "get", "pods"],
        &["aws", "s3", "ls"],
        &["psql", "-c", "SELECT 1"],
    ];
    for argv in allowed {
        assert_eq!(decide(&p, argv).0, Action::Allow, "{argv:?}");
    }
    assert_eq!(
        decide(&p, &["systemctl", "stop", "agent-guard.service"]).0,
        Action::Deny
    );
    assert!(p.watched_programs().contains(&"terraform"));
    assert!(p.agents.programs.iter().any(|a| a == "claude"));
}

#[test]
fn agent_packages_are_recognised_in_interpreter_argv() {
    let p = Policy::embedded_default();
    assert!(p
        .runs_agent_package(&[
            "node",
            "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"
        ])
        .is_some());
    assert!(p
        .runs_agent_package(&["python3", "-m", "aider.main"])
        .is_some());
    assert!(p.runs_agent_package(&["node", "server.js"]).is_none());
    // argv[0] is the interpreter itself, never a package marker.
    assert!(p.runs_agent_package(&["/opt/aider/bin/python3"]).is_none());
}
