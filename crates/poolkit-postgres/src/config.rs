//! Configuration of a PostgreSQL pool: the URL, the common knobs and the PostgreSQL ones.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use poolkit_core::FromEnv;
use poolkit_core::env::{Env, parse_duration, process_lookup};
use poolkit_core::{
    Backend, ConfigError, Knob, PasswordSource, PoolConfig, Resolve, Secret, redact_url,
};

use crate::connect::SessionAttrs;
use crate::pooler::Pooler;
use crate::tls::SslMode;

/// The default env prefix: `DATABASE` (so `DATABASE_URL`, `DATABASE_POOL_SIZE`, …).
pub const DEFAULT_PREFIX: &str = "DATABASE";

pub use poolkit_core::tcp::{
    DEFAULT_TCP_KEEPALIVE, DEFAULT_TCP_USER_TIMEOUT, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES,
};

/// The ports of transaction-mode poolers: Supavisor's 6543 and PgBouncer's 6432.
pub(crate) const POOLER_PORTS: [u16; 2] = [6543, 6432];

/// The URL without parameters tokio-postgres does not know but poolers' URLs carry
/// (`pgbouncer=true`, Prisma's `connection_limit`), so one `DATABASE_URL` serves every tool.
fn strip_params(url: &str) -> String {
    // Also the TLS settings, which poolkit handles itself (tokio-postgres knows neither
    // `verify-ca` / `verify-full` nor `sslrootcert`).
    // `target_session_attrs` too: poolkit checks it (tokio-postgres knows only three of
    // libpq's six values).
    const FOREIGN: [&str; 14] = [
        "target_session_attrs",
        "pgbouncer",
        "connection_limit",
        "pool_timeout",
        "statement_cache_size",
        "socket_timeout",
        "schema",
        "sslaccept",
        "sslidentity",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
    ];
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !FOREIGN.contains(&kv.split('=').next().unwrap_or_default()))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The value of `key` in a URL's query string (or a key=value connection string).
fn url_param(url: &str, key: &str) -> Option<String> {
    let pairs: Box<dyn Iterator<Item = &str>> = match url.split_once('?') {
        Some((_, q)) => Box::new(q.split('&')),
        None if !url.contains("://") => Box::new(url.split_whitespace()),
        None => return None,
    };
    pairs
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

pub(crate) fn url_param_pub(url: &str, key: &str) -> Option<String> {
    url_param(url, key)
}

/// What a URL must look like, for error messages.
const URL_EXPECTED: &str = "a PostgreSQL URL such as postgres://user:password@host:5432/dbname (or a key=value connection string)";

/// Configuration of a PostgreSQL pool.
///
/// `Debug` never shows the password (the URL is a [`Secret`] and tokio-postgres's own
/// `Config` redacts it).
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The common knobs (sizes, timeouts, lifetime, validation).
    pub pool: PoolConfig,
    /// The connection URL as given. Env: `P_URL` (`DATABASE_URL`).
    pub url: Secret,
    /// Sent to the server as `application_name`, shown in `pg_stat_activity`.
    /// Default: `poolkit`. Env: `P_APPLICATION_NAME` (a name in the URL wins over the default).
    pub application_name: String,
    /// Server-side `statement_timeout` for every connection, sent at connect as
    /// `options=-c statement_timeout=…`. Default: none. Env: `P_STATEMENT_TIMEOUT`.
    /// (PgBouncer refuses startup `options` unless `ignore_startup_parameters` lists it.)
    pub statement_timeout: Option<Duration>,
    /// How many shared connections carry the statements run on the pool itself
    /// ([`crate::Pool::query`] and its siblings), pipelined: a number, `auto` (the
    /// default: sized from what it measures) or `0` (off: those statements check out a
    /// connection). They count against the pool's ceiling. Env: `P_SHARED_CONNECTIONS`.
    pub shared: crate::SharedConnections,
    /// When every shared connection has had a statement in flight and none finished for
    /// this long, new statements go to an exclusive checkout instead (a slow statement
    /// does not stall the ones behind it). Default: 5 ms. Env: `P_SHARED_SPILL`.
    pub shared_spill: Duration,
    /// Timeout for opening one connection. Default: the acquire timeout, at most 10 s.
    /// Env: `P_CONNECT_TIMEOUT`.
    pub connect_timeout: Option<Duration>,
    /// The server-side pooler in front of PostgreSQL. Default: `transaction` when the URL's
    /// port is 6543 (Supavisor) or 6432 (PgBouncer) or it has `pgbouncer=true`, else
    /// `none`; a pool in `none` mode also switches to `transaction` by itself the first
    /// time the server refuses one of its named prepared statements (SQLSTATE 26000 or
    /// 42P05), and runs that statement again unnamed. Env: `P_POOLER`.
    pub pooler: Pooler,
    /// libpq's `sslmode`: `disable`, `prefer` (the default, as in libpq), `require`,
    /// `verify-ca`, `verify-full`. From the URL's `sslmode=`, or env `P_SSLMODE` (wins).
    pub ssl_mode: SslMode,
    /// PEM file of the root certificate(s) to verify the server with (else the system's
    /// roots). From the URL's `sslrootcert=`, or env `P_SSLROOTCERT` (wins).
    pub ssl_root_cert: Option<std::path::PathBuf>,
    /// Read replicas: one URL or a comma list. Env: `P_READ_URL` (`DATABASE_READ_URL`).
    pub read_urls: Vec<Secret>,
    /// A budget shared with every other instance of this pool (`P_FLEET_BUDGET`); needs
    /// the `fleet` feature. Default: none.
    pub fleet: Option<crate::fleet_config::FleetConfig>,
    /// The connections the server grants this application, when below (or instead of
    /// asking) its `max_connections`: a managed plan's limit. Used by the budget check.
    /// Default: none. Env: `P_MAX_CONNECTIONS` (`DATABASE_MAX_CONNECTIONS`).
    pub max_connections: Option<crate::prisma::Limit>,
    /// The server connections the pooler in front of PostgreSQL holds (Supavisor's pool
    /// size, PgBouncer's `default_pool_size`). Used by the budget check. Default: none.
    /// Env: `SUPAVISOR_POOL_SIZE` (`poolctl check --pgbouncer-pool-size`).
    pub pooler_pool_size: Option<crate::prisma::Limit>,
    /// Where the password comes from: the URL's (default), a file read at every new
    /// connection (`P_PASSWORD_FILE`: a Kubernetes or Docker secret mount), or a provider
    /// with an expiry ([`crate::Builder::password_provider`]: RDS IAM, Azure AD tokens).
    /// Open connections keep serving until their lifetime; new ones use the new secret.
    pub password: PasswordSource,
    /// What kind of server a connection must reach: libpq's `target_session_attrs`
    /// (`any`, `read-write`, `read-only`, `primary`, `standby`, `prefer-standby`), with the
    /// URL's hosts tried in order. Default: `any`, or the URL's `target_session_attrs=`.
    /// Env: `P_TARGET_SESSION_ATTRS` (wins over the URL).
    pub target_session_attrs: SessionAttrs,
    /// TCP keep-alive on every connection: idle time before the first probe (then every
    /// 10 s, 3 probes), so a peer that vanished without a FIN is found while idle.
    /// Default: 60 s (`None`/`0` disables). Env: `P_TCP_KEEPALIVE`; the URL's
    /// `keepalives_idle` wins over the default.
    pub tcp_keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT` on every connection: data sent and not acknowledged for this
    /// long closes the socket (a peer gone mid-statement), and an idle connection whose
    /// keep-alive probes go unanswered closes about 10 s after the first probe.
    /// Default: 30 s (`None`/`0` disables). Env: `P_TCP_USER_TIMEOUT`; the URL's
    /// `tcp_user_timeout` wins over the default.
    pub tcp_user_timeout: Option<Duration>,
    /// Resolves host names for every new connection instead of the system resolver (see
    /// [`Resolve`]). Default: none (the system's).
    pub resolver: Option<Arc<dyn Resolve>>,
    /// A read replica's pool (25006 is what its server is, not a move).
    pub(crate) replica: bool,
    /// Notes about settings that were overridden (`DATABASE_POOL_SIZE=5 wins over
    /// connection_limit=25 in DATABASE_URL`), logged when read and shown by `poolctl check`.
    pub notes: Vec<String>,
    /// Hooks around a connection's life (set in code: see [`crate::Hooks`]).
    pub hooks: crate::hooks::Hooks,
}

/// Every variable suffix a PostgreSQL pool reads under its prefix (besides
/// [`PoolConfig::ENV_SUFFIXES`]); the rest under the prefix are warned about.
pub const ENV_SUFFIXES: &[&str] = &[
    "URL",
    "URL_TRANSACTION",
    "URL_SESSION",
    "URL_DIRECT",
    "READ_URL",
    "APPLICATION_NAME",
    "STATEMENT_TIMEOUT",
    "CONNECT_TIMEOUT",
    "SSLMODE",
    "SSLROOTCERT",
    "POOLER",
    "MAX_CONNECTIONS",
    "SLOW_QUERY",
    "FLEET_BUDGET",
    "FLEET_REDIS_URL",
    "FLEET_RESERVE",
    "FLEET_TTL",
    "FLEET_KEY",
    "FLEET_FLOOR",
    "PASSWORD_FILE",
    "TARGET_SESSION_ATTRS",
    "TCP_KEEPALIVE",
    "TCP_USER_TIMEOUT",
    "SHARED_CONNECTIONS",
    "SHARED_SPILL",
];

poolkit_core::from_env!(Config, DEFAULT_PREFIX, ENV_SUFFIXES, |prefix, lookup| {
    Config::from_lookup(prefix, lookup)
});

/// What a connection is for, choosing among `P_URL_TRANSACTION`, `P_URL_SESSION` and
/// `P_URL_DIRECT` (Supabase's three URLs), each falling back to `P_URL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Use {
    /// Short-lived or serverless work: `P_URL_TRANSACTION` (transaction-mode pooler).
    Transaction,
    /// Long-lived servers: `P_URL_SESSION` (session-mode pooler).
    Session,
    /// Admin tasks, migrations, LISTEN: `P_URL_DIRECT` (PostgreSQL itself).
    Direct,
}

impl Use {
    fn suffix(self) -> &'static str {
        match self {
            Self::Transaction => "URL_TRANSACTION",
            Self::Session => "URL_SESSION",
            Self::Direct => "URL_DIRECT",
        }
    }

    fn pooler(self) -> Pooler {
        match self {
            Self::Transaction => Pooler::Transaction,
            Self::Session => Pooler::Session,
            Self::Direct => Pooler::None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("pool", &self.pool)
            .field("url", &redact_url(self.url.expose()))
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .field("shared", &self.shared)
            .field("shared_spill", &self.shared_spill)
            .field("connect_timeout", &self.connect_timeout)
            .field("pooler", &self.pooler)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("max_connections", &self.max_connections)
            .field("pooler_pool_size", &self.pooler_pool_size)
            .field("notes", &self.notes)
            .field("hooks", &self.hooks)
            .field(
                "read_urls",
                &self
                    .read_urls
                    .iter()
                    .map(|u| redact_url(u.expose()))
                    .collect::<Vec<_>>(),
            )
            .field("fleet", &self.fleet)
            .field("password", &self.password)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("resolver", &self.resolver.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// The common knobs with PostgreSQL defaults: pool size 10, one connection kept warm.
#[must_use]
pub fn default_pool_config(name: &str) -> PoolConfig {
    let mut pool = PoolConfig::new(name, Backend::Postgres);
    pool.min_idle = 1;
    pool
}

impl Config {
    /// A configuration for `url` with the defaults, named `database`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            pool: default_pool_config("database"),
            url: Secret::new(url.into()),
            application_name: "poolkit".to_owned(),
            statement_timeout: None,
            shared: crate::SharedConnections::Auto,
            shared_spill: crate::shared::DEFAULT_SPILL,
            connect_timeout: None,
            pooler: Pooler::None,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            read_urls: Vec::new(),
            fleet: None,
            max_connections: None,
            pooler_pool_size: None,
            password: PasswordSource::Url,
            target_session_attrs: SessionAttrs::Any,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            tcp_user_timeout: Some(DEFAULT_TCP_USER_TIMEOUT),
            resolver: None,
            replica: false,
            notes: Vec::new(),
            hooks: crate::hooks::Hooks::default(),
        }
        .detect_pooler()
        .read_session_attrs()
    }

    /// Sets `target_session_attrs` from the URL's parameter (left as it is when absent or
    /// not one of libpq's values: `validate` names the URL then).
    pub(crate) fn read_session_attrs(mut self) -> Self {
        if let Some(attrs) = url_param(self.url.expose(), "target_session_attrs")
            .and_then(|v| SessionAttrs::parse(&v))
        {
            self.target_session_attrs = attrs;
        }
        self
    }

    /// Sets `pooler` from the URL: `transaction` for a pooler's port (6543, 6432) or
    /// `pgbouncer=true`.
    pub(crate) fn detect_pooler(mut self) -> Self {
        let url = self.url.expose();
        let flagged = url.contains("pgbouncer=true");
        let on_6543 = strip_params(url)
            .parse::<tokio_postgres::Config>()
            .is_ok_and(|c| c.get_ports().iter().any(|p| POOLER_PORTS.contains(p)));
        if flagged || on_6543 {
            self.pooler = Pooler::Transaction;
        }
        self
    }

    /// Reads the configuration for one [`Use`]: `P_URL_TRANSACTION`, `P_URL_SESSION` or
    /// `P_URL_DIRECT` when set (with the matching pooler mode), else `P_URL`.
    ///
    /// # Errors
    /// As [`Config::from_lookup`].
    pub fn from_lookup_for(
        prefix: &str,
        purpose: Use,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let specific = format!("{prefix}_{}", purpose.suffix());
        match lookup(&specific).filter(|v| !v.trim().is_empty()) {
            Some(url) => {
                let base = format!("{prefix}_URL");
                let redirect = |k: &str| {
                    if k == base {
                        Some(url.clone())
                    } else {
                        lookup(k)
                    }
                };
                let mut c = Self::from_lookup(prefix, &redirect)?;
                if lookup(&format!("{prefix}_POOLER")).is_none() {
                    c.pooler = purpose.pooler();
                }
                Ok(c)
            }
            None => Self::from_lookup(prefix, lookup),
        }
    }

    /// As [`Config::from_lookup_for`], from the process environment.
    ///
    /// # Errors
    /// As [`Config::from_lookup`].
    pub fn from_env_for(prefix: &str, purpose: Use) -> Result<Self, ConfigError> {
        let _ = <Self as FromEnv>::unknown_vars(prefix);
        Self::from_lookup_for(prefix, purpose, &process_lookup)
    }

    /// Reads, under `prefix` (usually `DATABASE`): `P_URL` (required), `P_APPLICATION_NAME`,
    /// `P_STATEMENT_TIMEOUT`, `P_CONNECT_TIMEOUT` and the common knobs of
    /// [`PoolConfig::from_lookup`] (with `MAX_POOL_SIZE` / `POOL_WARMUP_SIZE` for `DATABASE`).
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when `P_URL` is unset; [`ConfigError::Invalid`] naming the
    /// variable for any malformed value (the URL is shown with its password redacted).
    pub fn from_lookup(
        prefix: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = Env::new(prefix, lookup);
        let url_var = env.name("URL");
        let url = env
            .raw_nonempty(&url_var)
            .ok_or_else(|| ConfigError::Missing {
                var: url_var.clone(),
                hint: format!("set it to {URL_EXPECTED}"),
            })?;
        let mut config = Self::new(url);
        config.pool = PoolConfig::from_lookup(
            prefix,
            default_pool_config(&prefix.to_ascii_lowercase()),
            lookup,
        )?;
        if let Some((_, name)) = env.var("APPLICATION_NAME") {
            config.application_name = name;
        }
        if let Some((var, value)) = env.var("STATEMENT_TIMEOUT") {
            let d = parse_duration(&var, &value)?;
            config.statement_timeout = (!d.is_zero()).then_some(d);
        }
        if let Some((_, d)) = env.duration("CONNECT_TIMEOUT")? {
            config.connect_timeout = Some(d);
        }
        if let Some((var, value)) = env.var("SHARED_CONNECTIONS") {
            config.shared =
                crate::SharedConnections::parse(&value).ok_or(ConfigError::Invalid {
                    var,
                    value,
                    expected: "a number of connections, auto, or 0 (off)".into(),
                })?;
        }
        if let Some((_, d)) = env.duration("SHARED_SPILL")? {
            config.shared_spill = d;
        }
        crate::prisma::apply_url_params(&mut config, &env, &url_var)?;
        crate::prisma::read_limits(&mut config, &env)?;
        config.pool.validate()?;
        for note in &config.notes {
            tracing::info!(pool = %config.pool.name, "{note}");
        }
        let url_var_name = env.name("URL");
        if let Some(mode) = url_param(config.url.expose(), "sslmode") {
            config.ssl_mode = SslMode::parse(&mode).ok_or_else(|| ConfigError::Invalid {
                var: url_var_name.clone(),
                value: redact_url(config.url.expose()),
                expected: "sslmode=disable, prefer, require, verify-ca or verify-full".into(),
            })?;
        }
        if let Some(path) = url_param(config.url.expose(), "sslrootcert") {
            config.ssl_root_cert = Some(path.into());
        }
        if let Some((var, value)) = env.var("SSLMODE") {
            config.ssl_mode = SslMode::parse(&value).ok_or(ConfigError::Invalid {
                var,
                value,
                expected: "disable, prefer, require, verify-ca or verify-full".into(),
            })?;
        }
        if let Some((_, path)) = env.var("SSLROOTCERT") {
            config.ssl_root_cert = Some(path.into());
        }
        if let Some(urls) = env.raw_nonempty(&env.name("READ_URL")) {
            config.read_urls = urls
                .split(',')
                .map(|u| Secret::new(u.trim()))
                .filter(|u| !u.is_empty())
                .collect();
            for u in &config.read_urls {
                let mut probe = config.clone();
                probe.url = u.clone();
                probe.read_urls = Vec::new();
                probe.pg_config_for(&env.name("READ_URL"))?;
            }
        }
        if let Some((var, value)) = env.var("POOLER") {
            config.pooler = Pooler::parse(&value).ok_or(ConfigError::Invalid {
                var,
                value,
                expected: "transaction, session or none".into(),
            })?;
        }
        if let Some((var, path)) = env
            .var("PASSWORD_FILE")
            .filter(|(_, v)| !v.trim().is_empty())
        {
            config.password = PasswordSource::File {
                path: path.trim().into(),
                var,
            };
        }
        if let Some((var, value)) = env.var("TARGET_SESSION_ATTRS") {
            config.target_session_attrs = SessionAttrs::parse(&value).ok_or(ConfigError::Invalid {
                var,
                value,
                expected: "any, read-write, read-only, primary, standby or prefer-standby (libpq's target_session_attrs)".into(),
            })?;
        }
        if let Some((_, d)) = env.duration("TCP_KEEPALIVE")? {
            config.tcp_keepalive = (!d.is_zero()).then_some(d);
        }
        if let Some((_, d)) = env.duration("TCP_USER_TIMEOUT")? {
            config.tcp_user_timeout = (!d.is_zero()).then_some(d);
        }
        config.fleet = crate::fleet_config::from_env(&env, &config.pool.name)?;
        config.pg_config_for(&url_var)?;
        Ok(config)
    }

    /// The tokio-postgres settings this configuration connects with.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the URL variable when the URL cannot be parsed.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        self.pg_config_for(&format!("{}_URL", self.pool.prefix))
    }

    fn pg_config_for(&self, var: &str) -> Result<tokio_postgres::Config, ConfigError> {
        let url = self.url.expose();
        let invalid = |why: &str| ConfigError::Invalid {
            var: var.to_owned(),
            value: redact_url(url),
            expected: format!("{URL_EXPECTED}{why}"),
        };
        let mut pg = tokio_postgres::Config::from_str(&strip_params(url))
            .map_err(|e| invalid(&format!(" ({})", crate::error::chain(&e))))?;
        if let Some(v) = url_param(url, "target_session_attrs")
            && SessionAttrs::parse(&v).is_none()
        {
            return Err(invalid(&format!(
                " (target_session_attrs={v}: expected any, read-write, read-only, primary, standby or prefer-standby)"
            )));
        }
        if url_param(url, "keepalives_idle").is_none() {
            match self.tcp_keepalive {
                Some(idle) => {
                    pg.keepalives(true)
                        .keepalives_idle(idle)
                        .keepalives_interval(TCP_KEEPALIVE_INTERVAL)
                        .keepalives_retries(TCP_KEEPALIVE_RETRIES);
                }
                None => {
                    pg.keepalives(false);
                }
            }
        }
        if url_param(url, "tcp_user_timeout").is_none()
            && let Some(t) = self.tcp_user_timeout
        {
            pg.tcp_user_timeout(t);
        }
        if pg.get_hosts().is_empty() {
            pg.host("127.0.0.1");
        }
        pg.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if pg.get_application_name().is_none() {
            pg.application_name(&self.application_name);
        }
        if let Some(t) = self.statement_timeout {
            let opt = format!("-c statement_timeout={}", t.as_millis());
            let opts = match pg.get_options() {
                Some(existing) => format!("{existing} {opt}"),
                None => opt,
            };
            pg.options(&opts);
        }
        // The URL's connect_timeout is read into `connect_timeout` (where the variable wins).
        match self.connect_timeout {
            Some(t) => {
                pg.connect_timeout(t);
            }
            None if pg.get_connect_timeout().is_none() => {
                pg.connect_timeout(self.pool.acquire_timeout.min(Duration::from_secs(10)));
            }
            None => {}
        }
        Ok(pg)
    }

    /// `host:port` of the first host, for messages (never the password).
    #[must_use]
    pub fn target(&self) -> String {
        match self.pg_config() {
            Ok(pg) => {
                let host = match pg.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    #[cfg(unix)]
                    Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".to_owned(),
                };
                let port = pg.get_ports().first().copied().unwrap_or(5432);
                format!("{host}:{port}")
            }
            Err(_) => redact_url(self.url.expose()),
        }
    }

    /// Checks the URL and the pool knobs.
    ///
    /// # Errors
    /// The first problem found, naming its variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pool.validate()?;
        if let crate::SharedConnections::Fixed(n) = self.shared {
            let ceiling = self.pool.ceiling();
            if n >= ceiling {
                return Err(ConfigError::Invalid {
                    var: format!("{}_SHARED_CONNECTIONS", self.pool.prefix),
                    value: n.to_string(),
                    expected: format!(
                        "fewer than the pool's ceiling ({ceiling}, {}): shared connections count against it and get()/transaction() need at least one",
                        self.ceiling_var()
                    ),
                });
            }
        }
        self.pg_config().map(|_| ())
    }

    /// The variable that raises the pool's ceiling.
    #[must_use]
    pub fn ceiling_var(&self) -> String {
        self.pool.ceiling_var()
    }

    /// The variable that sets the acquire timeout.
    #[must_use]
    pub fn timeout_var(&self) -> String {
        self.pool.var(Knob::AcquireTimeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::from_lookup("DATABASE", &lookup)
    }

    #[test]
    fn seed_names() {
        let c = from(&[
            ("DATABASE_URL", "postgres://app:s3cret@db.internal:6543/app"),
            ("MAX_POOL_SIZE", "20"),
            ("POOL_WARMUP_SIZE", "5"),
            ("DATABASE_STATEMENT_TIMEOUT", "5s"),
        ])
        .unwrap();
        assert_eq!((c.pool.pool_size, c.pool.min_idle), (20, 5));
        assert_eq!(c.statement_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.target(), "db.internal:6543");
        assert_eq!(
            c.pg_config().unwrap().get_options(),
            Some("-c statement_timeout=5000")
        );
        assert_eq!(
            c.pg_config().unwrap().get_application_name(),
            Some("poolkit")
        );
    }

    #[test]
    fn missing_and_bad_urls_name_the_variable_without_the_password() {
        let e = from(&[]).unwrap_err();
        assert!(
            matches!(e, ConfigError::Missing { .. }) && e.to_string().contains("DATABASE_URL"),
            "{e}"
        );
        for bad in [
            "postgres://app:s3cret@db:notaport/x",
            "postgres://app:s3cret@db/x?sslmode=bogus",
            "host=db password=s3cret port=abc",
        ] {
            let e = from(&[("DATABASE_URL", bad)]).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("DATABASE_URL"), "{msg}");
            assert!(!msg.contains("s3cret"), "password leaked: {msg}");
        }
        let e = from(&[
            ("DATABASE_URL", "postgres://x@h/d"),
            ("DATABASE_STATEMENT_TIMEOUT", "soon"),
        ])
        .unwrap_err();
        assert_eq!(e.var(), "DATABASE_STATEMENT_TIMEOUT");
    }

    #[test]
    fn pooler_mode_is_detected_and_chosen_per_use() {
        let c = from(&[(
            "DATABASE_URL",
            "postgres://u:pw@db.supabase.co:6543/postgres",
        )])
        .unwrap();
        assert_eq!(c.pooler, Pooler::Transaction);
        let c = from(&[(
            "DATABASE_URL",
            "postgres://u:pw@h:6432/app?pgbouncer=true&connection_limit=1",
        )])
        .unwrap();
        assert_eq!(c.pooler, Pooler::Transaction);
        assert!(c.pg_config().is_ok(), "foreign parameters are stripped");
        let c = from(&[("DATABASE_URL", "postgres://u@h:5432/app")]).unwrap();
        assert_eq!(c.pooler, Pooler::None);
        let c = from(&[
            ("DATABASE_URL", "postgres://u@h:5432/app"),
            ("DATABASE_POOLER", "session"),
        ])
        .unwrap();
        assert_eq!(c.pooler, Pooler::Session);
        let e = from(&[
            ("DATABASE_URL", "postgres://u@h/app"),
            ("DATABASE_POOLER", "statement"),
        ])
        .unwrap_err();
        assert_eq!(e.var(), "DATABASE_POOLER");
        let vars = [
            ("DATABASE_URL", "postgres://u@direct:5432/app"),
            ("DATABASE_URL_TRANSACTION", "postgres://u@pooler:6543/app"),
            ("DATABASE_URL_SESSION", "postgres://u@pooler:5432/app"),
        ];
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        let t = Config::from_lookup_for("DATABASE", Use::Transaction, &lookup).unwrap();
        assert_eq!(
            (t.target().as_str(), t.pooler),
            ("pooler:6543", Pooler::Transaction)
        );
        let s = Config::from_lookup_for("DATABASE", Use::Session, &lookup).unwrap();
        assert_eq!(
            (s.target().as_str(), s.pooler),
            ("pooler:5432", Pooler::Session)
        );
        let d = Config::from_lookup_for("DATABASE", Use::Direct, &lookup).unwrap();
        assert_eq!(
            (d.target().as_str(), d.pooler),
            ("direct:5432", Pooler::None)
        );
    }

    #[test]
    fn sslmode_from_url_or_env() {
        let c = from(&[(
            "DATABASE_URL",
            "postgres://u:pw@db/app?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        )])
        .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(
            c.ssl_root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert!(
            c.pg_config().is_ok(),
            "tokio-postgres never sees verify-full"
        );
        let c = from(&[
            ("DATABASE_URL", "postgres://u@db/app?sslmode=require"),
            ("DATABASE_SSLMODE", "disable"),
        ])
        .unwrap();
        assert_eq!(c.ssl_mode, SslMode::Disable);
        let e = from(&[(
            "DATABASE_URL",
            "postgres://u:pw_marker@db/app?sslmode=bogus",
        )])
        .unwrap_err();
        assert_eq!(e.var(), "DATABASE_URL");
        assert!(
            !e.to_string().contains("pw_marker") && e.to_string().contains("verify-full"),
            "{e}"
        );
        let e = from(&[
            ("DATABASE_URL", "postgres://u@db/app"),
            ("DATABASE_SSLMODE", "strict"),
        ])
        .unwrap_err();
        assert_eq!(e.var(), "DATABASE_SSLMODE");
        assert_eq!(
            from(&[("DATABASE_URL", "postgres://u@db/app")])
                .unwrap()
                .ssl_mode,
            SslMode::Prefer
        );
    }

    #[test]
    fn failover_settings_from_url_and_env() {
        let c = from(&[(
            "DATABASE_URL",
            "postgres://u:pw@a:5432,b:5433/app?target_session_attrs=prefer-standby",
        )])
        .unwrap();
        assert_eq!(c.target_session_attrs, SessionAttrs::PreferStandby);
        let pg = c.pg_config().unwrap();
        assert_eq!(pg.get_hosts().len(), 2);
        assert_eq!(pg.get_keepalives_idle(), DEFAULT_TCP_KEEPALIVE);
        assert_eq!(pg.get_tcp_user_timeout(), Some(&DEFAULT_TCP_USER_TIMEOUT));
        let c = from(&[
            (
                "DATABASE_URL",
                "postgres://u@a/app?target_session_attrs=any&keepalives_idle=5",
            ),
            ("DATABASE_TARGET_SESSION_ATTRS", "read-write"),
            ("DATABASE_PASSWORD_FILE", "/run/secrets/db"),
            ("DATABASE_TCP_USER_TIMEOUT", "0"),
        ])
        .unwrap();
        assert_eq!(
            c.target_session_attrs,
            SessionAttrs::ReadWrite,
            "the variable wins"
        );
        assert_eq!(
            c.password.describe(),
            "DATABASE_PASSWORD_FILE=/run/secrets/db"
        );
        let pg = c.pg_config().unwrap();
        assert_eq!(
            pg.get_keepalives_idle(),
            Duration::from_secs(5),
            "the URL's wins"
        );
        assert_eq!(pg.get_tcp_user_timeout(), None);
        let e = from(&[(
            "DATABASE_URL",
            "postgres://u:pw_marker@a/app?target_session_attrs=master",
        )])
        .unwrap_err();
        assert_eq!(e.var(), "DATABASE_URL");
        assert!(
            e.to_string().contains("prefer-standby") && !e.to_string().contains("pw_marker"),
            "{e}"
        );
        let e = from(&[
            ("DATABASE_URL", "postgres://u@a/app"),
            ("DATABASE_TARGET_SESSION_ATTRS", "writer"),
        ])
        .unwrap_err();
        assert_eq!(e.var(), "DATABASE_TARGET_SESSION_ATTRS");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Config::new("postgres://app:s3cret@db/x?password=s3cret");
        let dbg = format!("{c:?} {:?}", c.pg_config().unwrap());
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }
}
