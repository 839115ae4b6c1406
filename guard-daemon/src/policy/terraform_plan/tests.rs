//! The plan files beside this file were written by terraform 1.11.4 with
//! only the built-in `terraform_data` resource (so no provider download):
//! `terraform apply` of `keep`, `gone` and `db` (`triggers_replace = ["v1"]`),
//! then `terraform plan -out destructive.tfplan` with `gone` removed, `db` at
//! "v2" and a `new` one added, and `terraform plan -out creates.tfplan` with
//! only `new` added.
use std::path::{Path, PathBuf};

use super::*;
use crate::policy::Policy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/policy/terraform_plan")
        .join(name)
}

fn apply(policy: &Policy, argv: &[&str], cwd: &Path) -> crate::policy::Explanation {
    let mut command = CommandContext::from_argv(argv);
    command.cwd = Some(cwd.display().to_string());
    policy.judge(&command)
}

#[test]
fn a_plan_is_read_for_what_it_deletes_replaces_and_forgets() {
    let changes = read_plan(&fixture("destructive.tfplan")).unwrap();
    let mut changes: Vec<(&str, &str)> = changes.iter().map(|(w, a)| (*w, a.as_str())).collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            ("deletes", "terraform_data.gone"),
            ("replaces (delete, then create)", "terraform_data.db"),
        ]
    );
    assert_eq!(read_plan(&fixture("creates.tfplan")).unwrap(), []);
    assert_eq!(destructive(8), Some("forgets"));
    assert_eq!(destructive(42), Some("does an unknown action to"));
}

#[test]
fn apply_of_a_destructive_or_unreadable_plan_is_judged_as_a_destroy() {
    let policy = Policy::parse(
        r#"
version = 1
base = "none"
[spec.terraform]
names = ["terraform", "tofu"]
single_dash_long = true
value_options = ["-chdir", "-target", "-var"]
[[rule]]
id = "tf-apply"
programs = ["terraform", "tofu"]
subcommand = ["apply"]
action = "hold"
[[rule]]
id = "tf-destroy"
programs = ["terraform", "tofu"]
subcommand = ["destroy"]
action = "hold"
approvals = 2
"#,
        "test",
    )
    .unwrap();
    let dir = fixture("");
    let parent = dir.parent().unwrap();
    let judged = apply(&policy, &["terraform", "apply", "destructive.tfplan"], &dir);
    assert_eq!(judged.rule.as_deref(), Some("tf-destroy"));
    assert_eq!(judged.terms.approvals, 2);
    let why = judged.why.join("\n");
    assert!(
        why.contains("which deletes terraform_data.gone")
            && why.contains("replaces (delete, then create) terraform_data.db"),
        "{why}"
    );
    // -chdir, options before the plan, and tofu.
    let judged = apply(
        &policy,
        &[
            "tofu",
            "-chdir=terraform_plan",
            "apply",
            "-var",
            "a=b",
            "destructive.tfplan",
        ],
        parent,
    );
    assert_eq!(judged.rule.as_deref(), Some("tf-destroy"));
    // A plan that only creates stays an apply, with the apply's terms.
    let judged = apply(&policy, &["terraform", "apply", "creates.tfplan"], &dir);
    assert_eq!(judged.rule.as_deref(), Some("tf-apply"));
    assert_eq!(judged.terms.approvals, 1);
    // Unreadable: missing, not a plan, a FIFO.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("junk"), "not a zip").unwrap();
    nix::unistd::mkfifo(&scratch.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    for plan in ["missing", "junk", "fifo"] {
        let judged = apply(&policy, &["terraform", "apply", plan], scratch.path());
        assert_eq!(judged.rule.as_deref(), Some("tf-destroy"), "{plan}");
        assert!(judged.why[0].contains("unreadable"), "{:?}", judged.why);
    }
    // No plan operand: an apply like any other.
    let judged = apply(&policy, &["terraform", "apply", "-auto-approve"], &dir);
    assert_eq!(judged.rule.as_deref(), Some("tf-apply"));
}
