//! Properties of the default pack: how a command is spelled does not change
//! its decision.
use guard_daemon::policy::{Action, CommandContext, Policy};
use proptest::prelude::*;

static POLICY: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(Policy::embedded_default);

fn decide(policy: &Policy, argv: &[String]) -> Action {
    let mut context = CommandContext::from_argv(argv);
    context.cwd = Some("/home/dev/project".into());
    context.env = vec![("HOME".into(), "/home/dev".into())];
    policy.judge(&context).action
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// Short flags (letters) split into clusters in a given order: "rfv" -> ["-rf", "-v"].
fn spelled_flags(letters: Vec<char>, cuts: Vec<bool>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::from("-");
    for (at, letter) in letters.iter().enumerate() {
        current.push(*letter);
        if cuts.get(at).copied().unwrap_or(true) {
            out.push(std::mem::replace(&mut current, String::from("-")));
        }
    }
    if current.len() > 1 {
        out.push(current);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rm_flag_order_and_clustering_do_not_matter(
        letters in Just(vec!['r', 'f', 'v']).prop_shuffle(),
        cuts in proptest::collection::vec(any::<bool>(), 3),
        recursive_upper in any::<bool>(),
        long_force in any::<bool>(),
        target in prop::sample::select(vec!["/", "~", "src", "node_modules", "/tmp/x", "../other", "/etc", "a.o"]),
        flags_after in any::<bool>(),
    ) {
        let policy = &*POLICY;
        let canonical = decide(policy, &words(&format!("rm --recursive --force --verbose {target}")));
        let letters: Vec<char> = letters
            .into_iter()
            .filter(|l| !(long_force && *l == 'f'))
            .map(|l| if l == 'r' && recursive_upper { 'R' } else { l })
            .collect();
        let mut flags = spelled_flags(letters, cuts);
        if long_force {
            flags.push("--force".into());
        }
        let mut argv = vec!["rm".to_string()];
        if flags_after {
            argv.push(target.to_string());
            argv.extend(flags);
        } else {
            argv.extend(flags);
            argv.push(target.to_string());
        }
        prop_assert_eq!(decide(policy, &argv), canonical, "{:?}", argv);
    }

    #[test]
    fn harmless_global_options_do_not_change_a_decision(
        (command, globals) in prop_oneof![
            (prop::sample::select(vec!["git push --force origin main", "git reset --hard", "git push origin main", "git status", "git clean -fd", "git clean -n"]),
             prop::sample::select(vec!["-C /repo", "-c user.name=x", "--no-pager", "--git-dir=/r/.git", "-c color.ui=never -C sub"])),
            (prop::sample::select(vec!["kubectl delete pod x", "kubectl get pods", "kubectl drain n1", "kubectl logs api"]),
             prop::sample::select(vec!["--context prod", "-n payments", "--namespace=prod", "--kubeconfig /k/config", "-nprod --context x"])),
            (prop::sample::select(vec!["aws ec2 terminate-instances --instance-ids i-1", "aws s3 ls", "aws s3 rm s3://b --recursive", "aws sts get-caller-identity"]),
             prop::sample::select(vec!["--profile prod", "--region us-east-1", "--output json", "--no-cli-pager --region eu-west-1"])),
            (prop::sample::select(vec!["terraform destroy", "terraform plan", "terraform apply -destroy", "terraform state rm x"]),
             prop::sample::select(vec!["-chdir=infra", "-chdir=destroy"])),
            (prop::sample::select(vec!["helm uninstall api", "helm list"]),
             prop::sample::select(vec!["--kube-context prod", "-n prod", "--namespace prod"])),
        ],
    ) {
        let policy = &*POLICY;
        let plain = words(command);
        let mut with_globals = vec![plain[0].clone()];
        with_globals.extend(words(globals));
        with_globals.extend(plain[1..].iter().cloned());
        prop_assert_eq!(decide(policy, &with_globals), decide(policy, &plain), "{:?}", with_globals);
    }
}
