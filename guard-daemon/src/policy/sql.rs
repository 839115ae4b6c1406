//! Finds destructive statements in SQL (and MongoDB shell) text handed to a
//! database CLI. Keywords inside string literals, quoted identifiers and
//! comments do not count: `SELECT 'DROP TABLE x'` is harmless.

/// The kinds a rule can ask for (`sql = ["drop", ...]`).
pub const KINDS: &[&str] = &[
    "drop",
    "drop_database",
    "truncate",
    "delete_without_where",
    "update_without_where",
];

/// The destructive kinds found in `text`.
pub fn classify(text: &str) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    for statement in statements(text) {
        let words: Vec<String> = statement.iter().map(|w| w.to_ascii_uppercase()).collect();
        let has = |word: &str| words.iter().any(|w| w == word);
        let mut add = |kind: &'static str| {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        };
        match words.first().map(String::as_str) {
            Some("DROP") => {
                add("drop");
                if matches!(
                    words.get(1).map(String::as_str),
                    Some("DATABASE" | "SCHEMA")
                ) {
                    add("drop_database");
                }
            }
            Some("ALTER") if has("DROP") => add("drop"),
            Some("TRUNCATE") => add("truncate"),
            Some("DELETE") if !has("WHERE") => add("delete_without_where"),
            Some("UPDATE") if !has("WHERE") => add("update_without_where"),
            _ => {}
        }
        // MongoDB shell: db.dropDatabase(), db.coll.drop(), deleteMany({}).
        let joined = statement.concat();
        if joined.contains("dropDatabase(") {
            add("drop_database");
            add("drop");
        } else if joined.contains(".drop(") {
            add("drop");
        }
        if joined.contains("deleteMany({})") || joined.contains("remove({})") {
            add("delete_without_where");
        }
    }
    kinds
}

/// Splits SQL into statements of words (identifiers, keywords, punctuation),
/// leaving out literals and comments.
fn statements(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut statements = vec![Vec::new()];
    let mut word = String::new();
    let mut i = 0;
    let flush = |word: &mut String, statements: &mut Vec<Vec<String>>| {
        if !word.is_empty() {
            statements.last_mut().unwrap().push(std::mem::take(word));
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' | '`' => {
                flush(&mut word, &mut statements);
                i = skip_quoted(&chars, i, c);
                // A literal stands in the statement as one placeholder word.
                statements.last_mut().unwrap().push("'".into());
                continue;
            }
            '$' if dollar_tag(&chars, i).is_some() => {
                flush(&mut word, &mut statements);
                let tag = dollar_tag(&chars, i).unwrap();
                i = skip_dollar(&chars, i, &tag);
                statements.last_mut().unwrap().push("'".into());
                continue;
            }
            '-' if next == Some('-') => {
                flush(&mut word, &mut statements);
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                flush(&mut word, &mut statements);
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
                continue;
            }
            ';' => {
                flush(&mut word, &mut statements);
                statements.push(Vec::new());
            }
            c if c.is_alphanumeric() || c == '_' => word.push(c),
            c if c.is_whitespace() => flush(&mut word, &mut statements),
            c => {
                flush(&mut word, &mut statements);
                statements.last_mut().unwrap().push(c.to_string());
            }
        }
        i += 1;
    }
    flush(&mut word, &mut statements);
    statements.retain(|s| !s.is_empty());
    statements
}

/// Index after a quoted run starting at `start`; a doubled quote or a
/// backslash escapes the quote.
fn skip_quoted(chars: &[char], start: usize, quote: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            if chars.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    i
}

/// `$tag$` at `at` (PostgreSQL dollar quoting), if there is one.
fn dollar_tag(chars: &[char], at: usize) -> Option<String> {
    let mut i = at + 1;
    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    (chars.get(i) == Some(&'$')).then(|| chars[at..=i].iter().collect())
}

fn skip_dollar(chars: &[char], start: usize, tag: &str) -> usize {
    let tag: Vec<char> = tag.chars().collect();
    let mut i = start + tag.len();
    while i + tag.len() <= chars.len() {
        if chars[i..i + tag.len()] == tag[..] {
            return i + tag.len();
        }
        i += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn destructive_statements_are_found() {
        assert_eq!(classify("DROP TABLE users"), vec!["drop"]);
        assert_eq!(
            classify("drop database prod;"),
            vec!["drop", "drop_database"]
        );
        assert_eq!(classify("TRUNCATE orders"), vec!["truncate"]);
        assert_eq!(classify("delete from users"), vec!["delete_without_where"]);
        assert_eq!(
            classify("UPDATE users SET admin = true"),
            vec!["update_without_where"]
        );
        assert_eq!(classify("ALTER TABLE t DROP COLUMN c"), vec!["drop"]);
        assert_eq!(classify("SELECT 1; DROP TABLE x"), vec!["drop"]);
        assert_eq!(classify("/* hi */ DROP TABLE x"), vec!["drop"]);
        assert_eq!(classify("db.dropDatabase()"), vec!["drop_database", "drop"]);
        assert_eq!(
            classify("db.users.deleteMany({})"),
            vec!["delete_without_where"]
        );
    }

    #[test]
    fn harmless_statements_and_literals_are_not() {
        assert!(classify("SELECT 'DROP TABLE users'").is_empty());
        assert!(classify("SELECT * FROM t WHERE note = 'x; DROP TABLE y'").is_empty());
        assert!(classify("INSERT INTO log VALUES ($$DROP TABLE x$$)").is_empty());
        assert!(classify("DELETE FROM users WHERE id = 3").is_empty());
        assert!(classify("UPDATE t SET a = 1 WHERE id = 2").is_empty());
        assert!(classify("-- DROP TABLE x\nSELECT 1").is_empty());
        assert!(classify("SELECT \"drop\" FROM t").is_empty());
        assert!(classify("db.users.find({name: 'dropDatabase()'})").is_empty());
        assert!(classify("").is_empty());
    }
}
