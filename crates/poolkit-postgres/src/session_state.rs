//! The check that keeps session state off shared connections: what a statement would
//! leave behind (`SET`, `LISTEN`, `PREPARE`, a transaction, a cursor, a temporary table, a
//! session advisory lock), read from its text before it is pipelined, with its
//! `operation` label from the same look.

use std::cell::RefCell;

use poolkit_core::Operation;

/// What a statement leaves behind on a shared connection, if anything: the kind, for
/// [`crate::Error::SessionState`]. Looks at the first keyword of each `;`-separated
/// statement and for the session-level functions; statements that change session state
/// from inside a function or a `DO` block cannot be seen (docs/postgres.md lists them).
///
/// This runs before every statement on the pool, so it reads the SQL once: one search
/// finds the `;`s and the `_`s; the keywords are told apart by their first letter, and
/// the function names are looked for only around the `_`s (each has one at a fixed
/// place). Found with callgrind: searching the whole text once per function name cost
/// 4,700 instructions for pgbench's 52-byte statement, a third of a raw client's whole
/// cost.
#[must_use]
pub fn shared_refusal(sql: &str) -> Option<&'static str> {
    const ADVISORY: [&[u8]; 3] = [
        b"pg_advisory_lock",
        b"pg_try_advisory_lock",
        b"pg_advisory_unlock",
    ];
    let b = sql.as_bytes();
    let at = |from: usize, name: &[u8]| {
        b.get(from..from + name.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
    };
    // A statement's keyword counts before any function in the whole text.
    let (mut start, mut advisory, mut set_config) = (0, false, false);
    let mut seen = |i: usize| {
        if b[i] == b';' {
            // `;` is ASCII: `i` is a character boundary.
            let kind = refused_keyword(&sql[start..i]);
            start = i + 1;
            kind
        } else {
            advisory |= i >= 2 && ADVISORY.iter().any(|name| at(i - 2, name));
            set_config |= i >= 3 && at(i - 3, b"set_config(");
            None
        }
    };
    for i in memchr::memchr2_iter(b';', b'_', b) {
        if let Some(kind) = seen(i) {
            return Some(kind);
        }
    }
    if let Some(kind) = refused_keyword(&sql[start..]) {
        return Some(kind);
    }
    if advisory {
        return Some("a session advisory lock (use pg_advisory_xact_lock)");
    }
    if set_config && !contains_ci(sql, "true") {
        return Some("set_config(…, false)");
    }
    None
}

/// What a statement on the pool needs from its SQL text before it runs: the session-state
/// refusal ([`shared_refusal`]) and the `operation` label ([`Operation::sql`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SqlFacts {
    pub(crate) refusal: Option<&'static str>,
    pub(crate) operation: Operation,
}

impl SqlFacts {
    fn of(sql: &str) -> Self {
        Self {
            refusal: shared_refusal(sql),
            operation: Operation::sql(sql),
        }
    }
}

/// Texts remembered per thread, and the longest remembered.
const FACT_WAYS: usize = 16;
const FACT_MAX_LEN: usize = 2048;

/// One remembered text (a copy) and its facts.
type Remembered = Option<(Box<str>, SqlFacts)>;

thread_local! {
    /// The facts of the last texts seen on this thread, by a hash of their length and
    /// three of their bytes (so a text built anew each call finds its entry too).
    static FACTS: RefCell<[Remembered; FACT_WAYS]> =
        const { RefCell::new([const { None }; FACT_WAYS]) };
}

/// [`SqlFacts`] of `sql`, remembered per thread: an application runs the same few texts
/// over and over, and reading one again (a comparison of its bytes with the copy kept)
/// costs a fraction of working them out (some 500 instructions for pgbench's statement,
/// callgrind). A text is taken as remembered only when all its bytes match.
pub(crate) fn sql_facts(sql: &str) -> SqlFacts {
    let b = sql.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return SqlFacts::of(sql);
    };
    if b.len() > FACT_MAX_LEN {
        return SqlFacts::of(sql);
    }
    let key = (b.len() as u64)
        ^ (u64::from(first) << 16)
        ^ (u64::from(b[b.len() / 2]) << 24)
        ^ (u64::from(last) << 32);
    #[allow(clippy::cast_possible_truncation)] // the top 4 bits
    let way = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % FACT_WAYS;
    FACTS
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let entry = &mut cache[way];
            if let Some((text, facts)) = entry.as_ref()
                && **text == *sql
            {
                return *facts;
            }
            let facts = SqlFacts::of(sql);
            *entry = Some((sql.into(), facts));
            facts
        })
        // The thread is ending.
        .unwrap_or_else(|_| SqlFacts::of(sql))
}

/// The kind of session state `stmt`'s first keyword leaves, if any. The keywords are
/// told apart by length and first letter, so a word that is none of them (`SELECT`,
/// `INSERT`, `UPDATE`, …) is set aside after two comparisons.
fn refused_keyword(stmt: &str) -> Option<&'static str> {
    const CURSOR: &str = "a cursor (DECLARE/FETCH/CLOSE)";
    const END: &str = "COMMIT/ROLLBACK";
    let word = first_word(stmt);
    // `first_word` holds ASCII letters only.
    let first = word.as_bytes().first().map(u8::to_ascii_lowercase)?;
    let is = |w: &str| word.eq_ignore_ascii_case(w);
    let next_is = |words: &[&str]| {
        let next = first_word(after_word(stmt));
        words.iter().any(|w| next.eq_ignore_ascii_case(w))
    };
    match (word.len(), first) {
        (3, b's') if is("set") => (!next_is(&["local", "transaction"])).then_some("SET"),
        (3, b'e') if is("end") => Some(END),
        (4, b'm') if is("move") => Some(CURSOR),
        (5, b'a') if is("abort") => Some(END),
        (5, b'b') if is("begin") => Some("BEGIN"),
        (5, b'c') if is("close") => Some(CURSOR),
        (5, b'f') if is("fetch") => Some(CURSOR),
        (5, b'r') if is("reset") => Some("RESET"),
        (5, b's') if is("start") => Some("BEGIN"),
        (6, b'c') if is("commit") => Some(END),
        (6, b'c') if is("create") => next_is(&["temp", "temporary"]).then_some("a temporary table"),
        (6, b'l') if is("listen") => Some("LISTEN"),
        (7, b'd') if is("declare") => Some(CURSOR),
        (7, b'd') if is("discard") => Some("DISCARD"),
        (7, b'p') if is("prepare") => Some("PREPARE"),
        (7, b'r') if is("release") => Some("SAVEPOINT"),
        (8, b'r') if is("rollback") => Some(END),
        (8, b'u') if is("unlisten") => Some("UNLISTEN"),
        (9, b's') if is("savepoint") => Some("SAVEPOINT"),
        (10, b'd') if is("deallocate") => Some("DEALLOCATE"),
        _ => None,
    }
}

/// ASCII whitespace as `char::is_whitespace` has it (with the vertical tab, which
/// `u8::is_ascii_whitespace` leaves out).
fn ascii_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r')
}

/// The statement without leading blanks and `--` / `/* */` comments: ASCII blanks are
/// skipped a byte at a time; a comment or a non-ASCII character (Unicode whitespace)
/// next takes the general path.
fn skip_blank(s: &str) -> &str {
    let b = s.as_bytes();
    let i = b.iter().position(|&c| !ascii_blank(c)).unwrap_or(b.len());
    match b.get(i) {
        // Only ASCII bytes were skipped: `i` is a character boundary.
        Some(&c) if c >= 0x80 || c == b'-' || c == b'/' => skip_blank_general(&s[i..]),
        _ => &s[i..],
    }
}

fn skip_blank_general(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return s;
        }
    }
}

/// Where the leading ASCII letters of `s` end (a non-ASCII character's first byte is not
/// one, so this is a character boundary).
fn word_end(s: &str) -> usize {
    s.bytes()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(s.len())
}

fn first_word(s: &str) -> &str {
    let s = skip_blank(s);
    &s[..word_end(s)]
}

fn after_word(s: &str) -> &str {
    let s = skip_blank(s);
    &s[word_end(s)..]
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.as_bytes()
        .windows(n.len())
        .any(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_is_refused_on_shared_connections() {
        for (sql, kind) in [
            ("SET search_path = app", "SET"),
            ("  set statement_timeout to 5", "SET"),
            ("RESET ALL", "RESET"),
            ("LISTEN jobs", "LISTEN"),
            ("unlisten *", "UNLISTEN"),
            ("PREPARE q AS SELECT 1", "PREPARE"),
            ("BEGIN", "BEGIN"),
            ("start transaction", "BEGIN"),
            ("SELECT 1; COMMIT", "COMMIT/ROLLBACK"),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                "a cursor (DECLARE/FETCH/CLOSE)",
            ),
            ("create temp table t (x int)", "a temporary table"),
            ("-- note\nSET x = 1", "SET"),
            ("/* c */ DISCARD ALL", "DISCARD"),
        ] {
            assert_eq!(shared_refusal(sql), Some(kind), "{sql}");
        }
        assert!(shared_refusal("select pg_advisory_lock(1)").is_some());
        assert!(shared_refusal("select set_config('a.b', '1', false)").is_some());
        for sql in [
            "SELECT 1",
            "SET LOCAL statement_timeout = 5",
            "select pg_advisory_xact_lock(1)",
            "select set_config('a.b', '1', true)",
            "INSERT INTO settings (name) VALUES ('begin')",
            "create table t (x int)",
            "UPDATE t SET x = 1",
        ] {
            assert_eq!(shared_refusal(sql), None, "{sql}");
        }
    }

    /// The check as first written (every keyword compared in turn, each function name
    /// searched for over the whole text), kept to hold the faster one to its answers.
    fn reference_refusal(sql: &str) -> Option<&'static str> {
        // The first version's blank skipping is the general path kept beside the fast one.
        use super::skip_blank_general as skip;
        fn word(s: &str) -> &str {
            let s = skip(s);
            &s[..s
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(s.len())]
        }
        fn after(s: &str) -> &str {
            let s = skip(s);
            &s[s.find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(s.len())..]
        }
        for stmt in sql.split(';') {
            let w = word(stmt);
            let is = |x: &str| w.eq_ignore_ascii_case(x);
            let kind = if is("set") {
                let next = word(after(stmt));
                if next.eq_ignore_ascii_case("local") || next.eq_ignore_ascii_case("transaction") {
                    None
                } else {
                    Some("SET")
                }
            } else if is("reset") {
                Some("RESET")
            } else if is("listen") {
                Some("LISTEN")
            } else if is("unlisten") {
                Some("UNLISTEN")
            } else if is("prepare") {
                Some("PREPARE")
            } else if is("deallocate") {
                Some("DEALLOCATE")
            } else if is("begin") || is("start") {
                Some("BEGIN")
            } else if is("commit") || is("end") || is("rollback") || is("abort") {
                Some("COMMIT/ROLLBACK")
            } else if is("savepoint") || is("release") {
                Some("SAVEPOINT")
            } else if is("declare") || is("fetch") || is("move") || is("close") {
                Some("a cursor (DECLARE/FETCH/CLOSE)")
            } else if is("discard") {
                Some("DISCARD")
            } else if is("create") {
                let next = word(after(stmt));
                (next.eq_ignore_ascii_case("temp") || next.eq_ignore_ascii_case("temporary"))
                    .then_some("a temporary table")
            } else {
                None
            };
            if kind.is_some() {
                return kind;
            }
        }
        if contains_ci(sql, "pg_advisory_lock")
            || contains_ci(sql, "pg_try_advisory_lock")
            || contains_ci(sql, "pg_advisory_unlock")
        {
            return Some("a session advisory lock (use pg_advisory_xact_lock)");
        }
        if contains_ci(sql, "set_config(") && !contains_ci(sql, "true") {
            return Some("set_config(…, false)");
        }
        None
    }

    /// The fast check gives the reference's answer on every string built from pieces
    /// that sit at its edges: each keyword in both cases, the words after SET and CREATE,
    /// blanks (the vertical tab, Unicode ones), comments, `;`, the function names, names
    /// cut short, `_`s at the text's ends, and non-ASCII text next to them.
    #[test]
    fn the_fast_refusal_answers_as_the_reference() {
        let pieces = [
            "",
            " ",
            "\t",
            "\x0B",
            "\u{a0}",
            "\u{2003}",
            "\n",
            "-- c\n",
            "/* c */",
            "/* open",
            "--",
            "-",
            "/",
            "(",
            ";",
            "é",
            "_",
            "__",
            "x_",
            "SELECT 1",
            "select",
            "set",
            "SET",
            "Set",
            "local",
            "LOCAL",
            "transaction",
            "x = 1",
            "reset",
            "listen",
            "unlisten",
            "prepare",
            "deallocate",
            "begin",
            "start",
            "commit",
            "end",
            "rollback",
            "abort",
            "savepoint",
            "release",
            "declare",
            "fetch",
            "move",
            "close",
            "discard",
            "create",
            "CREATE",
            "temp",
            "TEMPORARY",
            "table",
            "ends",
            "settle",
            "sets",
            "créate",
            "pg_advisory_lock(1)",
            "PG_ADVISORY_LOCK",
            "pg_try_advisory_lock",
            "pg_advisory_unlock",
            "pg_advisory_xact_lock(1)",
            "pg_advisory_loc",
            "pg_",
            "g_advisory_lock",
            "éPg_advisory_unlock",
            "set_config('a', '1', false)",
            "SET_CONFIG(",
            "set_config",
            "set_confi(",
            "true",
            "TRUE",
            "tru",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for sep in ["", " ", ";", "_", "\u{a0}"] {
                    // Short, and long enough for the vector search's wide steps.
                    let pad = " ".repeat(64);
                    for sql in [
                        format!("{a}{sep}{b}"),
                        format!("{b}{sep}{a} {b}"),
                        format!("{a}{pad}{sep}{b}"),
                    ] {
                        assert_eq!(shared_refusal(&sql), reference_refusal(&sql), "{sql:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, pieces.len() * pieces.len() * 5 * 3);
    }

    /// The facts remembered per thread are those worked out afresh, for texts seen
    /// again, texts that share an entry (same length, first, middle and last byte: only
    /// the bytes between differ) and texts too long to keep.
    #[test]
    fn remembered_facts_are_the_texts_own() {
        let long = format!("SET x = 1; {}", "a".repeat(FACT_MAX_LEN));
        let texts = [
            "SELECT 1",
            "SET x = 1",
            "SAT x = 1", // the same entry as "SET x = 1"
            "select pg_advisory_lock(1)",
            "select pg_advisory_xact_lock(1)",
            "BEGIN",
            "",
            " ",
            long.as_str(),
            "(SELECT 1)",
        ];
        for _ in 0..3 {
            for t in texts {
                let built = String::from(t); // a text built anew: another address
                for sql in [t, built.as_str()] {
                    assert_eq!(
                        sql_facts(sql),
                        SqlFacts {
                            refusal: shared_refusal(sql),
                            operation: Operation::sql(sql),
                        },
                        "{sql:?}"
                    );
                }
            }
        }
        assert_eq!(sql_facts("SET x = 1").refusal, Some("SET"));
        assert_eq!(sql_facts("SAT x = 1").refusal, None);
        assert_eq!(sql_facts("SET x = 1").refusal, Some("SET"));
        assert_eq!(sql_facts("(SELECT 1)").operation.as_str(), "select");
    }
}
