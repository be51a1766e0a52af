//! Configuration of a Redis pool: where to connect, and the common knobs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use poolkit_core::env::{Env, parse_u32};
use poolkit_core::{
    Backend, ConfigError, Knob, PasswordSource, PoolConfig, Resolve, Secret, redact_url,
};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// The default env prefix: `REDIS`.
pub const DEFAULT_PREFIX: &str = "REDIS";

pub use poolkit_core::tcp::{
    DEFAULT_TCP_KEEPALIVE, DEFAULT_TCP_USER_TIMEOUT, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES,
};

/// Redis Sentinel: the sentinels to ask and the name of the master they watch.
#[derive(Clone)]
#[non_exhaustive]
pub struct SentinelConfig {
    /// The sentinels, as `redis://host:26379` URLs (a password in one is the sentinel's).
    pub nodes: Vec<Secret>,
    /// The master's name in the sentinels' configuration (`mymaster`).
    pub master: String,
}

impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|n| redact_url(n.expose()))
                    .collect::<Vec<_>>(),
            )
            .field("master", &self.master)
            .finish()
    }
}

/// A sentinel node as a URL: `host:port` becomes `redis://host:port`.
fn sentinel_node(n: &str) -> Secret {
    let n = n.trim();
    if n.contains("://") {
        Secret::new(n)
    } else {
        Secret::new(format!("redis://{n}"))
    }
}

/// `redis+sentinel://[user:password@]host:26379[,host:26379…]/master[/db]`: the sentinels,
/// the master's name, and the URL of the master's settings (credentials, db).
fn parse_sentinel_url(var: &str, url: &str) -> Result<(SentinelConfig, String), ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid {
        var: var.to_owned(),
        value: redact_url(url),
        expected: format!(
            "redis+sentinel://[user:password@]host:26379[,host:26379…]/master-name[/db]{why}"
        ),
    };
    let rest = url
        .strip_prefix("redis+sentinel://")
        .ok_or_else(|| invalid(""))?;
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or_else(|| invalid(" (no master name)"))?;
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let master = segments
        .next()
        .ok_or_else(|| invalid(" (no master name)"))?;
    let db = segments.next().unwrap_or("0");
    if hosts.is_empty() || segments.next().is_some() || db.parse::<u32>().is_err() {
        return Err(invalid(""));
    }
    let nodes: Vec<Secret> = hosts.split(',').map(sentinel_node).collect();
    let first = hosts.split(',').next().unwrap_or_default();
    let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Ok((
        SentinelConfig {
            nodes,
            master: master.to_owned(),
        },
        format!("redis://{auth}{first}/{db}"),
    ))
}

const URL_EXPECTED: &str =
    "a Redis URL such as redis://:password@host:6379/0 or rediss://host:6380";

/// Every variable suffix a Redis pool reads under its prefix (besides
/// [`PoolConfig::ENV_SUFFIXES`]); the rest are warned about.
pub const ENV_SUFFIXES: &[&str] = &[
    "URL",
    "HOST",
    "PORT",
    "DB",
    "USERNAME",
    "PASSWORD",
    "CLUSTER_NODES",
    "MAX_IN_FLIGHT",
    "TIMEOUT",
    "CONNECT_TIMEOUT",
    "SLOW_QUERY",
    "TLS_ROOT_CERT",
    "PASSWORD_FILE",
    "SENTINELS",
    "SENTINEL_MASTER",
    "TCP_KEEPALIVE",
    "TCP_USER_TIMEOUT",
];

poolkit_core::from_env!(Config, DEFAULT_PREFIX, ENV_SUFFIXES, |prefix, lookup| {
    Config::from_lookup(prefix, lookup)
});

/// Configuration of a Redis pool.
///
/// `Debug` never shows the password.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The common knobs. In shared mode `pool_size` is the number of multiplexed
    /// connections; in exclusive mode it is the checkout ceiling.
    pub pool: PoolConfig,
    /// Where to connect: from `P_URL`, or built from `P_HOST`, `P_PORT`, `P_USERNAME`,
    /// `P_PASSWORD` and `P_DB`.
    pub url: Secret,
    /// Cluster seed nodes (`P_CLUSTER_NODES`, or a comma list in `P_URL`); empty: one server.
    pub cluster_nodes: Vec<Secret>,
    /// Shared mode: most commands in flight over all connections before callers queue.
    /// Default: 256 per connection. Env: `P_MAX_IN_FLIGHT`.
    pub max_in_flight: u32,
    /// Shared mode: how long a command may take. Default: 30 s. Env: `P_TIMEOUT`.
    pub command_timeout: Duration,
    /// Timeout of one connect. Default: min(acquire timeout, 5 s). Env: `P_CONNECT_TIMEOUT`.
    pub connect_timeout: Option<Duration>,
    /// `rediss://`: a PEM file of the root certificate(s) to verify the server with,
    /// instead of the built-in web roots (a private CA). Needs the `tls` feature.
    /// Env: `P_TLS_ROOT_CERT`.
    pub tls_root_cert: Option<std::path::PathBuf>,
    /// Where the password comes from: the URL's (default), or a file read at every new
    /// connection (`P_PASSWORD_FILE`), or a provider with an expiry
    /// (`PasswordSource::provider`). Open connections keep serving; new ones use the new
    /// secret.
    pub password: PasswordSource,
    /// Redis Sentinel: every new connection goes to the master the sentinels name now.
    /// From a `redis+sentinel://host:26379,host:26379/mymaster/0` URL, or `P_SENTINELS`
    /// (a comma list of `host:port`) with `P_SENTINEL_MASTER`. Default: none.
    pub sentinel: Option<SentinelConfig>,
    /// TCP keep-alive idle time (then every 10 s, 3 probes). Default: 60 s (`None` / `0`
    /// disables). Env: `P_TCP_KEEPALIVE`.
    pub tcp_keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`: data unacknowledged this long closes the socket. Default: 30 s
    /// (`None` / `0` disables). Env: `P_TCP_USER_TIMEOUT`.
    pub tcp_user_timeout: Option<Duration>,
    /// Resolves host names for every new connection instead of the system resolver.
    /// Default: none.
    pub resolver: Option<Arc<dyn Resolve>>,
    /// Hooks around a connection's life (see [`crate::Hooks`]). Default: none.
    pub hooks: crate::hooks::Hooks,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self
            .cluster_nodes
            .iter()
            .map(|n| redact_url(n.expose()))
            .collect();
        f.debug_struct("Config")
            .field("pool", &self.pool)
            .field("url", &redact_url(self.url.expose()))
            .field("cluster_nodes", &nodes)
            .field("max_in_flight", &self.max_in_flight)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_root_cert", &self.tls_root_cert)
            .field("password", &self.password)
            .field("sentinel", &self.sentinel)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("resolver", &self.resolver.as_ref().map(|_| "custom"))
            .field("hooks", &self.hooks)
            .finish()
    }
}

/// The common knobs with Redis defaults: 2 shared connections.
#[must_use]
pub fn default_pool_config(name: &str) -> PoolConfig {
    let mut pool = PoolConfig::new(name, Backend::Redis);
    pool.pool_size = 2;
    pool
}

impl Config {
    /// A configuration for `url` with the defaults, named `redis`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        let pool = default_pool_config("redis");
        Self {
            max_in_flight: pool.pool_size * 256,
            pool,
            url: Secret::new(url.into()),
            cluster_nodes: Vec::new(),
            command_timeout: Duration::from_secs(30),
            connect_timeout: None,
            tls_root_cert: None,
            password: PasswordSource::Url,
            sentinel: None,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            tcp_user_timeout: Some(DEFAULT_TCP_USER_TIMEOUT),
            resolver: None,
            hooks: crate::hooks::Hooks::default(),
        }
    }

    /// A configuration for Redis Sentinel from a `redis+sentinel://` URL.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `REDIS_URL` for a malformed URL.
    pub fn sentinel_url(url: &str) -> Result<Self, ConfigError> {
        let (sentinel, node_url) = parse_sentinel_url("REDIS_URL", url)?;
        let mut c = Self::new(node_url);
        c.sentinel = Some(sentinel);
        Ok(c)
    }

    /// Reads, under `prefix` (usually `REDIS`): `P_URL` (or `P_HOST` / `P_PORT` /
    /// `P_USERNAME` / `P_PASSWORD` / `P_DB`; default `127.0.0.1:6379`), `P_CLUSTER_NODES`,
    /// `P_MAX_IN_FLIGHT`, `P_TIMEOUT`, `P_CONNECT_TIMEOUT` and the common knobs.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable (URLs redacted) or a conflict.
    pub fn from_lookup(
        prefix: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = Env::new(prefix, lookup);
        let url_var = env.name("URL");
        let mut config = match env.raw_nonempty(&url_var) {
            Some(url) if url.starts_with("redis+sentinel://") => {
                let (sentinel, node_url) = parse_sentinel_url(&url_var, &url)?;
                let mut c = Self::new(node_url);
                c.sentinel = Some(sentinel);
                c
            }
            Some(url) if url.contains(',') => {
                let mut c = Self::new(String::new());
                c.cluster_nodes = url.split(',').map(|u| Secret::new(u.trim())).collect();
                c
            }
            Some(url) => Self::new(url),
            None => Self::new(Self::url_from_parts(&env)?),
        };
        config.pool = PoolConfig::from_lookup(
            prefix,
            default_pool_config(&prefix.to_ascii_lowercase()),
            lookup,
        )?;
        if let Some(nodes) = env.raw_nonempty(&env.name("CLUSTER_NODES")) {
            config.cluster_nodes = nodes.split(',').map(|n| Secret::new(n.trim())).collect();
        }
        config.max_in_flight = match env.u32_in("MAX_IN_FLIGHT", 1, 1_000_000)? {
            Some((_, n)) => n,
            None => config.pool.pool_size.saturating_mul(256),
        };
        if let Some((_, d)) = env.duration("TIMEOUT")? {
            config.command_timeout = d;
        }
        if let Some((_, d)) = env.duration("CONNECT_TIMEOUT")? {
            config.connect_timeout = Some(d);
        }
        if let Some(path) = env.raw_nonempty(&env.name("TLS_ROOT_CERT")) {
            config.tls_root_cert = Some(path.into());
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
        let sentinels = env.raw_nonempty(&env.name("SENTINELS"));
        let master = env.raw_nonempty(&env.name("SENTINEL_MASTER"));
        match (sentinels, master) {
            (Some(nodes), Some(master)) => {
                config.sentinel = Some(SentinelConfig {
                    nodes: nodes.split(',').map(sentinel_node).collect(),
                    master: master.trim().to_owned(),
                });
            }
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: env.name("SENTINEL_MASTER"),
                    hint: format!(
                        "{} lists sentinels: set {} to the name of the master they watch (such as mymaster)",
                        env.name("SENTINELS"),
                        env.name("SENTINEL_MASTER")
                    ),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: env.name("SENTINELS"),
                    hint: format!(
                        "{} names a master: set {} to the sentinels, such as 10.0.0.1:26379,10.0.0.2:26379",
                        env.name("SENTINEL_MASTER"),
                        env.name("SENTINELS")
                    ),
                });
            }
            (None, None) => {}
        }
        if let Some((_, d)) = env.duration("TCP_KEEPALIVE")? {
            config.tcp_keepalive = (!d.is_zero()).then_some(d);
        }
        if let Some((_, d)) = env.duration("TCP_USER_TIMEOUT")? {
            config.tcp_user_timeout = (!d.is_zero()).then_some(d);
        }
        let nodes_from_url = env.raw_nonempty(&env.name("CLUSTER_NODES")).is_none()
            && env.raw_nonempty(&url_var).is_some_and(|u| u.contains(','));
        // Nodes that came from a comma list in P_URL are reported as P_URL, the variable
        // the user set, with the whole value redacted (a piece cut at a comma may have lost
        // the '@' that marks its password).
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { expected, .. } if nodes_from_url => ConfigError::Invalid {
                var: url_var.clone(),
                value: redact_url(&env.raw(&url_var).unwrap_or_default()),
                expected,
            },
            e => e,
        })?;
        Ok(config)
    }

    fn url_from_parts(env: &Env<'_>) -> Result<String, ConfigError> {
        let host = env
            .raw_nonempty(&env.name("HOST"))
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        if host.contains(['/', '@', ' ', '?', '#']) {
            return Err(ConfigError::Invalid {
                var: env.name("HOST"),
                value: host,
                expected: "a host name or IP address".into(),
            });
        }
        let port = match env.var("PORT") {
            Some((var, v)) => parse_u32(&var, &v, 1, 65_535)?,
            None => 6379,
        };
        let db = match env.var("DB") {
            Some((var, v)) => parse_u32(&var, &v, 0, 10_000)?,
            None => 0,
        };
        let user = env.raw_nonempty(&env.name("USERNAME")).unwrap_or_default();
        let auth = match env.raw_nonempty(&env.name("PASSWORD")) {
            Some(pw) => format!("{}:{}@", percent_encode(&user), percent_encode(&pw)),
            None if !user.is_empty() => format!("{}@", percent_encode(&user)),
            None => String::new(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(format!("redis://{auth}{host}:{port}/{db}"))
    }

    /// A redis-rs client for the single server: with [`Config::tls_root_cert`] as the
    /// trusted roots when set.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a bad URL or an unreadable root certificate file, or
    /// a root file without the `tls` feature.
    pub fn client(&self) -> Result<redis::Client, ConfigError> {
        self.client_with_password(None)
    }

    /// [`Config::client`] with `password` instead of the URL's (when `Some`).
    ///
    /// # Errors
    /// As [`Config::client`].
    pub fn client_with_password(
        &self,
        password: Option<&str>,
    ) -> Result<redis::Client, ConfigError> {
        let mut info = self.connection_info()?;
        if let Some(pw) = password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let var = format!("{}_TLS_ROOT_CERT", self.pool.prefix);
        let Some(path) = &self.tls_root_cert else {
            return redis::Client::open(info).map_err(|e| ConfigError::Invalid {
                var: format!("{}_URL", self.pool.prefix),
                value: redact_url(self.url.expose()),
                expected: format!("a redis:// or rediss:// URL ({e})"),
            });
        };
        let pem = std::fs::read(path).map_err(|e| ConfigError::Invalid {
            var: var.clone(),
            value: path.display().to_string(),
            expected: format!("a readable PEM file ({e})"),
        })?;
        #[cfg(feature = "tls")]
        {
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(|e| ConfigError::Invalid {
                var,
                value: path.display().to_string(),
                expected: format!("PEM root certificates ({e})"),
            })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = pem;
            Err(ConfigError::Invalid {
                var,
                value: path.display().to_string(),
                expected: "no root certificate: it needs poolkit-redis's `tls` feature".into(),
            })
        }
    }

    /// The parsed connection info of the single server (not for cluster configs).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `P_URL` when the URL cannot be parsed.
    pub fn connection_info(&self) -> Result<ConnectionInfo, ConfigError> {
        let info = parse(&format!("{}_URL", self.pool.prefix), self.url.expose())?;
        Ok(info.set_tcp_settings(crate::connector::tcp_settings(
            self.tcp_keepalive,
            self.tcp_user_timeout,
        )))
    }

    /// `host:port` of the server (or of the first cluster node), never the password.
    #[must_use]
    pub fn target(&self) -> String {
        if let Some(s) = &self.sentinel {
            let nodes: Vec<String> = s
                .nodes
                .iter()
                .map(|n| match n.expose().into_connection_info() {
                    Ok(info) => info.addr().to_string(),
                    Err(_) => redact_url(n.expose()),
                })
                .collect();
            return format!("the master `{}` of sentinels {}", s.master, nodes.join(","));
        }
        let url = self
            .cluster_nodes
            .first()
            .map_or(self.url.expose(), |n| n.expose());
        match url.into_connection_info() {
            Ok(info) => match info.addr() {
                ConnectionAddr::Tcp(h, p)
                | ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => format!("{h}:{p}"),
                ConnectionAddr::Unix(path) => path.display().to_string(),
                _ => redact_url(url),
            },
            Err(_) => redact_url(url),
        }
    }

    /// Checks the URL(s) and the knobs.
    ///
    /// # Errors
    /// The first problem, naming its variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pool.validate()?;
        if let Some(s) = &self.sentinel {
            let var = format!("{}_SENTINELS", self.pool.prefix);
            for node in &s.nodes {
                parse(&var, node.expose())?;
            }
        }
        if self.cluster_nodes.is_empty() {
            self.connection_info()?;
        } else {
            let var = format!("{}_CLUSTER_NODES", self.pool.prefix);
            for node in &self.cluster_nodes {
                parse(&var, node.expose())?;
            }
        }
        Ok(())
    }

    /// The variable that sets the acquire timeout.
    #[must_use]
    pub fn timeout_var(&self) -> String {
        self.pool.var(Knob::AcquireTimeout)
    }
}

fn parse(var: &str, url: &str) -> Result<ConnectionInfo, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        var: var.to_owned(),
        value: redact_url(url),
        expected: format!("{URL_EXPECTED}{why}"),
    };
    if !(url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://"))
    {
        return Err(invalid(String::new()));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| invalid(format!(" ({})", e.kind_description())))?;
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(invalid(
            " (rediss:// needs poolkit-redis's `tls` feature)".into(),
        ));
    }
    Ok(info)
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for redis::RedisError {
    fn kind_description(&self) -> String {
        // The driver's message can quote the URL; keep only its category.
        format!("{:?}", self.kind())
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        Config::from_lookup("REDIS", &lookup)
    }

    #[test]
    fn url_or_parts() {
        let c = from(&[("REDIS_URL", "redis://:pw_marker@cache:6380/2")]).unwrap();
        assert_eq!(c.target(), "cache:6380");
        assert_eq!(c.connection_info().unwrap().redis_settings().db(), 2);
        let c = from(&[
            ("REDIS_HOST", "10.0.0.5"),
            ("REDIS_PORT", "6390"),
            ("REDIS_PASSWORD", "p@ss:w/rd"),
            ("REDIS_USERNAME", "app"),
            ("REDIS_DB", "3"),
        ])
        .unwrap();
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd"));
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(
            (c.target().as_str(), info.redis_settings().db()),
            ("10.0.0.5:6390", 3)
        );
        let c = from(&[]).unwrap();
        assert_eq!(c.target(), "127.0.0.1:6379");
        assert_eq!((c.pool.pool_size, c.max_in_flight), (2, 512));
        let c = from(&[("REDIS_CLUSTER_NODES", "redis://a:7000,redis://b:7001")]).unwrap();
        assert_eq!(c.cluster_nodes.len(), 2);
    }

    #[test]
    fn sentinel_from_url_or_variables() {
        let c = from(&[(
            "REDIS_URL",
            "redis+sentinel://:pw_marker@10.0.0.1:26379,10.0.0.2:26380/mymaster/3",
        )])
        .unwrap();
        let s = c.sentinel.as_ref().expect("sentinel");
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.nodes.len(), 2);
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().password(), Some("pw_marker"));
        assert_eq!(
            c.target(),
            "the master `mymaster` of sentinels 10.0.0.1:26379,10.0.0.2:26380"
        );
        assert!(!format!("{c:?}").contains("pw_marker"));
        let c = from(&[
            ("REDIS_SENTINELS", "a:26379, b:26379"),
            ("REDIS_SENTINEL_MASTER", "cache"),
            ("REDIS_PASSWORD_FILE", "/run/secrets/redis"),
            ("REDIS_TCP_KEEPALIVE", "15s"),
        ])
        .unwrap();
        assert_eq!(
            c.sentinel.as_ref().unwrap().nodes[1].expose(),
            "redis://b:26379"
        );
        assert_eq!(
            c.password.describe(),
            "REDIS_PASSWORD_FILE=/run/secrets/redis"
        );
        let tcp = c.connection_info().unwrap();
        assert!(tcp.tcp_settings().keepalive().is_some());
        assert_eq!(
            tcp.tcp_settings().user_timeout(),
            Some(DEFAULT_TCP_USER_TIMEOUT)
        );
        let e = from(&[("REDIS_SENTINELS", "a:26379")]).unwrap_err();
        assert_eq!(e.var(), "REDIS_SENTINEL_MASTER");
        let e = from(&[("REDIS_URL", "redis+sentinel://:pw_marker@a:26379")]).unwrap_err();
        assert_eq!(e.var(), "REDIS_URL");
        assert!(!e.to_string().contains("pw_marker"), "{e}");
        let c = from(&[
            ("REDIS_TCP_KEEPALIVE", "0"),
            ("REDIS_TCP_USER_TIMEOUT", "0"),
        ])
        .unwrap();
        let tcp = c.connection_info().unwrap();
        assert!(tcp.tcp_settings().keepalive().is_none());
        assert_eq!(tcp.tcp_settings().user_timeout(), None);
    }

    #[test]
    fn bad_values_are_named_and_redacted() {
        for (var, value) in [
            ("REDIS_URL", "http://:pw_marker@h:6379"),
            ("REDIS_URL", "redis://:pw_marker@h:notaport"),
            ("REDIS_PORT", "70000"),
            ("REDIS_PORT", "six"),
            ("REDIS_DB", "-1"),
            ("REDIS_HOST", "a/b"),
            ("REDIS_MAX_IN_FLIGHT", "0"),
            ("REDIS_TIMEOUT", "forever"),
            ("REDIS_POOL_SIZE", "0"),
        ] {
            let e = from(&[(var, value)]).expect_err(var);
            assert_eq!(e.var(), var, "{e}");
            assert!(!e.to_string().contains("pw_marker"), "{e}");
        }
        let c = from(&[("REDIS_PASSWORD", "pw_marker")]).unwrap();
        assert!(!format!("{c:?}").contains("pw_marker"));
    }
}
