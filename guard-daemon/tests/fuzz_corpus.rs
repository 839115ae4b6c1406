//! Replays the fuzz targets' seeds, minimised corpus and saved crashes
//! (fuzz/{seeds,corpus,regressions}/TARGET) through the same entry points, so
//! CI catches a regression without running the fuzzer.
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for kind in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            run(&std::fs::read(entry.path()).unwrap());
            count += 1;
        }
    }
    count
}

#[test]
fn protocol_decode_corpus_replays() {
    assert!(replay("protocol_decode", guard_daemon::fuzzing::request_line) >= 4);
}

#[test]
fn policy_parse_corpus_replays() {
    assert!(replay("policy_parse", guard_daemon::fuzzing::policy_text) >= 2);
}

#[test]
fn api_writes_corpus_replays() {
    assert!(replay("api_writes", guard_daemon::fuzzing::api_writes) >= 4);
}
