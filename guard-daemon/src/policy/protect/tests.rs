use super::*;

#[test]
fn every_operation_has_its_own_gate_bit() {
    let mut seen = 0;
    for operation in Operation::ALL {
        let bit = operation.gate_bit();
        assert_eq!(bit.count_ones(), 1, "{operation:?}");
        assert_eq!(seen & bit, 0, "{operation:?} shares a bit");
        seen |= bit;
        assert_eq!(Operation::of_gate_bits(bit), Some(operation));
    }
    assert_eq!(Operation::of_gate_bits(guard_common::ESCAPE_CONNECT), None);
    assert_eq!(Operation::of_gate_bits(0), None);
}

fn home() -> Places<'static> {
    Places {
        home: Path::new("/home/dev"),
        workspace: None,
    }
}

fn protections(text: &str) -> Vec<Protection> {
    #[derive(Deserialize)]
    struct File {
        protect: Vec<ProtectFile>,
    }
    let file: File = toml::from_str(text).unwrap();
    file.protect
        .iter()
        .map(|p| p.compile(Duration::from_secs(60)).unwrap())
        .collect()
}

#[test]
fn roots_protect_everything_below_them() {
    let list = protections(
        r#"
[[protect]]
id = "ssh"
paths = ["~/.ssh"]
[[protect]]
id = "etc"
paths = ["/etc"]
operations = ["unlink", "rename"]
[[protect]]
id = "prod"
paths = ["/srv/*/prod"]
action = "deny"
"#,
    );
    let set = ProtectedSet::new(&list, home());
    let find = |path: &str, op| set.find(&list, Path::new(path), op);
    let ssh = find("/home/dev/.ssh/id_ed25519", Operation::Unlink).unwrap();
    assert_eq!(
        (ssh.protection, ssh.root.as_path()),
        (0, Path::new("/home/dev/.ssh"))
    );
    assert_eq!(
        find("/home/dev/.ssh", Operation::Rmdir).unwrap().protection,
        0
    );
    assert_eq!(find("/home/dev/.sshx/a", Operation::Unlink), None);
    assert_eq!(find("/home/other/.ssh/a", Operation::Unlink), None);
    assert_eq!(
        find("/etc/passwd", Operation::Rename).unwrap().protection,
        1
    );
    assert_eq!(
        find("/etc/passwd", Operation::Write),
        None,
        "not an operation it lists"
    );
    let prod = find("/srv/app/prod/data/x", Operation::Write).unwrap();
    assert_eq!(prod.root, Path::new("/srv/app/prod"));
    assert_eq!(find("/srv/app/staging/x", Operation::Write), None);
    assert_eq!(find("/tmp/x", Operation::Unlink), None);
}

#[test]
fn except_paths_are_left_out_with_everything_below_them() {
    let list = protections(
        r#"
[[protect]]
id = "kube"
paths = ["~/.kube"]
except = ["~/.kube/cache", "~/.kube/*.lock"]
"#,
    );
    let set = ProtectedSet::new(&list, home());
    let find = |path: &str| set.find(&list, Path::new(path), Operation::Write);
    assert!(find("/home/dev/.kube/config").is_some());
    assert!(find("/home/dev/.kube").is_some());
    assert_eq!(find("/home/dev/.kube/cache"), None);
    assert_eq!(find("/home/dev/.kube/cache/discovery/x.json"), None);
    assert_eq!(find("/home/dev/.kube/config.lock"), None);
    assert!(find("/home/dev/.kube/cachex").is_some());
}

#[test]
fn the_default_pack_protects_what_runs_later_outside_the_session() {
    let policy = crate::policy::Policy::embedded_default();
    let list = &policy.protections;
    let set = ProtectedSet::new(list, home());
    let id = |path: &str, op| {
        set.find(list, Path::new(path), op)
            .map(|found| list[found.protection].id.as_str())
    };
    for path in [
        "/home/dev/.bashrc",
        "/home/dev/.bash_profile",
        "/home/dev/.profile",
        "/home/dev/.bash_logout",
        "/home/dev/.zshrc",
        "/home/dev/.zshenv",
        "/home/dev/.config/fish/config.fish",
        "/home/dev/.config/fish/conf.d/x.fish",
        "/home/dev/.config/systemd/user/evil.service",
        "/home/dev/.config/systemd/user/default.target.wants/evil.service",
        "/home/dev/.local/share/systemd/user/evil.timer",
        "/home/dev/.config/autostart/evil.desktop",
        "/home/dev/.config/environment.d/10-path.conf",
        "/home/dev/.pam_environment",
        "/home/dev/.xsessionrc",
        "/var/spool/cron/crontabs/dev",
        "/home/dev/.gitconfig",
        "/home/dev/.config/git/config",
        "/home/dev/project/.git/hooks/pre-commit",
        "/home/dev/other/repo/.git/hooks/post-checkout",
        "/srv/repo/.git/hooks/pre-push",
    ] {
        assert_eq!(id(path, Operation::Write), Some("runs-later"), "{path}");
        assert_eq!(id(path, Operation::Rename), Some("runs-later"), "{path}");
    }
    assert_eq!(
        id("/home/dev/.ssh/authorized_keys", Operation::Write),
        Some("credentials")
    );
    assert_eq!(id("/etc/profile.d/x.sh", Operation::Write), Some("system"));
    for path in [
        "/home/dev/.bash_history",
        "/home/dev/.config/fish/fish_variables",
        "/home/dev/.config/git/gitk",
        "/home/dev/project/.git/hooks/pre-commit.sample",
        "/home/dev/project/.git/config",
        "/home/dev/project/src/main.rs",
        "/home/dev/.bashrc.orig",
    ] {
        assert_eq!(id(path, Operation::Write), None, "{path}");
    }
}

#[test]
fn guardd_own_files_are_denied_first_and_cannot_be_replaced_by_a_layer() {
    let policy = crate::policy::Policy::embedded_default()
        .with_self_protection(&[
            PathBuf::from("/etc/agent-guard/policy.toml"),
            PathBuf::from("/etc/agent-guard/policy.d"),
            PathBuf::from("/tmp/odd[dir]*/pins"),
        ])
        .unwrap();
    let list = &policy.protections;
    let set = ProtectedSet::new(list, home());
    let found = |path: &str| {
        set.find(list, Path::new(path), Operation::Write)
            .map(|f| (list[f.protection].id.clone(), f.root))
    };
    // Inside /etc (held by "system"), yet denied by agent-guard-self.
    let (id, root) = found("/etc/agent-guard/policy.d/zz.toml").unwrap();
    assert_eq!(
        (id.as_str(), root.as_path()),
        (SELF_ID, Path::new("/etc/agent-guard/policy.d"))
    );
    let own = list.iter().find(|p| p.id == SELF_ID).unwrap();
    assert_eq!(own.action, Action::Deny);
    assert_eq!(found("/etc/agent-guard/other").unwrap().0, "system");
    // Glob characters in a path are taken literally.
    assert_eq!(found("/tmp/odd[dir]*/pins/maps/x").unwrap().0, SELF_ID);
    assert_eq!(found("/tmp/oddd-x/pins/maps/x"), None);
    // A layer cannot define (and so replace) the entry.
    let layered = crate::policy::Policy::parse(
        "version = 1\n[[protect]]\nid = \"agent-guard-self\"\npaths = [\"/nowhere\"]\naction = \"audit\"\n",
        "layer.toml",
    )
    .unwrap()
    .with_self_protection(&[PathBuf::from("/etc/agent-guard/policy.toml")]);
    assert!(layered.unwrap_err().to_string().contains("reserved"));
}

#[test]
fn bad_entries_are_refused() {
    for (entry, why) in [
        ("id = 'a'\npaths = ['relative/x']", "absolute"),
        ("id = 'a'\npaths = []", "no paths"),
        (
            "id = 'a'\npaths = ['/x']\naction = 'allow'",
            "protects nothing",
        ),
        ("id = 'a'\npaths = ['/x[']", "/x["),
        ("id = 'a'\npaths = ['/x']\nexcept = ['x/cache']", "absolute"),
    ] {
        let file: ProtectFile = toml::from_str(entry).unwrap();
        let err = file.compile(Duration::from_secs(1)).unwrap_err();
        assert!(err.contains(why), "{entry}: {err}");
    }
}

#[test]
fn a_fallback_entry_holds_outside_the_workspace_in_requests_per_top_directory() {
    let list = protections(
        r#"
[[protect]]
id = "ssh"
paths = ["~/.ssh"]
action = "deny"
[[protect]]
id = "outside"
paths = ["/"]
fallback = true
operations = ["unlink", "rmdir", "rename", "truncate"]
except = ["{workspace}", "/tmp", "~/.cache", "~/.claude.json*"]
"#,
    );
    let places = Places {
        home: Path::new("/home/dev"),
        workspace: Some(Path::new("/home/dev/src/app")),
    };
    let set = ProtectedSet::new(&list, places);
    let find = |path: &str, op| {
        set.find(&list, Path::new(path), op)
            .map(|found| (list[found.protection].id.as_str(), found.root))
    };
    let outside = |root: &str| Some(("outside", PathBuf::from(root)));
    // The workspace, temp, caches and globbed state files are left out.
    for path in [
        "/home/dev/src/app/target/x",
        "/home/dev/src/app",
        "/tmp/x",
        "/home/dev/.cache/pip/y",
        "/home/dev/.claude.json.tmp.123",
    ] {
        assert_eq!(find(path, Operation::Unlink), None, "{path}");
    }
    // Writing is not among its operations.
    assert_eq!(find("/home/dev/notes", Operation::Write), None);
    // Another entry comes first, with its own root and action.
    assert_eq!(
        find("/home/dev/.ssh/id_ed25519", Operation::Unlink),
        Some(("ssh", PathBuf::from("/home/dev/.ssh")))
    );
    // One request per outermost directory that holds no home or workspace.
    assert_eq!(
        find("/home/dev/old/a/b", Operation::Unlink),
        outside("/home/dev/old")
    );
    assert_eq!(
        find("/home/dev/src/other/x", Operation::Rmdir),
        outside("/home/dev/src/other")
    );
    assert_eq!(find("/srv/data/db", Operation::Truncate), outside("/srv"));
    assert_eq!(
        find("/home/other/x", Operation::Rename),
        outside("/home/other")
    );
    // A directory holding the workspace is its own request, never `/` or `~`.
    assert_eq!(
        find("/home/dev/src", Operation::Rename),
        outside("/home/dev/src")
    );
    assert_eq!(find("/home/dev", Operation::Rename), outside("/home/dev"));

    // Without a workspace nothing of home is left out but what `except` says.
    let set = ProtectedSet::new(&list, home());
    let found = set.find(&list, Path::new("/home/dev/src/app/x"), Operation::Unlink);
    assert_eq!(found.map(|f| f.root), Some(PathBuf::from("/home/dev/src")));
}

#[test]
fn the_workspace_can_only_be_left_out() {
    let file: ProtectFile = toml::from_str(
        r#"
id = "x"
paths = ["{workspace}"]
"#,
    )
    .unwrap();
    let err = file.compile(Duration::from_secs(1)).unwrap_err();
    assert!(err.contains("can only be left out"), "{err}");
    let file: ProtectFile = toml::from_str(
        r#"
id = "x"
paths = ["/srv"]
except = ["{workspace}/build", "{workspacex}"]
"#,
    )
    .unwrap();
    let err = file.compile(Duration::from_secs(1)).unwrap_err();
    assert!(err.contains("{workspacex}"), "{err}");
}

#[test]
fn a_path_is_unprotected_anywhere_only_if_no_home_can_bring_an_entry_over_it() {
    let null = Path::new("/dev/null");
    let default = crate::policy::Policy::embedded_default();
    assert!(unprotected_anywhere(&default.protections, null));
    assert!(!unprotected_anywhere(
        &default.protections,
        Path::new("/etc/hosts")
    ));
    let cases = [
        // A root above it, or the path itself.
        ("paths = [\"/dev\"]", false),
        ("paths = [\"/dev/nu*\"]", false),
        // A home that is the path or a directory above it.
        ("paths = [\"~\"]", false),
        ("paths = [\"~/null\"]", false),
        // An except that takes it out only for some homes.
        ("paths = [\"/dev\"]\nexcept = [\"~\"]", false),
        // Excepted for everyone, or nowhere near it.
        ("paths = [\"/dev\"]\nexcept = [\"/dev/null\"]", true),
        ("paths = [\"~/.ssh\", \"/etc\"]", true),
        (
            "paths = [\"/dev\"]\noperations = [\"unlink\"]\nexcept = [\"/dev/null\"]",
            true,
        ),
    ];
    for (entry, unprotected) in cases {
        let list = protections(&format!("[[protect]]\nid = \"x\"\n{entry}\n"));
        assert_eq!(unprotected_anywhere(&list, null), unprotected, "{entry}");
    }
}
