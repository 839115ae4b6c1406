//! Rendering untrusted bytes (argv, paths) for logs and terminals: control
//! characters and invalid UTF-8 are escaped so they cannot move a cursor,
//! forge a log line or hide text.
use std::fmt::Write as _;

/// Escapes control characters, backslashes and invalid UTF-8 (`\xNN`).
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A command line for one-line display: words escaped, quoted when they hold spaces.
pub fn display_argv(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|arg| {
            let word = escape_bytes(arg);
            if word.is_empty() || word.contains([' ', '\'', '"']) {
                format!("'{}'", word.replace('\'', "'\\''"))
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_terminal_sequences_and_bad_bytes() {
        assert_eq!(escape_bytes(b"rm\x1b[2J -rf"), "rm\\u{1b}[2J -rf");
        assert_eq!(escape_bytes(b"a\nb\\c"), "a\\nb\\\\c");
        assert_eq!(escape_bytes(b"\xff\xfeok"), "\\xff\\xfeok");
        assert_eq!(escape_bytes("d\u{e9}j\u{e0}".as_bytes()), "d\u{e9}j\u{e0}");
        assert_eq!(escape_bytes("\u{9b}".as_bytes()), "\\u{9b}");
    }

    #[test]
    fn display_quotes_words_with_spaces() {
        let argv = vec![b"psql".to_vec(), b"-c".to_vec(), b"DROP TABLE x".to_vec()];
        assert_eq!(display_argv(&argv), "psql -c 'DROP TABLE x'");
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_control_characters(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let escaped = escape_bytes(&bytes);
            prop_assert!(!escaped.chars().any(char::is_control));
        }
    }
}
