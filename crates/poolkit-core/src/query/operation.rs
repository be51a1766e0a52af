//! The `operation` label: a closed set of SQL keywords and Redis command names.

use std::sync::OnceLock;

/// Every operation label value. SQL keywords first, then Redis commands, then `other`.
const NAMES: &[&str] = &[
    // SQL
    "select",
    "insert",
    "update",
    "delete",
    "with",
    "merge",
    "values",
    "begin",
    "start",
    "commit",
    "rollback",
    "savepoint",
    "release",
    "copy",
    "call",
    "do",
    "set",
    "reset",
    "show",
    "create",
    "alter",
    "drop",
    "truncate",
    "explain",
    "analyze",
    "vacuum",
    "lock",
    "listen",
    "notify",
    "prepare",
    "execute",
    "deallocate",
    "declare",
    "fetch",
    "close",
    "discard",
    "grant",
    "revoke",
    "comment",
    "refresh",
    // Redis
    "get",
    "mget",
    "getex",
    "getdel",
    "mset",
    "setex",
    "setnx",
    "psetex",
    "getset",
    "append",
    "strlen",
    "del",
    "unlink",
    "exists",
    "expire",
    "pexpire",
    "expireat",
    "ttl",
    "pttl",
    "persist",
    "type",
    "rename",
    "incr",
    "incrby",
    "incrbyfloat",
    "decr",
    "decrby",
    "hget",
    "hset",
    "hsetnx",
    "hmget",
    "hmset",
    "hgetall",
    "hdel",
    "hexists",
    "hincrby",
    "hkeys",
    "hvals",
    "hlen",
    "lpush",
    "rpush",
    "lpop",
    "rpop",
    "lrange",
    "llen",
    "lrem",
    "ltrim",
    "lindex",
    "lmove",
    "blpop",
    "brpop",
    "blmove",
    "sadd",
    "srem",
    "smembers",
    "sismember",
    "scard",
    "spop",
    "zadd",
    "zrem",
    "zscore",
    "zincrby",
    "zcard",
    "zcount",
    "zrange",
    "zrangebyscore",
    "zrevrange",
    "zrank",
    "zpopmin",
    "xadd",
    "xread",
    "xreadgroup",
    "xack",
    "xlen",
    "xrange",
    "xdel",
    "xtrim",
    "publish",
    "subscribe",
    "eval",
    "evalsha",
    "fcall",
    "script",
    "ping",
    "echo",
    "scan",
    "sscan",
    "hscan",
    "zscan",
    "keys",
    "multi",
    "exec",
    "watch",
    "unwatch",
    "info",
    "dbsize",
    "flushdb",
    "flushall",
    "pfadd",
    "pfcount",
    "setbit",
    "getbit",
    "bitcount",
    "object",
    "memory",
    "client",
    "config",
    "pipeline",
    // Everything else
    "other",
];

/// [`NAMES`] by [`key`], for [`Operation::lookup`].
static INDEX: OnceLock<Index> = OnceLock::new();

/// A perfect hash of the [`NAMES`]' keys: a word's key hashes to one slot, which holds
/// the only name that can match it (one multiply and one compare per lookup).
struct Index {
    mul: u64,
    /// The name at each slot (its position in [`NAMES`]), or `EMPTY`.
    slots: Box<[u8; SLOTS]>,
    /// Each name's key, by position in [`NAMES`].
    keys: Vec<u128>,
}

const SLOTS: usize = 4096;
const EMPTY: u8 = u8::MAX;
const _: () = assert!(
    NAMES.len() < EMPTY as usize,
    "positions fit a u8 below EMPTY"
);

impl Index {
    fn slot(k: u128, mul: u64) -> usize {
        #[allow(clippy::cast_possible_truncation)] // the two halves, folded
        let folded = (k as u64) ^ ((k >> 64) as u64);
        // The top 12 bits of the product: 4096 slots.
        usize::try_from(folded.wrapping_mul(mul) >> 52).unwrap_or(0)
    }

    /// Tries multipliers (a fixed sequence, so every process builds the same index) until
    /// one puts every name in a slot of its own.
    fn build() -> Self {
        let keys: Vec<u128> = NAMES
            .iter()
            .map(|n| key(n.as_bytes()).expect("operation names are at most 16 letters"))
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        // About one multiplier in 15 fits 149 names in 4096 slots; the bound only turns a
        // list grown past what the slots can hold into a test failure, not a hang.
        for _ in 0..100_000 {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mul = (seed ^ (seed >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1;
            let mut slots = Box::new([EMPTY; SLOTS]);
            let placed = keys.iter().enumerate().all(|(i, &k)| {
                let at = &mut slots[Self::slot(k, mul)];
                if *at != EMPTY {
                    return false;
                }
                *at = u8::try_from(i).unwrap_or(EMPTY);
                true
            });
            if placed {
                return Self { mul, slots, keys };
            }
        }
        panic!(
            "no perfect hash for {} operation names: raise SLOTS",
            NAMES.len()
        );
    }
}

/// A word of at most 16 letters as one number (its lower-case bytes, zero-padded), so a
/// lookup compares integers instead of byte strings; `None` for anything else (no label
/// holds a digit, a symbol or more than 16 letters).
fn key(word: &[u8]) -> Option<u128> {
    if word.is_empty() || word.len() > 16 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (d, s) in bytes.iter_mut().zip(word) {
        if !s.is_ascii_alphabetic() {
            return None;
        }
        *d = s.to_ascii_lowercase();
    }
    Some(u128::from_be_bytes(bytes))
}

/// What a query did, as a label value from a closed set: the first SQL keyword or the
/// Redis command, lower case; `other` for anything not in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation(u8);

impl Operation {
    /// `other`: the label of anything outside the closed set.
    pub const OTHER: Self = Self(index_of("other"));
    /// `pipeline`: a Redis pipeline or transaction of several commands.
    pub const PIPELINE: Self = Self(index_of("pipeline"));

    fn lookup(word: &[u8]) -> Self {
        let Some(k) = key(word) else {
            return Self::OTHER;
        };
        // This runs on every Redis command and every SQL statement: one multiply and one
        // compare (a binary search over byte strings cost 450 instructions a command).
        let index = INDEX.get_or_init(Index::build);
        let at = index.slots[Index::slot(k, index.mul)];
        if at != EMPTY && index.keys[usize::from(at)] == k {
            Self(at)
        } else {
            Self::OTHER
        }
    }

    /// The operation of a SQL statement: its first keyword, skipping leading
    /// whitespace, `(` and comments.
    #[must_use]
    pub fn sql(statement: &str) -> Self {
        // This runs on every statement: ASCII blanks and `(` are skipped a byte at a
        // time; a comment or a non-ASCII character (Unicode whitespace) next takes the
        // general path. (Decoding characters throughout cost 260 instructions for
        // `SELECT 1`.)
        let b = statement.as_bytes();
        let i = b
            .iter()
            .position(|&c| !matches!(c, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b'('))
            .unwrap_or(b.len());
        match b.get(i) {
            Some(&c) if c >= 0x80 || c == b'-' || c == b'/' => Self::sql_general(statement),
            _ => {
                // A non-ASCII character's first byte is not a letter either.
                let word = &b[i..];
                let end = word
                    .iter()
                    .position(|c| !c.is_ascii_alphabetic())
                    .unwrap_or(word.len());
                Self::lookup(&word[..end])
            }
        }
    }

    /// [`Operation::sql`] through `char`s, comments and Unicode whitespace included.
    fn sql_general(statement: &str) -> Self {
        let mut s = statement;
        loop {
            s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
            if let Some(rest) = s.strip_prefix("--") {
                s = rest.split_once('\n').map_or("", |(_, r)| r);
            } else if let Some(rest) = s.strip_prefix("/*") {
                s = rest.split_once("*/").map_or("", |(_, r)| r);
            } else {
                break;
            }
        }
        let end = s
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(s.len());
        Self::lookup(&s.as_bytes()[..end])
    }

    /// The operation of a Redis command from its name (`GET`, `get`).
    #[must_use]
    pub fn redis(command: &[u8]) -> Self {
        // DISCARD is both a SQL and a Redis word; one label value serves both.
        Self::lookup(command)
    }

    /// The position in [`Operation::all`].
    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }

    /// Every label value, for schema tests and docs.
    #[must_use]
    pub fn all() -> &'static [&'static str] {
        NAMES
    }
}

const fn index_of(name: &str) -> u8 {
    let mut i = 0;
    while i < NAMES.len() {
        let n = NAMES[i].as_bytes();
        let w = name.as_bytes();
        if n.len() == w.len() {
            let mut j = 0;
            while j < n.len() && n[j] == w[j] {
                j += 1;
            }
            if j == n.len() {
                #[allow(clippy::cast_possible_truncation)]
                return i as u8;
            }
        }
        i += 1;
    }
    panic!("operation name missing from NAMES");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_found_by_its_own_name_in_any_case() {
        for (i, name) in NAMES.iter().enumerate() {
            assert_eq!(Operation::lookup(name.as_bytes()).index(), i, "{name}");
            let upper = name.to_ascii_uppercase();
            assert_eq!(Operation::lookup(upper.as_bytes()).index(), i, "{upper}");
        }
        for word in [
            &b"get\0"[..],
            b"ge",
            b"gets",
            b"g3t",
            b"",
            b"abcdefghijklmnopq",
        ] {
            assert_eq!(Operation::lookup(word), Operation::OTHER, "{word:?}");
        }
    }

    /// The byte-wise path gives the general path's answer on statements built from
    /// blanks (the vertical tab, Unicode ones), `(`, comments, keywords and non-ASCII text.
    #[test]
    fn the_fast_path_answers_as_the_general_one() {
        let heads = [
            "", " ", "\t\n", "\x0B", "\x0C\r", "(", " ( (", "\u{a0}", "\u{2003}", "\u{85}",
            "-- c\n", "--", "-", "/* c */", "/*", "/", "é", "1",
        ];
        let words = [
            "",
            "SELECT 1",
            "select",
            "Insert",
            "with x",
            "valuesx",
            "sélect",
            "get",
            "x",
            "(select",
            "-- c\nupdate",
            "delete;",
            "abcdefghijklmnopq",
        ];
        for h1 in heads {
            for h2 in heads {
                for w in words {
                    let sql = format!("{h1}{h2}{w}");
                    assert_eq!(
                        Operation::sql(&sql),
                        Operation::sql_general(&sql),
                        "{sql:?}"
                    );
                }
            }
        }
        assert_eq!(Operation::sql(" (SELECT 1)").as_str(), "select");
        assert_eq!(Operation::sql("\x0Bupdate t").as_str(), "update");
        assert_eq!(Operation::sql("\u{a0}delete").as_str(), "delete");
    }
}
