//! Policy files: refused with the reason, merged with the default pack and
//! drop-ins in order, webhook secrets read beside them.
use super::{super::*, decide};

#[test]
fn invalid_policies_are_refused_with_the_reason() {
    let rule = "[[rule]]\nid='x'\nprograms=['a']";
    let cases = [
        ("version = 2".to_string(), "schema version 2"),
        (
            "version = 1\n[[rule]]\nid='x'\nprograms=[]\naction='hold'".into(),
            "names no programs",
        ),
        (
            format!("version = 1\n{rule}\naction='hold'\n{rule}\naction='hold'"),
            "used twice",
        ),
        (
            format!("version = 1\n{rule}\naction='explode'"),
            "unknown variant",
        ),
        ("version = 1\nbogus = 3".into(), "unknown field"),
        (
            format!("version = 1\n{rule}\nargs_any=['a||b']\naction='hold'"),
            "empty alternative",
        ),
        (
            format!("version = 1\n{rule}\nsql=['drop_everything']\naction='hold'"),
            "unknown sql kind",
        ),
        (
            format!("version = 1\n{rule}\npaths=['/a[']\naction='hold'"),
            "bad path glob",
        ),
        (
            format!("version = 1\n{rule}\naction='hold'\napprovals=0"),
            "at least 1",
        ),
        (format!("version = 1\n{rule}"), "has no action"),
        (
            format!("version = 1\n{rule}\naction='hold'\nexamples.match=['b x']"),
            "example `b x` should match",
        ),
        (
            format!("version = 1\n{rule}\naction='hold'\nexamples.no_match=['a x']"),
            "example `a x` should not match",
        ),
        ("version = 1\nrule = 'x'".into(), "line 3, column 8"),
    ];
    for (text, expected) in cases {
        let err = Policy::parse(&format!("base = 'none'\n{text}"), "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(err.contains("bad.toml"), "{err}");
    }
}

#[test]
fn user_files_extend_and_override_the_default_pack() {
    let default = Policy::embedded_default();
    let layered = Policy::parse(
        r#"
version = 1
[agents]
programs = ["my-agent"]
[[rule]]
id = "terraform-destroy"
disabled = true
[[rule]]
id = "deploy-prod"
programs = ["deploy"]
args_any = ["prod"]
action = "hold"
"#,
        "user.toml",
    )
    .unwrap();
    assert_eq!(layered.rules.len(), default.rules.len());
    assert!(layered.rule("terraform-destroy").is_none());
    assert_eq!(decide(&layered, &["deploy", "prod"]).0, Action::Hold);
    assert_eq!(decide(&layered, &["terraform", "destroy"]).0, Action::Allow);
    assert_eq!(
        decide(&layered, &["rm", "-rf", "/"]).0,
        Action::Hold,
        "the rest of the pack stays"
    );
    assert!(layered.agents.programs.contains(&"claude".to_string()));
    assert!(layered.agents.programs.contains(&"my-agent".to_string()));
    assert!(layered
        .source
        .starts_with("embedded default policy + user.toml"));
    assert_ne!(layered.version, default.version);
    assert!(default.version.starts_with("default-"));
}

#[test]
fn dropins_are_merged_in_file_name_order() {
    let dir = tempfile_dir();
    let main = dir.join("policy.toml");
    std::fs::write(
        &main,
        "version = 1\nbase = 'none'\n[[rule]]\nid='r'\nprograms=['x']\naction='audit'\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("policy.d")).unwrap();
    std::fs::write(
        dir.join("policy.d/20-b.toml"),
        "version = 1\n[[rule]]\nid='r'\nprograms=['x']\naction='deny'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policy.d/10-a.toml"),
        "version = 1\n[[rule]]\nid='r'\nprograms=['x']\naction='hold'\n",
    )
    .unwrap();
    std::fs::write(dir.join("policy.d/notes.txt"), "not policy").unwrap();
    let policy = Policy::load(&main).unwrap();
    assert_eq!(
        decide(&policy, &["x"]).0,
        Action::Deny,
        "20-b is applied after 10-a"
    );
    assert_eq!(Policy::files(&main).len(), 3);
    std::fs::write(
        dir.join("policy.d/30-broken.toml"),
        "version = 1\n[[rule]]\nid=",
    )
    .unwrap();
    let err = Policy::load(&main).unwrap_err().to_string();
    assert!(
        err.contains("30-broken.toml") && err.contains("line 3"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agent-guard-policy-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn webhooks_read_their_secret_beside_the_policy_and_refuse_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("policy.toml");
    let hook = |extra: &str| {
        format!("version = 1\nbase = 'none'\n[[notify.webhook]]\nurl = 'https://hooks.example/x'\n{extra}\n")
    };
    std::fs::write(&main, hook("secret_file = 'hook.secret'")).unwrap();
    let err = Policy::load(&main).unwrap_err().to_string();
    assert!(err.contains("hook.secret"), "{err}");
    std::fs::write(dir.path().join("hook.secret"), "k3y\n").unwrap();
    let policy = Policy::load(&main).unwrap();
    let webhook = &policy.notify.webhooks[0];
    assert_eq!(webhook.secret.as_ref().unwrap().0, b"k3y");
    assert!(webhook.wants("hold") && webhook.wants("deny") && !webhook.wants("allow"));
    assert_eq!(
        format!("{webhook:?}").matches("k3y").count(),
        0,
        "secrets are not printed"
    );
    for (extra, why) in [
        ("events = ['hold', 'nope']", "unknown variant `nope`"),
        ("url2 = 1", "unknown field"),
    ] {
        let err = Policy::parse(&hook(extra), "t").unwrap_err().to_string();
        assert!(err.contains(why), "{extra}: {err}");
    }
    let err = Policy::parse(
        "version = 1\n[[notify.webhook]]\nurl = 'file:///etc/passwd'\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("only http and https"), "{err}");
}
