//! Commands judged with what their configuration files and environment make
//! of them: git stash's own reset, git config pushes, aws CLI aliases.
use super::super::*;

#[test]
fn git_stash_may_reset_its_own_tree_and_nothing_else_may() {
    let policy = Policy::embedded_default();
    let reset = |run_by: Option<&[&str]>| {
        let mut command = CommandContext::from_argv(&[
            "/usr/lib/git-core/git",
            "reset",
            "--hard",
            "-q",
            "--no-recurse-submodules",
        ]);
        command.run_by = run_by.map(|argv| argv.iter().map(|a| a.to_string()).collect());
        policy.judge(&command).action
    };
    // What `git stash` starts itself (guardd sets run_by only for a parent
    // running the same executable file).
    assert_eq!(reset(Some(&["git", "stash"])), Action::Allow);
    assert_eq!(
        reset(Some(&["git", "-C", "/repo", "stash", "push", "-m", "x"])),
        Action::Allow
    );
    // The same reset under any other git command, or typed by the agent.
    assert_eq!(reset(Some(&["git", "pull"])), Action::Hold);
    assert_eq!(reset(Some(&["git", "stash-x"])), Action::Hold);
    assert_eq!(reset(Some(&["git"])), Action::Hold);
    assert_eq!(reset(None), Action::Hold);
}

#[test]
fn a_plain_push_is_judged_as_the_repository_config_makes_it() {
    let policy = Policy::embedded_default();
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    let config = |text: &str| std::fs::write(repo.join(".git/config"), text).unwrap();
    let push = |argv: &[&str], cwd: &std::path::Path| {
        let mut command = CommandContext::from_argv(argv);
        command.cwd = Some(cwd.display().to_string());
        command.env = vec![
            ("HOME".into(), home.path().display().to_string()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ];
        policy.judge(&command)
    };
    config("[remote \"origin\"]\n\turl = /srv/x.git\n");
    assert_eq!(push(&["git", "push"], &repo).action, Action::Allow);

    config("[remote \"origin\"]\n\turl = /srv/x.git\n\tpush = +refs/heads/main:refs/heads/main\n");
    let held = push(&["git", "push"], &repo.join("src"));
    assert_eq!(held.action, Action::Hold, "{held:?}");
    assert!(
        held.why[0].starts_with("runs via the git config"),
        "{:?}",
        held.why
    );
    assert_eq!(push(&["git", "push", "origin"], &repo).action, Action::Hold);
    assert_eq!(
        push(&["git", "-C", "repo", "push"], home.path()).action,
        Action::Hold
    );
    // Refspecs on the command line replace the configured ones.
    assert_eq!(
        push(&["git", "push", "origin", "main"], &repo).action,
        Action::Allow
    );
    // Another remote's configuration does not apply to this one.
    assert_eq!(push(&["git", "push", "other"], &repo).action, Action::Allow);

    config("[remote \"backup\"]\n\tmirror = true\n[include]\n\tpath = ../../extra\n");
    assert_eq!(push(&["git", "push", "backup"], &repo).action, Action::Hold);
    assert_eq!(
        push(&["git", "push", "origin"], &repo).action,
        Action::Allow
    );
    std::fs::write(
        home.path().join("extra"),
        "[remote \"origin\"]\n push = :refs/heads/old\n",
    )
    .unwrap();
    assert_eq!(push(&["git", "push", "origin"], &repo).action, Action::Hold);

    // Configuration in the environment (how `-c` reaches child processes).
    config("[remote \"origin\"]\n\turl = /srv/x.git\n");
    let push_with = |env: &[(&str, &str)]| {
        let mut command = CommandContext::from_argv(&["git", "push", "origin"]);
        command.cwd = Some(repo.display().to_string());
        command.env = [
            ("HOME", home.path().to_str().unwrap()),
            ("GIT_CONFIG_NOSYSTEM", "1"),
        ]
        .iter()
        .chain(env)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        policy.judge(&command).action
    };
    assert_eq!(push_with(&[]), Action::Allow);
    assert_eq!(
        push_with(&[("GIT_CONFIG_PARAMETERS", "'remote.origin.push'='+main:main'")]),
        Action::Hold
    );
    assert_eq!(
        push_with(&[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "Remote.origin.Mirror"),
            ("GIT_CONFIG_VALUE_0", "true"),
        ]),
        Action::Hold
    );
    assert_eq!(push_with(&[("GIT_CONFIG_COUNT", "99")]), Action::Hold);
    assert_eq!(
        push_with(&[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "user.name"),
            ("GIT_CONFIG_VALUE_0", "dev"),
        ]),
        Action::Allow
    );

    // A worktree's `.git` file names the git dir; the global config counts too.
    let worktree = home.path().join("wt");
    std::fs::create_dir_all(&worktree).unwrap();
    std::fs::write(
        worktree.join(".git"),
        format!("gitdir: {}\n", repo.join(".git").display()),
    )
    .unwrap();
    config("");
    assert_eq!(push(&["git", "push"], &worktree).action, Action::Allow);
    std::fs::write(
        home.path().join(".gitconfig"),
        "[remote \"origin\"]\n\tmirror\n",
    )
    .unwrap();
    assert_eq!(push(&["git", "push"], &worktree).action, Action::Hold);
}

#[test]
fn an_aws_alias_is_judged_as_what_it_runs() {
    let policy = Policy::embedded_default();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".aws/cli")).unwrap();
    std::fs::write(
        home.path().join(".aws/cli/alias"),
        "[toplevel]\nnuke = ec2 terminate-instances\nwho = sts get-caller-identity\n\
         wipe =\n  !f() {\n    aws s3 rb \"s3://$1\" --force\n  }; f\n\n\
         [command ec2]\nkill = terminate-instances\n",
    )
    .unwrap();
    let aws = |argv: &[&str]| {
        let mut command = CommandContext::from_argv(argv);
        command.cwd = Some("/".into());
        command.env = vec![("HOME".into(), home.path().display().to_string())];
        policy.judge(&command)
    };
    let held = aws(&["aws", "nuke", "--instance-ids", "i-1"]);
    assert_eq!(held.action, Action::Hold, "{held:?}");
    assert!(
        held.why[0].starts_with("runs via the aws alias nuke"),
        "{:?}",
        held.why
    );
    assert_eq!(
        aws(&["aws", "--profile", "prod", "nuke", "--instance-ids", "i-1"]).action,
        Action::Hold
    );
    assert_eq!(
        aws(&["aws", "ec2", "kill", "--instance-ids", "i-1"]).action,
        Action::Hold
    );
    assert_eq!(aws(&["aws", "wipe", "logs"]).action, Action::Hold);
    assert_eq!(aws(&["aws", "who"]).action, Action::Allow);
    assert_eq!(
        aws(&["aws", "ec2", "describe-instances"]).action,
        Action::Allow
    );
}
