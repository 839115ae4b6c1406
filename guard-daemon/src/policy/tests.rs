use super::{file::PolicyFile, *};

const TEST_POLICY: &str = r#"
version = 1
base = "none"
[defaults]
hold_timeout = "90s"

[spec.terraform]
single_dash_long = true
value_options = ["-chdir", "-target"]

[[rule]]
id = "tf-destroy"
programs = ["terraform"]
subcommand = ["destroy"]
action = "hold"
examples.match = ["terraform destroy", "terraform -chdir=x destroy"]
examples.no_match = ["terraform plan -destroy"]

[[rule]]
id = "tf-destroy-scratch"
programs = ["terraform"]
subcommand = ["destroy"]
options = { target = "scratch*" }
action = "allow"

[[rule]]
id = "tf-nuke"
programs = ["terraform"]
subcommand = ["destroy"]
flags = ["-nuke"]
action = "deny"
message = "never"

[[rule]]
id = "tf-log"
programs = ["terraform"]
subcommand = ["apply"]
action = "audit"
timeout = "5s"
"#;

fn test_policy() -> Policy {
    Policy::parse(TEST_POLICY, "test").unwrap()
}

fn decide(policy: &Policy, argv: &[&str]) -> (Action, Option<String>) {
    let explanation = policy.evaluate(argv);
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
        decide(&p, &["terraform", "destroy", "-target=scratch-1"]),
        (Action::Allow, Some("tf-destroy-scratch".into()))
    );
    // The allow carve-out wins even over a deny that also matches.
    assert_eq!(
        decide(&p, &["terraform", "destroy", "-nuke", "-target", "scratch"]),
        (Action::Allow, Some("tf-destroy-scratch".into()))
    );
    assert_eq!(
        decide(&p, &["terraform", "-nuke", "destroy"]),
        (Action::Deny, Some("tf-nuke".into()))
    );
    assert_eq!(
        decide(&p, &["/usr/bin/terraform", "apply"]),
        (Action::Audit, Some("tf-log".into()))
    );
    assert_eq!(decide(&p, &["terraform", "plan"]), (Action::Allow, None));
    assert_eq!(decide(&p, &["tofu", "destroy"]), (Action::Allow, None));
}

#[test]
fn explanations_say_why() {
    let explanation = test_policy().evaluate(&["terraform", "-chdir=infra", "destroy", "-nuke"]);
    assert_eq!(explanation.matched, vec!["tf-destroy", "tf-nuke"]);
    assert_eq!(
        explanation.why,
        vec!["program terraform", "subcommand destroy", "flag nuke"]
    );
    assert_eq!(explanation.message.as_deref(), Some("never"));
}

#[test]
fn an_abbreviated_option_is_the_rules_option_and_says_so() {
    let policy = Policy::embedded_default();
    let explanation = policy.evaluate(&["git", "reset", "--har", "HEAD~1"]);
    assert_eq!(explanation.rule.as_deref(), Some("git-reset-hard"));
    assert_eq!(
        explanation.why,
        vec!["program git", "subcommand reset", "flag hard (abbreviated)"]
    );
    // A not_flags exception needs the option written in full.
    let dry = |argv: &[&str]| policy.evaluate(argv).action;
    assert_eq!(dry(&["git", "clean", "--force", "--dry"]), Action::Hold);
    assert_eq!(dry(&["git", "clean", "--forc", "--dry-run"]), Action::Allow);
}

#[test]
fn timeouts_come_from_rule_or_defaults() {
    let p = test_policy();
    assert_eq!(
        p.rule("tf-destroy").unwrap().terms.timeout(),
        Duration::from_secs(90)
    );
    assert_eq!(
        p.rule("tf-log").unwrap().terms.timeout(),
        Duration::from_secs(5)
    );
}

#[test]
fn watched_programs_exclude_allow_only_programs() {
    let p = Policy::parse(
        r#"
version = 1
base = "none"
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
    let watched = p.watched_programs();
    let rules: Vec<&String> = (watched.iter())
        .filter(|name| !wrappers::is_wrapper(name, None))
        .filter(|name| !elsewhere::programs().any(|p| p == name.as_str()))
        .filter(|name| !renames::PROGRAMS.contains(&name.as_str()))
        .collect();
    assert_eq!(rules, vec!["rm", "shred"]);
    // Wrappers, what runs commands elsewhere and rename: watched whenever any is.
    for wrapper in [
        "busybox",
        "ld-linux-x86-64.so.2",
        "ssh",
        "kubectl",
        "rename",
    ] {
        assert!(watched.iter().any(|name| name == wrapper), "{watched:?}");
    }
    assert!(Policy::parse("version = 1\nbase = \"none\"", "t")
        .unwrap()
        .watched_programs()
        .is_empty());
}

#[test]
fn a_wrapper_is_judged_as_the_program_it_runs() {
    let policy = Policy::embedded_default();
    for argv in [
        &["busybox", "rm", "-rf", "/srv/data"][..],
        &["/lib64/ld-linux-x86-64.so.2", "/bin/rm", "-rf", "/srv/data"],
        &[
            "ld-linux-x86-64.so.2",
            "--argv0",
            "rm",
            "/usr/bin/busybox",
            "-rf",
            "/srv",
        ],
        &["toybox", "git", "push", "--force"],
    ] {
        let explanation = policy.evaluate(argv);
        assert_eq!(explanation.action, Action::Hold, "{argv:?}");
    }
    let explanation = policy.evaluate(&["busybox", "rm", "-rf", "/srv/data"]);
    assert_eq!(explanation.program, "rm");
    assert_eq!(
        policy.evaluate(&["busybox", "ls", "-la"]).action,
        Action::Allow
    );
    assert!(policy.reads_context("busybox", None));
}

#[test]
fn conditions_on_env_cwd_uid_and_agent() {
    let p = Policy::parse(
        r#"
version = 1
base = "none"
[[rule]]
id = "prod-profile"
programs = ["aws"]
env = { AWS_PROFILE = "prod*" }
action = "hold"
[[rule]]
id = "in-infra"
programs = ["make"]
cwd = ["~/infra/**"]
action = "hold"
[[rule]]
id = "root-only"
programs = ["apt"]
uid = [0]
action = "hold"
[[rule]]
id = "codex-git"
programs = ["git"]
agents = ["codex"]
action = "audit"
"#,
        "t",
    )
    .unwrap();
    let mut command = CommandContext::from_argv(&["aws", "s3", "ls"]);
    assert_eq!(p.judge(&command).action, Action::Allow);
    command.env = vec![("AWS_PROFILE".into(), "prod-admin".into())];
    assert_eq!(p.judge(&command).action, Action::Hold);
    assert!(p.env_names().contains(&"AWS_PROFILE"));

    let mut make = CommandContext::from_argv(&["make", "deploy"]);
    make.env = vec![("HOME".into(), "/home/dev".into())];
    make.cwd = Some("/home/dev/infra/prod".into());
    assert_eq!(p.judge(&make).action, Action::Hold);
    make.cwd = Some("/home/dev/web".into());
    assert_eq!(p.judge(&make).action, Action::Allow);

    let mut apt = CommandContext::from_argv(&["apt", "remove", "x"]);
    apt.uid = Some(1000);
    assert_eq!(p.judge(&apt).action, Action::Allow);
    apt.uid = Some(0);
    assert_eq!(p.judge(&apt).action, Action::Hold);

    let mut git = CommandContext::from_argv(&["git", "status"]);
    git.agent = Some("claude".into());
    assert_eq!(p.judge(&git).action, Action::Allow);
    git.agent = Some("codex".into());
    assert_eq!(p.judge(&git).action, Action::Audit);
}

#[test]
fn symlinked_programs_are_judged_by_the_real_binary_too() {
    let p = Policy::embedded_default();
    let mut command = CommandContext::from_argv(&["/tmp/del", "-rf", "/"]);
    assert_eq!(p.judge(&command).action, Action::Allow);
    command.exe = Some("/usr/bin/rm".into());
    assert_eq!(p.judge(&command).action, Action::Hold);
}

#[test]
fn default_pack_is_large_and_every_rule_has_examples() {
    let p = Policy::embedded_default();
    assert!(p.rules.len() >= 60, "{} rules", p.rules.len());
    let file: PolicyFile = toml::from_str(DEFAULT_POLICY).unwrap();
    for rule in &file.rules {
        assert!(
            !rule.examples.matching.is_empty(),
            "rule {} has no examples",
            rule.id
        );
    }
    assert!(p.watched_programs().iter().any(|name| name == "terraform"));
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

#[test]
fn context_is_skipped_only_where_no_rule_could_read_it() {
    let p = Policy::embedded_default();
    let file: PolicyFile = toml::from_str(DEFAULT_POLICY).unwrap();
    let examples = file
        .rules
        .iter()
        .flat_map(|r| r.examples.matching.iter().chain(&r.examples.no_match));
    let (mut skipped, mut read) = (0, 0);
    for example in examples {
        let bare = CommandContext::from_argv(&example.words().unwrap());
        if p.reads_context(&bare.program, None) {
            read += 1;
            continue;
        }
        skipped += 1;
        // What a process could have: none of it may change the decision.
        for cwd in ["/", "/etc", "/home/dev/.ssh", "/home/dev/infra/prod"] {
            let mut full = CommandContext::from_argv(&example.words().unwrap());
            full.cwd = Some(cwd.into());
            full.env = vec![
                ("HOME".into(), "/home/dev".into()),
                ("AWS_PROFILE".into(), "prod-admin".into()),
                ("KUBECONFIG".into(), "/home/dev/.kube/prod".into()),
            ];
            full.uid = Some(0);
            assert_eq!(
                p.judge(&bare).action,
                p.judge(&full).action,
                "`{}` in {cwd}",
                example.display()
            );
        }
    }
    assert!(skipped > 20 && read > 20, "skipped {skipped}, read {read}");
    // Rules on env, cwd and uid make their programs read it.
    let conditions = Policy::parse(
        "version = 1\nbase = \"none\"\n[[rule]]\nid = \"a\"\nprograms = [\"aws\"]\nenv = { AWS_PROFILE = \"prod*\" }\naction = \"hold\"\n[[rule]]\nid = \"m\"\nprograms = [\"make\"]\ncwd = [\"~/infra/**\"]\naction = \"hold\"\n[[rule]]\nid = \"u\"\nprograms = [\"apt\"]\nuid = [0]\naction = \"hold\"\n[[rule]]\nid = \"h\"\nprograms = [\"helm\"]\nsubcommand = [\"uninstall\"]\naction = \"hold\"\n",
        "t",
    )
    .unwrap();
    for program in ["aws", "make", "apt"] {
        assert!(conditions.reads_context(program, None), "{program}");
    }
    assert!(!conditions.reads_context("helm", None));
    // A saved plan is read relative to the cwd.
    assert!(conditions.reads_context("terraform", None));
    assert!(conditions.reads_context("x", Some("/usr/bin/make")));
}

/// A second hold rule for the same command can only make its hold
/// stricter: the first matching rule no longer decides the terms alone.
#[test]
fn every_matching_hold_rule_tightens_the_terms() {
    let policy = Policy::parse(
        &format!(
            "{TEST_POLICY}\n\
             [[rule]]\nid = \"tf-destroy-two\"\nprograms = [\"terraform\"]\n\
             subcommand = [\"destroy\"]\naction = \"hold\"\napprovals = 2\n\
             approvers = [\"group:ops\"]\nself_approval = false\ntimeout = \"10m\"\n\
             on_timeout = \"allow\"\n"
        ),
        "test",
    )
    .unwrap();
    let held = policy.evaluate(&["terraform", "destroy"]);
    assert_eq!(held.action, Action::Hold);
    assert_eq!(held.rule.as_deref(), Some("tf-destroy"));
    assert_eq!(held.terms.approvals, 2);
    assert_eq!(held.terms.approvers, Vec::<String>::new());
    assert_eq!(
        held.terms.also_approvers,
        vec![vec!["group:ops".to_string()]]
    );
    assert!(!held.terms.self_approval);
    assert_eq!(held.terms.timeout_secs, 600, "the longer wait");
    assert_eq!(
        held.terms.on_timeout,
        OnTimeout::Deny,
        "deny if either says so"
    );
    assert_eq!(held.terms_from, ["tf-destroy", "tf-destroy-two"]);
    // The allow carve-out and the deny rule still decide alone.
    let carved = policy.evaluate(&["terraform", "destroy", "-target=scratch1"]);
    assert_eq!(carved.action, Action::Allow);
    assert!(carved.terms_from.is_empty());
    let denied = policy.evaluate(&["terraform", "destroy", "-nuke"]);
    assert_eq!(denied.action, Action::Deny);
    assert!(denied.terms_from.is_empty());
    // One hold rule: its own terms, nothing combined.
    let single = Policy::parse(TEST_POLICY, "test").unwrap();
    let alone = single.evaluate(&["terraform", "destroy"]);
    assert_eq!(alone.terms.approvals, 1);
    assert!(alone.terms.also_approvers.is_empty() && alone.terms_from.is_empty());
}

/// A move to where `rm -rf` is not held, then the delete there, would
/// delete what neither step alone holds: the move is judged as the delete.
#[test]
fn moving_something_where_deletes_are_free_is_judged_as_deleting_it() {
    let policy = Policy::embedded_default();
    // The process's root, so the project is not under /tmp (which is free).
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("home/dev/project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::create_dir_all(project.join("build")).unwrap();
    std::fs::write(project.join("notes.txt"), "x").unwrap();
    let judge = |line: &str| {
        let mut command = CommandContext::from_argv(&shlex::split(line).unwrap());
        command.cwd = Some("/home/dev/project".into());
        command.root = Some(root.path().display().to_string());
        command.env = vec![("HOME".into(), "/home/dev".into())];
        policy.judge(&command)
    };
    for line in [
        "mv /home/dev/src /tmp/",
        "mv -t /var/tmp /srv/data",
        "mv -v /srv/data node_modules/",
        "mv src node_modules/",
        "mv src /tmp/x",
    ] {
        let judged = judge(line);
        assert_eq!(judged.action, Action::Hold, "{line}");
        assert!(
            judged.why[0].starts_with("runs via a move into"),
            "{line}: {:?}",
            judged.why
        );
    }
    for line in [
        "mv build /tmp/",
        "mv notes.txt /tmp/",
        "mv notes.txt todo.txt",
        "mv src lib",
        "mv /home/dev/a /home/dev/b",
        "mv /tmp/x /tmp/y",
    ] {
        assert_eq!(judge(line).action, Action::Allow, "{line}");
    }
}

mod configured;
mod files;
