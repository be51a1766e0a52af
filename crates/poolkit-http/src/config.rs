//! `Config`: the HTTP pool's knobs, in code or from `PREFIX_*` environment variables.

use std::fmt;
use std::time::Duration;

use poolkit_core::env::{Env, parse_duration, parse_u32};
use poolkit_core::{Backend, ConfigError, Knob, MAX_POOL_SIZE_LIMIT, PoolConfig};

/// Which HTTP version the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/2 when the server offers it by ALPN over TLS, HTTP/1.1 otherwise (and always
    /// HTTP/1.1 over cleartext). Env value: `auto`.
    #[default]
    Auto,
    /// HTTP/1.1 only. Env value: `1.1`.
    Http1,
    /// HTTP/2 only: by prior knowledge over cleartext (h2c), by ALPN over TLS.
    /// Env value: `2`.
    Http2,
}

impl HttpVersion {
    fn parse(var: &str, value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "1" | "1.1" | "http1" | "http/1.1" => Ok(Self::Http1),
            "2" | "h2" | "h2c" | "http2" => Ok(Self::Http2),
            _ => Err(ConfigError::Invalid {
                var: var.to_owned(),
                value: value.to_owned(),
                expected: "auto, 1.1 or 2".to_owned(),
            }),
        }
    }
}

/// The default idle keep-alive timeout: 4 s, below the 5 s of Node.js and Apache and well
/// below nginx (75 s) and cloud load balancers (60 s), so poolkit closes an idle
/// connection before the server does.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The default of [`Config::http2_max_streams`]: no cap of poolkit's own (the largest value
/// `P_HTTP2_MAX_STREAMS` accepts), so the server's `SETTINGS_MAX_CONCURRENT_STREAMS` is the
/// limit that applies (nginx 128, hyper 200, Go 250), as with a plain reqwest client;
/// requests beyond it wait in hyper's queue. A cap of 256 queued a burst of 1000 GETs in
/// poolkit's FIFO while the server would have taken them (docs/benchmarks.md, HTTP).
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 1 << 20;

/// The HTTP pool's configuration: the shared [`PoolConfig`] plus the HTTP knobs.
///
/// In the shared part, `pool_size` (`P_POOL_SIZE`, default 10) caps connections **per
/// host** over HTTP/1.1 (HTTP/2 uses one connection per host carrying up to
/// `http2_max_streams` requests at once); `max_size` (`P_POOL_MAXSIZE`) raises that ceiling for bursts, and connections above
/// `pool_size` close when returned with nobody waiting; `acquire_timeout`
/// (`P_POOL_TIMEOUT`, default 30 s) bounds the queue wait; `idle_timeout`
/// (`P_IDLE_TIMEOUT`, default [`DEFAULT_IDLE_TIMEOUT`]) closes idle keep-alives;
/// `max_lifetime` (`P_MAX_LIFETIME`, default 30 min) and `max_uses` (`P_MAX_USES`) rotate
/// connections.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The shared knobs (name, sizes, queue timeout, idle timeout, lifetime).
    pub pool: PoolConfig,
    /// Idle keep-alive connections kept per host. Default: the ceiling.
    /// Env: `P_MAX_KEEPALIVE`.
    pub max_keepalive: u32,
    /// Deadline for one whole request (queue, connect, send, response body); `None`
    /// waits forever. Default: 30 s. Env: `P_TIMEOUT` (`0` disables).
    pub timeout: Option<Duration>,
    /// Deadline for opening a connection (TCP, TLS and HTTP/2 handshake). Default: 10 s.
    /// Env: `P_CONNECT_TIMEOUT`.
    pub connect_timeout: Duration,
    /// Which HTTP version to speak. Default: [`HttpVersion::Auto`]. Env: `P_HTTP_VERSION`
    /// (`auto`, `1.1`, `2`).
    pub http_version: HttpVersion,
    /// Interval of HTTP/2 keep-alive pings on open connections; `None` sends none.
    /// Default: none. Env: `P_HTTP2_KEEPALIVE` (`0` disables).
    pub http2_keepalive: Option<Duration>,
    /// Requests in flight on one HTTP/2 connection (one connection per origin); more
    /// wait in the origin's FIFO queue (under `P_POOL_TIMEOUT`). The server's own
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` still applies below it. Default:
    /// [`DEFAULT_HTTP2_MAX_STREAMS`], no cap of poolkit's own.
    /// Env: `P_HTTP2_MAX_STREAMS`.
    pub http2_max_streams: u32,
    /// TCP keep-alive idle time; `None` disables it. Default: 60 s.
    /// Env: `P_TCP_KEEPALIVE` (`0` disables).
    pub tcp_keepalive: Option<Duration>,
    /// The base URL relative request paths are joined to (`https://x.supabase.co`),
    /// also the target of the health ping. Default: none. Env: `P_URL`.
    pub base_url: Option<String>,
    /// Extra trusted root certificates (DER), for private CAs and tests; the Mozilla
    /// roots (webpki-roots) are always trusted.
    pub root_certificates: Vec<Vec<u8>>,
    /// Largest response body `bytes()`, `text()` and `json()` read into memory; larger is
    /// [`crate::Error::BodyTooLarge`] (stream it with `bytes_stream()` instead). `None`:
    /// no cap. Default: 64 MiB. Env: `P_MAX_BODY` (bytes, or with `k`/`m`/`g`; `0`
    /// disables).
    pub max_body: Option<u64>,
    /// Redirects followed per request (3xx with `Location`, same scheme only, dropping
    /// `Authorization`, cookies and secret headers when the host changes); `0` follows
    /// none. Default: 10. Env: `P_MAX_REDIRECTS`.
    pub max_redirects: u32,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("pool", &self.pool)
            .field("max_keepalive", &self.max_keepalive)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("http_version", &self.http_version)
            .field("http2_keepalive", &self.http2_keepalive)
            .field("http2_max_streams", &self.http2_max_streams)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field(
                "base_url",
                &self.base_url.as_deref().map(poolkit_core::redact_url),
            )
            .field("root_certificates", &self.root_certificates.len())
            .field("max_body", &self.max_body)
            .field("max_redirects", &self.max_redirects)
            .finish()
    }
}

/// Every variable suffix an HTTP pool reads under its prefix (besides
/// [`PoolConfig::ENV_SUFFIXES`]), with the presets' keys (`SUPABASE_SERVICE_ROLE_KEY`,
/// `SUPABASE_KEY`, `PINECONE_API_KEY`, `PINECONE_HOST`); the rest are warned about.
pub const ENV_SUFFIXES: &[&str] = &[
    "URL",
    "MAX_KEEPALIVE",
    "TIMEOUT",
    "CONNECT_TIMEOUT",
    "HTTP_VERSION",
    "HTTP2_KEEPALIVE",
    "HTTP2_MAX_STREAMS",
    "TCP_KEEPALIVE",
    "SERVICE_ROLE_KEY",
    "KEY",
    "API_KEY",
    "HOST",
];

/// The prefix [`crate::Pool::from_env`] reads: `HTTP_URL`, `HTTP_POOL_SIZE`, …
pub const DEFAULT_PREFIX: &str = "HTTP";

poolkit_core::from_env!(Config, DEFAULT_PREFIX, ENV_SUFFIXES, |prefix, lookup| {
    Config::from_lookup(prefix, Config::new(&prefix.to_ascii_lowercase()), lookup)
});

impl Config {
    /// Settings that are valid one by one but contradict each other (logged as warnings
    /// when read from the environment): a keep-alive count above the ceiling, plus
    /// [`PoolConfig::contradictions`].
    #[must_use]
    pub fn contradictions(&self) -> Vec<String> {
        let mut out = self.pool.contradictions();
        if self.max_keepalive > self.pool.ceiling() {
            out.push(format!(
                "{}_MAX_KEEPALIVE={} is above the ceiling {}={}: at most {} connections are ever open, so only {} can be kept alive; raise {} or lower {}_MAX_KEEPALIVE",
                self.pool.prefix,
                self.max_keepalive,
                self.pool.ceiling_var(),
                self.pool.ceiling(),
                self.pool.ceiling(),
                self.pool.ceiling(),
                self.pool.ceiling_var(),
                self.pool.prefix
            ));
        }
        out
    }

    /// Defaults for a pool called `name` (lower case; also the env prefix in upper case).
    #[must_use]
    pub fn new(name: &str) -> Self {
        let mut pool = PoolConfig::new(name, Backend::Http);
        pool.idle_timeout = Some(DEFAULT_IDLE_TIMEOUT);
        Self {
            max_keepalive: pool.ceiling(),
            pool,
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            http_version: HttpVersion::Auto,
            http2_keepalive: None,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
            tcp_keepalive: Some(Duration::from_secs(60)),
            base_url: None,
            root_certificates: Vec::new(),
            max_body: Some(DEFAULT_MAX_BODY),
            max_redirects: 10,
        }
    }

    /// Reads the shared variables (see [`PoolConfig::from_lookup`]) and `P_MAX_KEEPALIVE`,
    /// `P_TIMEOUT`, `P_CONNECT_TIMEOUT`, `P_HTTP_VERSION`, `P_HTTP2_KEEPALIVE`,
    /// `P_TCP_KEEPALIVE` and `P_URL` through `lookup`, over `defaults`. When
    /// `P_MAX_KEEPALIVE` is unset it follows the ceiling read from the environment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable, its value and what was expected;
    /// [`ConfigError::Conflict`] for contradicting values.
    pub fn from_lookup(
        prefix: &str,
        defaults: Self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let keepalive_followed_ceiling = defaults.max_keepalive == defaults.pool.ceiling();
        let mut c = defaults;
        c.pool = PoolConfig::from_lookup(prefix, c.pool, lookup)?;
        let env = Env::new(prefix, lookup);
        match env.var("MAX_KEEPALIVE") {
            Some((var, value)) => {
                c.max_keepalive = parse_u32(&var, &value, 0, MAX_POOL_SIZE_LIMIT)?
            }
            None if keepalive_followed_ceiling => c.max_keepalive = c.pool.ceiling(),
            None => {}
        }
        let optional = |suffix: &str| -> Result<Option<Option<Duration>>, ConfigError> {
            Ok(env
                .var(suffix)
                .map(|(var, value)| parse_duration(&var, &value))
                .transpose()?
                .map(|d| (!d.is_zero()).then_some(d)))
        };
        if let Some(t) = optional("TIMEOUT")? {
            c.timeout = t;
        }
        if let Some((var, value)) = env.var("CONNECT_TIMEOUT") {
            let d = parse_duration(&var, &value)?;
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    var,
                    value,
                    expected: "a duration above zero (30, 5s, 500ms)".to_owned(),
                });
            }
            c.connect_timeout = d;
        }
        if let Some((var, value)) = env.var("HTTP_VERSION") {
            c.http_version = HttpVersion::parse(&var, &value)?;
        }
        if let Some(k) = optional("HTTP2_KEEPALIVE")? {
            c.http2_keepalive = k;
        }
        if let Some((var, value)) = env.var("HTTP2_MAX_STREAMS") {
            c.http2_max_streams = parse_u32(&var, &value, 1, 1 << 20)?;
        }
        if let Some(k) = optional("TCP_KEEPALIVE")? {
            c.tcp_keepalive = k;
        }
        if let Some(url) = env.raw_nonempty(&env.name("URL")) {
            c.base_url = Some(url);
        }
        if let Some((var, value)) = env.var("MAX_BODY") {
            let n = parse_size(&var, &value)?;
            c.max_body = (n != 0).then_some(n);
        }
        if let Some((var, value)) = env.var("MAX_REDIRECTS") {
            c.max_redirects = parse_u32(&var, &value, 0, 100)?;
        }
        c.validate_as(prefix)?;
        if c.max_keepalive > c.pool.ceiling() {
            tracing::warn!(pool = %c.pool.name, "{}", c.contradictions().last().map_or("", String::as_str));
        }
        Ok(c)
    }

    /// Checks the shared knobs and the base URL.
    ///
    /// # Errors
    /// As [`PoolConfig::validate`], and [`ConfigError::Invalid`] for a base URL that is not
    /// an absolute `http://` or `https://` URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_as(&self.pool.prefix)
    }

    fn validate_as(&self, prefix: &str) -> Result<(), ConfigError> {
        self.pool.validate()?;
        if let Some(url) = &self.base_url {
            crate::url::Origin::parse(url).map_err(|why| ConfigError::Invalid {
                var: format!("{prefix}_URL"),
                value: poolkit_core::redact_url(url),
                expected: format!("an absolute http:// or https:// URL ({why})"),
            })?;
        }
        Ok(())
    }

    /// The variable that sets the acquire (queue) timeout (`SUPABASE_POOL_TIMEOUT`), as in
    /// every adapter's `Config::timeout_var`.
    #[must_use]
    pub fn timeout_var(&self) -> String {
        self.pool.var(Knob::AcquireTimeout)
    }

    /// The variable that sets the whole-request deadline (`SUPABASE_TIMEOUT`).
    #[must_use]
    pub fn request_timeout_var(&self) -> String {
        format!("{}_TIMEOUT", self.pool.prefix)
    }

    /// The variable that sets the connect timeout (`SUPABASE_CONNECT_TIMEOUT`).
    #[must_use]
    pub fn connect_timeout_var(&self) -> String {
        format!("{}_CONNECT_TIMEOUT", self.pool.prefix)
    }

    /// The variable that sets the body cap (`SUPABASE_MAX_BODY`).
    #[must_use]
    pub fn max_body_var(&self) -> String {
        format!("{}_MAX_BODY", self.pool.prefix)
    }
}

/// The default [`Config::max_body`]: 64 MiB.
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;

/// Bytes: `1048576`, `512k`, `64m`, `1g` (powers of 1024).
fn parse_size(var: &str, value: &str) -> Result<u64, ConfigError> {
    let v = value.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (digits, shift) = match v.char_indices().last() {
        Some((i, 'k')) => (&v[..i], 10),
        Some((i, 'm')) => (&v[..i], 20),
        Some((i, 'g')) => (&v[..i], 30),
        _ => (v, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| ConfigError::Invalid {
            var: var.to_owned(),
            value: value.to_owned(),
            expected: "a size in bytes (1048576, 512k, 64m, 1g; 0 for no cap)".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(prefix: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::from_lookup(prefix, Config::new(prefix), &lookup)
    }

    #[test]
    fn keepalive_above_the_ceiling_is_a_contradiction() {
        let c = from(
            "SUPABASE",
            &[
                ("SUPABASE_POOL_SIZE", "20"),
                ("SUPABASE_MAX_KEEPALIVE", "50"),
            ],
        )
        .unwrap();
        let w = c.contradictions();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "SUPABASE_MAX_KEEPALIVE=50 is above the ceiling SUPABASE_POOL_SIZE=20"
            ),
            "{}",
            w[0]
        );
        let c = from("SUPABASE", &[("SUPABASE_POOL_SIZE", "20")]).unwrap();
        assert!(c.contradictions().is_empty());
    }

    #[test]
    fn seed_values_parse() {
        let c = from(
            "SUPABASE",
            &[
                ("SUPABASE_POOL_SIZE", "20"),
                ("SUPABASE_MAX_KEEPALIVE", "50"),
                ("SUPABASE_TIMEOUT", "30.0"),
                ("SUPABASE_HTTP_VERSION", "2"),
                ("SUPABASE_URL", "https://abc.supabase.co"),
            ],
        )
        .unwrap();
        assert_eq!((c.pool.pool_size, c.max_keepalive), (20, 50));
        assert_eq!(c.timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.http_version, HttpVersion::Http2);
        assert_eq!(c.pool.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
        let c = from(
            "PINECONE",
            &[
                ("PINECONE_POOL_SIZE", "10"),
                ("PINECONE_POOL_MAXSIZE", "20"),
            ],
        )
        .unwrap();
        assert_eq!(c.max_keepalive, 20, "keep-alive follows the ceiling");
        let c = from("X", &[("X_TIMEOUT", "0"), ("X_TCP_KEEPALIVE", "0")]).unwrap();
        assert_eq!((c.timeout, c.tcp_keepalive), (None, None));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("X_MAX_KEEPALIVE", "many"),
            ("X_TIMEOUT", "30 s"),
            ("X_CONNECT_TIMEOUT", "0"),
            ("X_CONNECT_TIMEOUT", "soon"),
            ("X_HTTP_VERSION", "3"),
            ("X_HTTP2_KEEPALIVE", "-1"),
            ("X_TCP_KEEPALIVE", "1e3"),
            ("X_URL", "ftp://host"),
            ("X_URL", "not a url"),
            ("X_POOL_SIZE", "0"),
        ] {
            let e = from("X", &[(var, value)]).expect_err(var);
            assert_eq!(e.var(), var, "{e}");
            assert!(e.to_string().contains(value) || value == "0", "{e}");
        }
    }
}
