//! Reading and parsing environment variables. This is the only module of poolkit
//! that touches the process environment; everything else takes a lookup function,
//! so tests never need `std::env::set_var`.

use std::time::Duration;

use crate::ConfigError;

/// Reads one variable from the process environment.
///
/// A variable that is set but not valid Unicode is reported as the replacement-
/// character version of its value, so the parser names it as invalid rather than
/// treating it as unset.
#[must_use]
#[allow(clippy::disallowed_methods)] // the one place allowed to read the environment
pub fn process_lookup(var: &str) -> Option<String> {
    std::env::var_os(var).map(|v| v.to_string_lossy().into_owned())
}

/// The names of every process environment variable that starts with `PREFIX_`, sorted.
///
/// Used to warn about variables poolkit does not read (a typo such as
/// `DATABASE_POOL_SZIE`); see [`unknown_vars`].
#[must_use]
#[allow(clippy::disallowed_methods)] // the one place allowed to read the environment
pub fn vars_with_prefix(prefix: &str) -> Vec<String> {
    let start = format!("{prefix}_");
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with(&start))
        .collect();
    names.sort();
    names
}

/// The edit distance (insertions, deletions, substitutions, adjacent swaps) between two
/// ASCII names.
#[must_use]
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The known name nearest to `name`, when it is close enough to be a typo (at most a
/// third of its length away, and at most 4 edits).
#[must_use]
pub fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (name.len() / 3).clamp(1, 4);
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The variables among `names` that start with `PREFIX_` but are not `PREFIX_` + one of
/// `known_suffixes` (nor one of `known_full` names), each with a message naming the nearest
/// known variable: "DATABASE_POOL_SZIE is not a poolkit variable; did you mean
/// DATABASE_POOL_SIZE?".
#[must_use]
pub fn unknown_vars(
    prefix: &str,
    known_suffixes: &[&str],
    known_full: &[&str],
    names: &[String],
) -> Vec<(String, String)> {
    let start = format!("{prefix}_");
    let known: Vec<String> = known_suffixes
        .iter()
        .map(|s| format!("{start}{s}"))
        .chain(known_full.iter().map(|s| (*s).to_owned()))
        .collect();
    let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
    names
        .iter()
        .filter(|n| n.starts_with(&start) && !known_refs.contains(&n.as_str()))
        .map(|n| {
            let message = match nearest(n, &known_refs) {
                Some(k) => format!("{n} is not a poolkit variable; did you mean {k}?"),
                None => format!(
                    "{n} is not a poolkit variable and is ignored (poolkit reads {}_POOL_SIZE, {}_POOL_TIMEOUT, …; see the README's configuration table)",
                    prefix, prefix
                ),
            };
            (n.clone(), message)
        })
        .collect()
}

/// The one unknown-variable check every adapter uses: warns (see [`warn_unknown`]) about
/// variables under `PREFIX_` that are neither a common knob
/// ([`crate::PoolConfig::ENV_SUFFIXES`]) nor one of the adapter's `suffixes`, and returns
/// the messages.
pub fn unknown_adapter_vars(prefix: &str, suffixes: &[&str]) -> Vec<String> {
    let known: Vec<&str> = crate::PoolConfig::ENV_SUFFIXES
        .iter()
        .chain(suffixes)
        .copied()
        .collect();
    warn_unknown(prefix, &known, OTHER_TOOLS)
}

/// Variables of other tools that share an adapter's prefix (`HTTP_PROXY`, read by curl,
/// reqwest and most HTTP clients, under the HTTP pool's `HTTP_`): never called unknown.
pub const OTHER_TOOLS: &[&str] = &["HTTP_PROXY"];

/// The one way every adapter's `Config` reads the environment: the same
/// `Config::from_env(prefix)` for PostgreSQL, Redis and HTTP (each adapter's inherent
/// `Config::from_env` is this one), the same unknown-variable check, and the prefix
/// `Pool::from_env()` reads.
pub trait FromEnv: Sized {
    /// The prefix `Pool::from_env()` reads (`DATABASE`, `REDIS`, `HTTP`).
    const DEFAULT_PREFIX: &'static str;
    /// The variable suffixes the adapter reads under its prefix besides the common knobs
    /// ([`crate::PoolConfig::ENV_SUFFIXES`]); any other `PREFIX_*` variable is warned about.
    const ENV_SUFFIXES: &'static [&'static str];

    /// Reads the configuration under `prefix` through `lookup` (tests pass a map; nothing
    /// touches the process environment).
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is missing, malformed or contradicts
    /// another.
    fn from_vars(
        prefix: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError>;

    /// Reads the configuration under `prefix` from the process environment, after warning
    /// once about each `PREFIX_*` variable the adapter does not read.
    ///
    /// # Errors
    /// As [`FromEnv::from_vars`].
    fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        let _ = Self::unknown_vars(prefix);
        Self::from_vars(prefix, &process_lookup)
    }

    /// Warns (once each) about the `PREFIX_*` variables in the process environment that
    /// the adapter does not read, and returns the messages (for `poolctl check`): the one
    /// check, [`unknown_adapter_vars`], with the adapter's suffixes.
    #[must_use]
    fn unknown_vars(prefix: &str) -> Vec<String> {
        unknown_adapter_vars(prefix, Self::ENV_SUFFIXES)
    }
}

/// Implements [`FromEnv`] for an adapter's `Config` and gives it the inherent
/// `Config::from_env(prefix)` (so callers need no import): `$read` reads the configuration
/// under a prefix through a lookup.
///
/// `from_env!(Config, DEFAULT_PREFIX, ENV_SUFFIXES, |prefix, lookup| Config::from_lookup(prefix, lookup))`
#[macro_export]
macro_rules! from_env {
    ($config:ty, $prefix:expr, $suffixes:expr, |$p:ident, $l:ident| $read:expr) => {
        impl $crate::FromEnv for $config {
            const DEFAULT_PREFIX: &'static str = $prefix;
            const ENV_SUFFIXES: &'static [&'static str] = $suffixes;

            fn from_vars(
                $p: &str,
                $l: &dyn Fn(&str) -> Option<String>,
            ) -> Result<Self, $crate::ConfigError> {
                $read
            }
        }

        impl $config {
            /// Reads the configuration under `prefix` from the process environment,
            /// warning once about `PREFIX_*` variables the adapter does not read: the same
            /// in every adapter ([`poolkit_core::FromEnv::from_env`]).
            ///
            /// # Errors
            /// [`poolkit_core::ConfigError`] naming the variable that is missing, malformed
            /// or contradicts another.
            pub fn from_env(prefix: &str) -> Result<Self, $crate::ConfigError> {
                <Self as $crate::FromEnv>::from_env(prefix)
            }
        }
    };
}

/// Warns (once per variable name per process) about the process environment's variables
/// under `PREFIX_` that poolkit does not read, and returns every such message (including
/// ones already warned about), for `poolctl check` to show.
pub fn warn_unknown(prefix: &str, known_suffixes: &[&str], known_full: &[&str]) -> Vec<String> {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let found = unknown_vars(
        prefix,
        known_suffixes,
        known_full,
        &vars_with_prefix(prefix),
    );
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (name, message) in &found {
        if !warned.contains(name) {
            tracing::warn!(variable = %name, "{message}");
            warned.push(name.clone());
        }
    }
    found.into_iter().map(|(_, m)| m).collect()
}

/// Reads variables under a prefix from a lookup function.
///
/// `Env::new("SUPABASE", lookup).var("POOL_SIZE")` reads `SUPABASE_POOL_SIZE`.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    prefix: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<'a> Env<'a> {
    /// A reader for variables named `PREFIX_...`, resolved with `lookup`.
    pub fn new(prefix: &'a str, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { prefix, lookup }
    }

    /// The prefix, as given (for example `DATABASE`).
    #[must_use]
    pub fn prefix(&self) -> &'a str {
        self.prefix
    }

    /// The full variable name for `suffix`: `PREFIX_SUFFIX`.
    #[must_use]
    pub fn name(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.prefix)
    }

    /// The value of `PREFIX_SUFFIX`, or `None` when it is unset. A variable set to the
    /// empty string is returned as set, so a numeric parser reports it as invalid.
    #[must_use]
    pub fn var(&self, suffix: &str) -> Option<(String, String)> {
        let name = self.name(suffix);
        self.raw(&name).map(|v| (name, v))
    }

    /// The value of a variable by its full name, or `None` when unset.
    #[must_use]
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// The value of a variable by its full name, or `None` when unset or blank
    /// (for optional strings such as `REDIS_PASSWORD=`, where blank means "none").
    #[must_use]
    pub fn raw_nonempty(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// Parses `PREFIX_SUFFIX` as a whole number in `min..=max`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable when the value is not such a number.
    pub fn u32_in(
        &self,
        suffix: &str,
        min: u32,
        max: u32,
    ) -> Result<Option<(String, u32)>, ConfigError> {
        match self.var(suffix) {
            None => Ok(None),
            Some((name, value)) => parse_u32(&name, &value, min, max).map(|v| Some((name, v))),
        }
    }

    /// Parses `PREFIX_SUFFIX` as a duration (see [`parse_duration`]).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable when the value is not a duration.
    pub fn duration(&self, suffix: &str) -> Result<Option<(String, Duration)>, ConfigError> {
        match self.var(suffix) {
            None => Ok(None),
            Some((name, value)) => parse_duration(&name, &value).map(|v| Some((name, v))),
        }
    }
}

/// Parses a whole number in `min..=max` for variable `var`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`, the value and the accepted range.
pub fn parse_u32(var: &str, value: &str, min: u32, max: u32) -> Result<u32, ConfigError> {
    let expected = format!("a whole number from {min} to {max}");
    let t = value.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::invalid(var, value, &expected));
    }
    match t.parse::<u64>() {
        Ok(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(u32::try_from(n).unwrap_or(max)),
        _ => Err(ConfigError::invalid(var, value, &expected)),
    }
}

/// Parses a whole number in `min..=max` for variable `var`, as a `u64`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`, the value and the accepted range.
pub fn parse_u64(var: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let expected = format!("a whole number from {min} to {max}");
    let t = value.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::invalid(var, value, &expected));
    }
    match t.parse::<u64>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError::invalid(var, value, &expected)),
    }
}

/// The longest duration poolkit accepts (one week): longer values are almost always
/// a unit mistake (milliseconds written as seconds).
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

const DURATION_EXPECTED: &str =
    "a duration such as 30, 30.0 (seconds), 500ms, 30s, 10m or 1h, at most 7 days";

/// Parses a duration: a bare number is seconds (`30`, `30.0`, `0.5`); or a number
/// with a unit `ms`, `s`, `m`, `h` (`500ms`, `30s`, `10m`, `1h`). No space between number
/// and unit, no sign, no exponent; at most [`MAX_DURATION`].
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`, the value and the accepted forms.
pub fn parse_duration(var: &str, value: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::invalid(var, value, DURATION_EXPECTED);
    let t = value.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale_ms: u64 = match unit {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(err()),
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 12
    {
        return Err(err());
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| err())?
    };
    // Fractional part to nanoseconds of the unit, ignoring digits past nanoseconds.
    let frac_digits: String = frac.chars().take(9).collect();
    let frac_nanos: u64 = if frac_digits.is_empty() {
        0
    } else {
        let n: u64 = frac_digits.parse().map_err(|_| err())?;
        n * 10u64.pow(9 - u32::try_from(frac_digits.len()).unwrap_or(9))
    };
    let total_nanos = u128::from(int) * u128::from(scale_ms) * 1_000_000
        + u128::from(frac_nanos) * u128::from(scale_ms) / 1_000;
    if total_nanos > MAX_DURATION.as_nanos() {
        return Err(err());
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err())?;
    let nanos = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: &str) -> Result<Duration, ConfigError> {
        parse_duration("X_TIMEOUT", v)
    }

    #[test]
    fn durations_in_every_documented_form() {
        assert_eq!(d("30").unwrap(), Duration::from_secs(30));
        assert_eq!(d("30.0").unwrap(), Duration::from_secs(30));
        assert_eq!(d("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(d("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(d("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(d("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(d("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(d(" 2.25s ").unwrap(), Duration::from_millis(2250));
        assert_eq!(d("1.5ms").unwrap(), Duration::from_micros(1500));
        assert_eq!(d("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations_name_the_variable() {
        for bad in [
            "",
            "-1",
            "abc",
            "30 s",
            "1e3",
            "NaN",
            "inf",
            "1e309",
            "30sec",
            ".",
            "1..2",
            "١٢",
            "99999999999999999999",
            "8d",
            "200h",
        ] {
            let e = d(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains("X_TIMEOUT"), "{msg}");
            assert!(msg.contains("duration"), "{msg}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32("A", "20", 1, 100).unwrap(), 20);
        for bad in [
            "0",
            "101",
            "-5",
            "2.5",
            "",
            " ",
            "twenty",
            "99999999999999999999999",
            "１０",
        ] {
            let e = parse_u32("A_POOL_SIZE", bad, 1, 100).expect_err(bad);
            assert!(e.to_string().contains("A_POOL_SIZE"));
            assert!(e.to_string().contains("from 1 to 100"));
        }
    }

    #[test]
    fn unknown_names_get_the_nearest_known_one() {
        let names: Vec<String> = [
            "DATABASE_POOL_SZIE",
            "DATABASE_POOL_SIZE",
            "DATABASE_URL",
            "DATABASE_SOMETHING_ELSE",
            "OTHER_POOL_SZIE",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let found = unknown_vars("DATABASE", &["POOL_SIZE", "URL"], &[], &names);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0].1,
            "DATABASE_POOL_SZIE is not a poolkit variable; did you mean DATABASE_POOL_SIZE?"
        );
        assert!(
            found[1]
                .1
                .starts_with("DATABASE_SOMETHING_ELSE is not a poolkit variable and is ignored"),
            "{}",
            found[1].1
        );
        let http: Vec<String> = vec!["HTTP_PROXY".into(), "HTTP_POOL_SZIE".into()];
        let found = unknown_vars("HTTP", &["POOL_SIZE"], OTHER_TOOLS, &http);
        assert_eq!(
            found.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["HTTP_POOL_SZIE"],
            "a proxy setting under HTTP_ is not poolkit's to warn about"
        );
        assert_eq!(edit_distance("POOL_SZIE", "POOL_SIZE"), 1);
        assert_eq!(
            nearest("SUPABASE_MAX_KEEPALVE", &["SUPABASE_MAX_KEEPALIVE"]),
            Some("SUPABASE_MAX_KEEPALIVE")
        );
    }

    #[test]
    fn env_reads_under_prefix_and_ignores_empty() {
        let lookup = |k: &str| match k {
            "SUPABASE_POOL_SIZE" => Some("20".to_owned()),
            "SUPABASE_TIMEOUT" => Some("30.0".to_owned()),
            "SUPABASE_EMPTY" => Some("  ".to_owned()),
            _ => None,
        };
        let env = Env::new("SUPABASE", &lookup);
        assert_eq!(
            env.u32_in("POOL_SIZE", 1, 10).unwrap_err().var(),
            "SUPABASE_POOL_SIZE"
        );
        assert_eq!(env.u32_in("POOL_SIZE", 1, 100).unwrap().unwrap().1, 20);
        assert_eq!(
            env.duration("TIMEOUT").unwrap().unwrap().1,
            Duration::from_secs(30)
        );
        assert!(env.u32_in("EMPTY", 1, 5).is_err());
        assert!(env.raw_nonempty("SUPABASE_EMPTY").is_none());
        assert!(env.var("MISSING").is_none());
    }
}
