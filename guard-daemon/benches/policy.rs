//! Policy evaluation against the default pack: criterion timings for typical
//! commands, then per-call p50/p99 over the whole corpus.
use std::{hint::black_box, time::Instant};

use criterion::Criterion;
use guard_daemon::policy::{CommandContext, Policy};

const CORPUS: &str = include_str!("../tests/corpus/default-pack.txt");

fn context(line: &str) -> CommandContext {
    let argv = shlex::split(line).expect("corpus quoting");
    let mut context = CommandContext::from_argv(&argv);
    context.cwd = Some("/home/dev/project".into());
    context.env = vec![("HOME".into(), "/home/dev".into())];
    context
}

fn corpus() -> Vec<CommandContext> {
    CORPUS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| context(l.split_once(char::is_whitespace).unwrap().1.trim()))
        .collect()
}

fn typical(c: &mut Criterion, policy: &Policy) {
    let mut group = c.benchmark_group("judge");
    for line in [
        "rm -rf node_modules /etc",
        "git -C repo push --force origin main",
        "git status",
        "kubectl --context prod -n payments delete deployment api",
        "aws --profile prod ec2 terminate-instances --instance-ids i-1",
        "psql -c 'SELECT 1; DROP TABLE x'",
        "terraform plan",
        "ls -la",
    ] {
        let command = context(line);
        group.bench_function(line, |b| b.iter(|| policy.judge(black_box(&command))));
    }
    group.finish();
}

/// Times every corpus command one call at a time and prints the percentiles.
fn percentiles(policy: &Policy) {
    let commands = corpus();
    let rounds = 200;
    let mut samples = Vec::with_capacity(commands.len() * rounds);
    for _ in 0..rounds {
        for command in &commands {
            let start = Instant::now();
            black_box(policy.judge(black_box(command)));
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "policy judge over {} corpus commands x {rounds}: p50 {:.2} us, p99 {:.2} us, max {:.2} us ({} rules)",
        commands.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        policy.rules.len()
    );
}

fn main() {
    let policy = Policy::embedded_default();
    percentiles(&policy);
    let mut criterion = Criterion::default().configure_from_args();
    typical(&mut criterion, &policy);
    criterion.final_summary();
}
