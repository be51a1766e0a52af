//! `PoolConfig`: the knobs every poolkit pool shares, in code or from the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::autosize::{DEFAULT_AUTO_INTERVAL, Sizing};
use crate::env::Env;
use crate::health::Thresholds;
use crate::{Backend, ConfigError};

/// The largest pool size poolkit accepts; larger is almost certainly a typo.
pub const MAX_POOL_SIZE_LIMIT: u32 = 10_000;

/// One knob of [`PoolConfig`], used to say which variable set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Knob {
    /// [`PoolConfig::pool_size`]
    PoolSize,
    /// [`PoolConfig::max_size`]
    MaxSize,
    /// [`PoolConfig::min_idle`]
    MinIdle,
    /// [`PoolConfig::acquire_timeout`]
    AcquireTimeout,
    /// [`PoolConfig::max_lifetime`]
    MaxLifetime,
    /// [`PoolConfig::idle_timeout`]
    IdleTimeout,
    /// [`PoolConfig::max_uses`]
    MaxUses,
    /// [`PoolConfig::ping_if_idle`]
    PingIfIdle,
    /// [`PoolConfig::leak_threshold`]
    LeakThreshold,
    /// [`PoolConfig::auto_interval`]
    AutoInterval,
    /// [`PoolConfig::slow_query`]
    SlowQuery,
    /// [`PoolConfig::ping_timeout`]
    PingTimeout,
    /// [`PoolConfig::starvation_after`]
    StarvationAfter,
}

impl Knob {
    /// The variable suffix under the pool's prefix (`POOL_SIZE` for `P_POOL_SIZE`).
    #[must_use]
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::PoolSize => "POOL_SIZE",
            Self::MaxSize => "POOL_MAXSIZE",
            Self::MinIdle => "POOL_MIN_IDLE",
            Self::AcquireTimeout => "POOL_TIMEOUT",
            Self::MaxLifetime => "MAX_LIFETIME",
            Self::IdleTimeout => "IDLE_TIMEOUT",
            Self::MaxUses => "MAX_USES",
            Self::PingIfIdle => "PING_IF_IDLE",
            Self::LeakThreshold => "LEAK_THRESHOLD",
            Self::AutoInterval => "POOL_AUTO_INTERVAL",
            Self::SlowQuery => "SLOW_QUERY",
            Self::PingTimeout => "PING_TIMEOUT",
            Self::StarvationAfter => "STARVATION_AFTER",
        }
    }
}

/// The knobs every pool shares.
///
/// Build it in code (`PoolConfig::new("database", Backend::Postgres)` then set fields) or
/// through a lookup with [`PoolConfig::from_lookup`] (the adapters' `Config::from_env(prefix)`
/// reads it from the process environment, see [`crate::FromEnv`]). Call [`PoolConfig::validate`] after
/// editing fields by hand; the pool builders do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// The pool's name: the env prefix in lower case (`database`, `supabase`). Used in
    /// metric labels, logs and errors; must match `[a-z0-9_]+`.
    pub name: String,
    /// The env prefix the pool reads (`DATABASE`); recommendations name variables under it.
    pub prefix: String,
    /// Which kind of backend the pool talks to.
    pub backend: Backend,
    /// Steady pool size: connections kept open when busy. Default: 10. Env: `P_POOL_SIZE`
    /// (for the `DATABASE` prefix also `MAX_POOL_SIZE`). With [`Sizing::Auto`] the size the
    /// pool starts at (the floor: `min_idle`, at least 1).
    pub pool_size: u32,
    /// Fixed, or sized by the pool itself between `min_idle` and `max_size` (which is then
    /// required). Default: fixed. Env: `P_POOL_SIZE=auto`.
    pub sizing: Sizing,
    /// With [`Sizing::Auto`], the least time between two changes of the target.
    /// Default: 1 s. Env: `P_POOL_AUTO_INTERVAL`.
    pub auto_interval: Duration,
    /// Burst ceiling. Connections above `pool_size` close again when returned with nobody
    /// waiting (SQLAlchemy's `max_overflow`). Default: `pool_size`. Env: `P_POOL_MAXSIZE`.
    pub max_size: Option<u32>,
    /// Connections opened before the pool is returned and kept warm. Default: 0 (1 for
    /// PostgreSQL). Env: `P_POOL_MIN_IDLE` (for `DATABASE` also `POOL_WARMUP_SIZE`).
    pub min_idle: u32,
    /// How long a caller waits for a connection (queueing and connecting included) before
    /// a timeout error. Default: 30 s. Env: `P_POOL_TIMEOUT`.
    pub acquire_timeout: Duration,
    /// Close a connection after this age. Default: 30 min. Env: `P_MAX_LIFETIME`
    /// (`0` disables).
    pub max_lifetime: Option<Duration>,
    /// Close an idle connection above `min_idle` after this long. Default: 10 min.
    /// Env: `P_IDLE_TIMEOUT` (`0` disables).
    pub idle_timeout: Option<Duration>,
    /// Close a connection after this many checkouts. Default: unlimited. Env: `P_MAX_USES`.
    pub max_uses: Option<u64>,
    /// Validate (ping) a connection at checkout only when it sat idle at least this long;
    /// `0` validates every checkout. Default: 30 s. Env: `P_PING_IF_IDLE`.
    pub ping_if_idle: Duration,
    /// The most the checkout ping may take. A connection whose ping does not answer in
    /// time (a peer that vanished without a FIN: a half-open socket) is closed and the
    /// caller is served by another, within its acquire timeout. `None`: a quarter of the
    /// acquire timeout, at most 2 s (see [`PoolConfig::effective_ping_timeout`]).
    /// Default: `None`. Env: `P_PING_TIMEOUT`.
    pub ping_timeout: Option<Duration>,
    /// How long callers may wait with no connection free (idle 0, callers pending) before
    /// the pool reports itself starved: `Health::ready` turns false, which a readiness
    /// probe reads from the monitor's `/health/ready`. `None`: the acquire timeout, at most
    /// 5 s (see [`PoolConfig::effective_starvation_after`]). Default: `None`.
    /// Env: `P_STARVATION_AFTER`.
    pub starvation_after: Option<Duration>,
    /// Warn (with the caller's location) and count `poolkit_connection_errors_total{kind="leak"}`
    /// when a connection is held longer than this. Default: off. Env: `P_LEAK_THRESHOLD`.
    pub leak_threshold: Option<Duration>,
    /// A query (SQL statement or Redis command) slower than this is counted in
    /// `poolkit_slow_queries_total` and logged with its statement, never its parameters.
    /// Default: 1 s. Env: `P_SLOW_QUERY` (`0` disables).
    pub slow_query: Option<Duration>,
    /// Utilization thresholds for health. Default: 50 / 70 / 90 %.
    pub thresholds: Thresholds,
    /// Which environment variable set each knob (absent: the default or code).
    pub sources: BTreeMap<Knob, String>,
    /// Two variables set for one knob: `(winner, loser)`, each as `NAME=value`. The
    /// prefixed name wins over the global one (`DATABASE_POOL_SIZE` over `MAX_POOL_SIZE`,
    /// `DATABASE_POOL_MIN_IDLE` over `POOL_WARMUP_SIZE`); [`PoolConfig::contradictions`]
    /// names both.
    pub shadowed: Vec<(String, String)>,
}

impl PoolConfig {
    /// The variable suffixes every pool reads under its prefix (`P_POOL_SIZE`, …).
    pub const ENV_SUFFIXES: &'static [&'static str] = &[
        "POOL_SIZE",
        "POOL_MAXSIZE",
        "POOL_MIN_IDLE",
        "POOL_TIMEOUT",
        "MAX_LIFETIME",
        "IDLE_TIMEOUT",
        "MAX_USES",
        "PING_IF_IDLE",
        "PING_TIMEOUT",
        "STARVATION_AFTER",
        "LEAK_THRESHOLD",
        "POOL_AUTO_INTERVAL",
        "HEALTH_MODERATE",
        "HEALTH_WARNING",
        "HEALTH_CRITICAL",
    ];

    /// Settings that are valid one by one but contradict each other, as one line each
    /// (the pools log them as warnings when built from the environment).
    /// Only pairs where at least one side was set explicitly are reported (the defaults
    /// of a backend are chosen to fit together).
    #[must_use]
    pub fn contradictions(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .shadowed
            .iter()
            .map(|(winner, loser)| {
                let name = |s: &str| s.split('=').next().unwrap_or_default().to_owned();
                format!(
                    "{winner} and {loser} are both set for one setting: {} wins (the prefixed name wins over the global one); remove {}",
                    name(winner),
                    name(loser)
                )
            })
            .collect();
        let set = |a: Knob, b: Knob| self.sources.contains_key(&a) || self.sources.contains_key(&b);
        if let (Some(idle), Some(life)) = (self.idle_timeout, self.max_lifetime)
            && idle >= life
            && set(Knob::IdleTimeout, Knob::MaxLifetime)
        {
            out.push(format!(
                "{}={idle:?} is not below {}={life:?}: connections reach their lifetime before they can idle out, so the idle timeout never applies",
                self.var(Knob::IdleTimeout),
                self.var(Knob::MaxLifetime)
            ));
        }
        if let Some(idle) = self.idle_timeout
            && !self.ping_if_idle.is_zero()
            && self.ping_if_idle >= idle
            && set(Knob::PingIfIdle, Knob::IdleTimeout)
        {
            out.push(format!(
                "{}={:?} is not below {}={idle:?}: idle connections close before they would be pinged",
                self.var(Knob::PingIfIdle),
                self.ping_if_idle,
                self.var(Knob::IdleTimeout)
            ));
        }
        if let (Some(leak), Some(life)) = (self.leak_threshold, self.max_lifetime)
            && leak >= life
            && set(Knob::LeakThreshold, Knob::MaxLifetime)
        {
            out.push(format!(
                "{}={leak:?} is not below {}={life:?}: a leaked connection is recycled before it is reported",
                self.var(Knob::LeakThreshold),
                self.var(Knob::MaxLifetime)
            ));
        }
        out
    }

    /// Defaults for a pool called `name` (lower case) talking to `backend`.
    #[must_use]
    pub fn new(name: &str, backend: Backend) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            prefix: name.to_ascii_uppercase(),
            backend,
            pool_size: 10,
            sizing: Sizing::Fixed,
            auto_interval: DEFAULT_AUTO_INTERVAL,
            max_size: None,
            min_idle: 0,
            acquire_timeout: Duration::from_secs(30),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            max_uses: None,
            ping_if_idle: Duration::from_secs(30),
            ping_timeout: None,
            starvation_after: None,
            leak_threshold: None,
            slow_query: Some(Duration::from_secs(1)),
            thresholds: Thresholds::default(),
            sources: BTreeMap::new(),
            shadowed: Vec::new(),
        }
    }

    /// Reads `PREFIX_POOL_SIZE`, `PREFIX_POOL_MAXSIZE`, `PREFIX_POOL_MIN_IDLE`,
    /// `PREFIX_POOL_TIMEOUT`, `PREFIX_MAX_LIFETIME`, `PREFIX_IDLE_TIMEOUT`,
    /// `PREFIX_MAX_USES` and `PREFIX_PING_IF_IDLE` through `lookup`, over `defaults`.
    /// For the `DATABASE` prefix the global `MAX_POOL_SIZE` and `POOL_WARMUP_SIZE` are read
    /// too (the prefixed names win when both are set). The name and prefix of the result
    /// come from `prefix`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a malformed value, naming the variable;
    /// [`ConfigError::Conflict`] for contradicting values (see [`PoolConfig::validate`]).
    pub fn from_lookup(
        prefix: &str,
        defaults: Self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = Env::new(prefix, lookup);
        let mut c = defaults;
        c.prefix = prefix.to_owned();
        c.name = prefix.to_ascii_lowercase();
        let global = prefix == "DATABASE";
        let size = |suffix: &str,
                    global_name: Option<&str>|
         -> Result<Option<(String, u32)>, ConfigError> {
            if let Some(found) = env.u32_in(suffix, 0, MAX_POOL_SIZE_LIMIT)? {
                return Ok(Some(found));
            }
            match global_name.filter(|_| global) {
                Some(g) => match env.raw(g) {
                    Some(v) => Ok(Some((
                        g.to_owned(),
                        crate::env::parse_u32(g, &v, 0, MAX_POOL_SIZE_LIMIT)?,
                    ))),
                    None => Ok(None),
                },
                None => Ok(None),
            }
        };
        if let Some((var, _)) = env
            .var(Knob::PoolSize.suffix())
            .filter(|(_, v)| v.trim().eq_ignore_ascii_case("auto"))
        {
            c.sizing = Sizing::Auto;
            c.sources.insert(Knob::PoolSize, var);
        } else if let Some((var, v)) = size(Knob::PoolSize.suffix(), Some("MAX_POOL_SIZE"))? {
            c.pool_size = v;
            c.sources.insert(Knob::PoolSize, var);
        }
        if let Some((var, v)) = size(Knob::MaxSize.suffix(), None)? {
            c.max_size = Some(v);
            c.sources.insert(Knob::MaxSize, var);
        }
        if let Some((var, v)) = size(Knob::MinIdle.suffix(), Some("POOL_WARMUP_SIZE"))? {
            c.min_idle = v;
            c.sources.insert(Knob::MinIdle, var);
        }
        if let Some((var, v)) = env.duration(Knob::AcquireTimeout.suffix())? {
            c.acquire_timeout = v;
            c.sources.insert(Knob::AcquireTimeout, var);
        }
        if let Some((var, v)) = env.duration(Knob::MaxLifetime.suffix())? {
            c.max_lifetime = (!v.is_zero()).then_some(v);
            c.sources.insert(Knob::MaxLifetime, var);
        }
        if let Some((var, v)) = env.duration(Knob::IdleTimeout.suffix())? {
            c.idle_timeout = (!v.is_zero()).then_some(v);
            c.sources.insert(Knob::IdleTimeout, var);
        }
        if let Some((var, value)) = env.var(Knob::MaxUses.suffix()) {
            let v = crate::env::parse_u64(&var, &value, 0, u64::MAX)?;
            c.max_uses = (v != 0).then_some(v);
            c.sources.insert(Knob::MaxUses, var);
        }
        if let Some((var, v)) = env.duration(Knob::LeakThreshold.suffix())? {
            c.leak_threshold = (!v.is_zero()).then_some(v);
            c.sources.insert(Knob::LeakThreshold, var);
        }
        if let Some((var, v)) = env.duration(Knob::SlowQuery.suffix())? {
            c.slow_query = (!v.is_zero()).then_some(v);
            c.sources.insert(Knob::SlowQuery, var);
        }
        if let Some((var, v)) = env.duration(Knob::PingIfIdle.suffix())? {
            c.ping_if_idle = v;
            c.sources.insert(Knob::PingIfIdle, var);
        }
        if let Some((var, v)) = env.duration(Knob::PingTimeout.suffix())? {
            c.ping_timeout = Some(v);
            c.sources.insert(Knob::PingTimeout, var);
        }
        if let Some((var, v)) = env.duration(Knob::StarvationAfter.suffix())? {
            c.starvation_after = Some(v);
            c.sources.insert(Knob::StarvationAfter, var);
        }
        if let Some((var, v)) = env.duration(Knob::AutoInterval.suffix())? {
            c.auto_interval = v;
            c.sources.insert(Knob::AutoInterval, var);
        }
        if c.sizing == Sizing::Auto {
            c.pool_size = c.min_idle.max(1);
        }
        if global {
            for (knob, global_name) in [
                (Knob::PoolSize, "MAX_POOL_SIZE"),
                (Knob::MinIdle, "POOL_WARMUP_SIZE"),
            ] {
                let prefixed = env.var(knob.suffix());
                if let (Some((name, value)), Some(other)) = (prefixed, env.raw(global_name)) {
                    c.shadowed.push((
                        format!("{name}={}", value.trim()),
                        format!("{global_name}={}", other.trim()),
                    ));
                }
            }
        }
        c.thresholds = Thresholds::from_lookup(Some(prefix), lookup)?;
        c.validate()?;
        for w in c.contradictions() {
            tracing::warn!(pool = %c.name, "{w}");
        }
        Ok(c)
    }

    /// The checkout ping's bound in force: [`PoolConfig::ping_timeout`], or a quarter of the
    /// acquire timeout, at most 2 s.
    #[must_use]
    pub fn effective_ping_timeout(&self) -> Duration {
        self.ping_timeout
            .unwrap_or_else(|| (self.acquire_timeout / 4).min(Duration::from_secs(2)))
    }

    /// The starvation bound in force: [`PoolConfig::starvation_after`], or the acquire
    /// timeout, at most 5 s.
    #[must_use]
    pub fn effective_starvation_after(&self) -> Duration {
        self.starvation_after
            .unwrap_or_else(|| self.acquire_timeout.min(Duration::from_secs(5)))
    }

    /// The ceiling: `max_size` when set, else `pool_size`.
    #[must_use]
    pub fn ceiling(&self) -> u32 {
        self.max_size.unwrap_or(self.pool_size)
    }

    /// The variable that sets `knob` for this pool: the one that set it, or the
    /// prefixed name (`SUPABASE_POOL_SIZE`) when it came from a default.
    #[must_use]
    pub fn var(&self, knob: Knob) -> String {
        self.sources
            .get(&knob)
            .cloned()
            .unwrap_or_else(|| format!("{}_{}", self.prefix, knob.suffix()))
    }

    /// The variable that raises the ceiling: `P_POOL_MAXSIZE` when a burst ceiling is
    /// set, else the variable that set the pool size.
    #[must_use]
    pub fn ceiling_var(&self) -> String {
        if self.max_size.is_some() {
            self.var(Knob::MaxSize)
        } else {
            self.var(Knob::PoolSize)
        }
    }

    fn shown(&self, knob: Knob, value: impl std::fmt::Display) -> String {
        format!("{}={value}", self.var(knob))
    }

    /// Checks names, ranges and contradictions.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a bad name, a zero pool size or a zero acquire timeout;
    /// [`ConfigError::Conflict`] when the burst ceiling is below the pool size, or
    /// `min_idle` is above the ceiling.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConfigError::invalid(
                "pool name",
                &self.name,
                "lower-case letters, digits and '_' (it becomes a metric label)",
            ));
        }
        if self.sizing == Sizing::Auto {
            crate::autosize::validate(self)?;
        }
        if self.pool_size == 0 {
            return Err(ConfigError::invalid(
                &self.var(Knob::PoolSize),
                "0",
                &format!(
                    "a whole number from 1 to {MAX_POOL_SIZE_LIMIT}: a pool of size 0 can never serve"
                ),
            ));
        }
        if self.pool_size > MAX_POOL_SIZE_LIMIT {
            return Err(ConfigError::invalid(
                &self.var(Knob::PoolSize),
                &self.pool_size.to_string(),
                &format!("a whole number from 1 to {MAX_POOL_SIZE_LIMIT}"),
            ));
        }
        if let Some(max) = self.max_size {
            if max < self.pool_size {
                return Err(ConfigError::Conflict {
                    first: self.shown(Knob::MaxSize, max),
                    second: self.shown(Knob::PoolSize, self.pool_size),
                    reason: format!(
                        "the burst ceiling must be at least the pool size; raise {} to {} or more, or unset it",
                        self.var(Knob::MaxSize),
                        self.pool_size
                    ),
                });
            }
            if max > MAX_POOL_SIZE_LIMIT {
                return Err(ConfigError::invalid(
                    &self.var(Knob::MaxSize),
                    &max.to_string(),
                    &format!("a whole number from 1 to {MAX_POOL_SIZE_LIMIT}"),
                ));
            }
        }
        if self.min_idle > self.ceiling() {
            let (ceiling_knob, ceiling) = if self.max_size.is_some() {
                (Knob::MaxSize, self.ceiling())
            } else {
                (Knob::PoolSize, self.pool_size)
            };
            return Err(ConfigError::Conflict {
                first: self.shown(Knob::MinIdle, self.min_idle),
                second: self.shown(ceiling_knob, ceiling),
                reason: format!(
                    "cannot keep more idle connections than the pool may open; lower {} to at most {ceiling}",
                    self.var(Knob::MinIdle)
                ),
            });
        }
        if self.acquire_timeout.is_zero() {
            return Err(ConfigError::invalid(
                &self.var(Knob::AcquireTimeout),
                "0",
                "a duration above zero: with 0 no caller could ever wait for a connection",
            ));
        }
        if self.ping_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                &self.var(Knob::PingTimeout),
                "0",
                "a duration above zero, well under the acquire timeout (such as 500ms): a ping with no time never answers",
            ));
        }
        if let Some(ping) = self.ping_timeout
            && ping >= self.acquire_timeout
        {
            return Err(ConfigError::Conflict {
                first: self.shown(Knob::PingTimeout, format!("{ping:?}")),
                second: self.shown(Knob::AcquireTimeout, format!("{:?}", self.acquire_timeout)),
                reason: format!(
                    "a ping that may take the whole acquire timeout leaves no time to serve the caller from another connection; lower {} below {:?} (a quarter of it is the default)",
                    self.var(Knob::PingTimeout),
                    self.acquire_timeout
                ),
            });
        }
        if self.starvation_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                &self.var(Knob::StarvationAfter),
                "0",
                "a duration above zero (such as 5s): with 0 any caller that waits would make the pool not ready",
            ));
        }
        self.thresholds.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(prefix: &str, vars: &[(&str, &str)]) -> Result<PoolConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        PoolConfig::from_lookup(prefix, PoolConfig::new(prefix, Backend::Http), &lookup)
    }

    #[test]
    fn seed_names_parse() {
        let c = from(
            "SUPABASE",
            &[
                ("SUPABASE_POOL_SIZE", "20"),
                ("SUPABASE_POOL_TIMEOUT", "30.0"),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.pool_size, c.ceiling()),
            ("supabase", 20, 20)
        );
        assert_eq!(c.acquire_timeout, Duration::from_secs(30));
        let c = from(
            "PINECONE",
            &[
                ("PINECONE_POOL_SIZE", "10"),
                ("PINECONE_POOL_MAXSIZE", "20"),
                ("PINECONE_POOL_TIMEOUT", "30.0"),
            ],
        )
        .unwrap();
        assert_eq!((c.pool_size, c.ceiling()), (10, 20));
        assert_eq!(c.ceiling_var(), "PINECONE_POOL_MAXSIZE");
        let c = from(
            "DATABASE",
            &[("MAX_POOL_SIZE", "20"), ("POOL_WARMUP_SIZE", "5")],
        )
        .unwrap();
        assert_eq!((c.pool_size, c.min_idle), (20, 5));
        assert_eq!(c.ceiling_var(), "MAX_POOL_SIZE");
        let c = from(
            "DATABASE",
            &[("MAX_POOL_SIZE", "20"), ("DATABASE_POOL_SIZE", "30")],
        )
        .unwrap();
        assert_eq!(c.pool_size, 30, "the prefixed name wins");
        let c = from("OTHER", &[("MAX_POOL_SIZE", "20")]).unwrap();
        assert_eq!(c.pool_size, 10, "globals belong to the DATABASE pool only");
        let c = from(
            "DATABASE",
            &[
                ("DATABASE_MAX_LIFETIME", "0"),
                ("DATABASE_IDLE_TIMEOUT", "10m"),
                ("DATABASE_MAX_USES", "50000"),
                ("DATABASE_PING_IF_IDLE", "500ms"),
            ],
        )
        .unwrap();
        assert_eq!(c.max_lifetime, None);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(c.max_uses, Some(50_000));
        assert_eq!(c.ping_if_idle, Duration::from_millis(500));
        assert_eq!(
            c.effective_ping_timeout(),
            Duration::from_secs(2),
            "default: 30 s / 4, at most 2 s"
        );
        assert_eq!(c.effective_starvation_after(), Duration::from_secs(5));
        let c = from(
            "P",
            &[
                ("P_POOL_TIMEOUT", "1s"),
                ("P_PING_TIMEOUT", "100ms"),
                ("P_STARVATION_AFTER", "3s"),
            ],
        )
        .unwrap();
        assert_eq!(c.effective_ping_timeout(), Duration::from_millis(100));
        assert_eq!(c.effective_starvation_after(), Duration::from_secs(3));
        let c = from("P", &[("P_POOL_TIMEOUT", "400ms")]).unwrap();
        assert_eq!(
            c.effective_ping_timeout(),
            Duration::from_millis(100),
            "a quarter of a short acquire timeout"
        );
        assert_eq!(c.effective_starvation_after(), Duration::from_millis(400));
        let e = from("P", &[("P_POOL_TIMEOUT", "1s"), ("P_PING_TIMEOUT", "1s")]).unwrap_err();
        assert!(e.to_string().contains("P_PING_TIMEOUT=1s"), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("REDIS_POOL_SIZE", "abc"),
            ("REDIS_POOL_SIZE", "-1"),
            ("REDIS_POOL_SIZE", ""),
            ("REDIS_POOL_SIZE", "0"),
            ("REDIS_POOL_MAXSIZE", "1.5"),
            ("REDIS_POOL_MIN_IDLE", "x"),
            ("REDIS_POOL_TIMEOUT", "30 s"),
            ("REDIS_POOL_TIMEOUT", "0"),
            ("REDIS_MAX_LIFETIME", "forever"),
            ("REDIS_IDLE_TIMEOUT", "-5"),
            ("REDIS_MAX_USES", "lots"),
            ("REDIS_PING_IF_IDLE", "1e3"),
            ("REDIS_PING_TIMEOUT", "0"),
            ("REDIS_PING_TIMEOUT", "soon"),
            ("REDIS_STARVATION_AFTER", "0"),
            ("REDIS_POOL_SIZE", "20000"),
        ] {
            let e = from("REDIS", &[(var, value)]).expect_err(var);
            assert_eq!(e.var(), var, "{e}");
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    #[test]
    fn auto_size_needs_a_ceiling() {
        let e = from("DATABASE", &[("DATABASE_POOL_SIZE", "auto")]).unwrap_err();
        assert_eq!(e.var(), "DATABASE_POOL_MAXSIZE", "{e}");
        assert!(e.to_string().contains("DATABASE_POOL_SIZE=auto"), "{e}");
        let c = from(
            "DATABASE",
            &[
                ("DATABASE_POOL_SIZE", "Auto"),
                ("DATABASE_POOL_MAXSIZE", "30"),
                ("DATABASE_POOL_MIN_IDLE", "3"),
                ("DATABASE_POOL_AUTO_INTERVAL", "250ms"),
            ],
        )
        .unwrap();
        assert_eq!(c.sizing, Sizing::Auto);
        assert_eq!((c.pool_size, c.ceiling()), (3, 30), "starts at the floor");
        assert_eq!(c.auto_interval, Duration::from_millis(250));
        let e = from(
            "P",
            &[
                ("P_POOL_SIZE", "auto"),
                ("P_POOL_MAXSIZE", "30"),
                ("P_POOL_AUTO_INTERVAL", "1ms"),
            ],
        )
        .unwrap_err();
        assert_eq!(e.var(), "P_POOL_AUTO_INTERVAL", "{e}");
    }

    #[test]
    fn contradictions_are_errors() {
        let e = from("P", &[("P_POOL_SIZE", "20"), ("P_POOL_MAXSIZE", "10")]).unwrap_err();
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
        assert!(
            e.to_string().contains("P_POOL_MAXSIZE=10") && e.to_string().contains("P_POOL_SIZE=20"),
            "{e}"
        );
        let e = from("P", &[("P_POOL_SIZE", "5"), ("P_POOL_MIN_IDLE", "6")]).unwrap_err();
        assert!(e.to_string().contains("P_POOL_MIN_IDLE=6"), "{e}");
        assert!(
            from(
                "P",
                &[
                    ("P_POOL_SIZE", "5"),
                    ("P_POOL_MAXSIZE", "8"),
                    ("P_POOL_MIN_IDLE", "8")
                ]
            )
            .is_ok()
        );
        let c = from(
            "P",
            &[
                ("P_IDLE_TIMEOUT", "40m"),
                ("P_PING_IF_IDLE", "1h"),
                ("P_MAX_LIFETIME", "30m"),
            ],
        )
        .unwrap();
        let w = c.contradictions();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("P_IDLE_TIMEOUT=2400s is not below P_MAX_LIFETIME=1800s"),
            "{w:?}"
        );
        assert!(from("P", &[]).unwrap().contradictions().is_empty());
        // Two names for one knob: both named, and which wins.
        let c = from(
            "DATABASE",
            &[("DATABASE_POOL_SIZE", "23"), ("MAX_POOL_SIZE", "20")],
        )
        .unwrap();
        assert_eq!(c.pool_size, 23);
        assert_eq!(
            c.contradictions(),
            [
                "DATABASE_POOL_SIZE=23 and MAX_POOL_SIZE=20 are both set for one setting: DATABASE_POOL_SIZE wins (the prefixed name wins over the global one); remove MAX_POOL_SIZE"
            ]
        );
        let c = from("DATABASE", &[("MAX_POOL_SIZE", "20")]).unwrap();
        assert!(c.contradictions().is_empty());
        let c = from("P", &[("P_HEALTH_WARNING", "80")]).unwrap();
        assert_eq!(c.thresholds.warning, 0.8);
        let mut c = PoolConfig::new("Bad-Name", Backend::Redis);
        c.name = "bad-name".into();
        assert!(c.validate().is_err());
    }
}
