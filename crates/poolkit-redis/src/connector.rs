//! How a new Redis connection is opened: to the server the URL names (resolved anew, by
//! the pool's resolver when it has one), or to the master a Redis Sentinel names now; with
//! the password read from its source at every connect; with TCP keep-alive and
//! `TCP_USER_TIMEOUT` on the socket. Shared slots and exclusive connections both open
//! through it, so a reconnect after a failover re-resolves the same way.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poolkit_core::{Credentials, PasswordSource, Resolve, Secret};
use redis::aio::MultiplexedConnection;
use redis::io::tcp::{TcpSettings, socket2};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, ErrorKind, RedisError, RedisResult};

use crate::config::Config;

/// Where connections go.
enum Target {
    /// A client made once (a fixed password, or `Manager::new`).
    Fixed(Client),
    /// A client made per connect with the current password.
    Rotating(Box<Config>),
    /// The master a Sentinel names at each connect.
    Sentinel {
        sentinel: tokio::sync::Mutex<Sentinel>,
        master: String,
        config: Box<Config>,
    },
}

/// Opens connections for one pool (shared slots and exclusive checkouts alike).
pub(crate) struct Connector {
    target: Target,
    credentials: Arc<Credentials>,
    resolver: Option<Arc<dyn Resolve>>,
    /// Bounds a Sentinel lookup (the connect itself has its own timeout).
    lookup_timeout: Duration,
    /// Runs on every new connection before it serves.
    after_connect: Option<crate::hooks::AfterConnect>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.target {
            Target::Fixed(_) => "fixed",
            Target::Rotating(_) => "rotating password",
            Target::Sentinel { .. } => "sentinel",
        };
        f.debug_struct("Connector")
            .field("target", &target)
            .field("password", self.credentials.source())
            .finish_non_exhaustive()
    }
}

/// TCP keep-alive (`idle`, then every 10 s, 3 probes) and `TCP_USER_TIMEOUT`.
pub(crate) fn tcp_settings(
    keepalive: Option<Duration>,
    user_timeout: Option<Duration>,
) -> TcpSettings {
    let mut tcp = TcpSettings::default();
    if let Some(idle) = keepalive {
        tcp = tcp.set_keepalive(
            socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(crate::config::TCP_KEEPALIVE_INTERVAL)
                .with_retries(crate::config::TCP_KEEPALIVE_RETRIES),
        );
    }
    if let Some(t) = user_timeout {
        tcp = tcp.set_user_timeout(t);
    }
    tcp
}

/// The pool's resolver as redis-rs's.
struct Dns(Arc<dyn Resolve>);

impl redis::io::AsyncDNSResolver for Dns {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let addrs = self.0.resolve(host, port).await.map_err(RedisError::from)?;
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

impl Connector {
    /// A connector that always uses `client` (`Manager::new`).
    pub(crate) fn fixed(client: Client) -> Self {
        Self {
            target: Target::Fixed(client),
            credentials: Arc::new(Credentials::new(PasswordSource::Url)),
            resolver: None,
            lookup_timeout: Duration::from_secs(5),
            after_connect: None,
        }
    }

    /// The connector for a pool's configuration.
    ///
    /// # Errors
    /// The configuration's, or one naming `P_SENTINELS` when redis-rs refuses the
    /// sentinels' addresses.
    pub(crate) fn new(
        config: &Config,
        lookup_timeout: Duration,
    ) -> Result<Self, poolkit_core::ConfigError> {
        let credentials = Arc::new(Credentials::new(config.password.clone()));
        let target = if let Some(sentinel) = &config.sentinel {
            let invalid = |e: RedisError| poolkit_core::ConfigError::Invalid {
                var: format!("{}_SENTINELS", config.pool.prefix),
                value: config.target(),
                expected: format!(
                    "Redis Sentinel addresses such as 10.0.0.1:26379 ({:?})",
                    e.kind()
                ),
            };
            let nodes: Vec<ConnectionInfo> = sentinel
                .nodes
                .iter()
                .map(|n| redis::IntoConnectionInfo::into_connection_info(n.expose()))
                .collect::<RedisResult<_>>()
                .map_err(invalid)?;
            Target::Sentinel {
                sentinel: tokio::sync::Mutex::new(Sentinel::build(nodes).map_err(invalid)?),
                master: sentinel.master.clone(),
                config: Box::new(config.clone()),
            }
        } else if config.password.rotates() {
            config.client()?;
            Target::Rotating(Box::new(config.clone()))
        } else {
            Target::Fixed(config.client()?)
        };
        Ok(Self {
            target,
            credentials,
            resolver: config.resolver.clone(),
            lookup_timeout,
            after_connect: config.hooks.after_connect.clone(),
        })
    }

    /// Where the password comes from, and whether the last login with it was refused.
    pub(crate) fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// A client for the server to use now, with `password` (the current one).
    async fn client(&self, password: Option<&Secret>) -> RedisResult<Client> {
        match &self.target {
            Target::Fixed(client) => Ok(client.clone()),
            Target::Rotating(config) => config
                .client_with_password(password.map(Secret::expose))
                .map_err(config_error),
            Target::Sentinel {
                sentinel,
                master,
                config,
            } => {
                let info = config.connection_info().map_err(config_error)?;
                let mut node = info.redis_settings().clone();
                if let Some(pw) = password {
                    node = node.set_password(pw.expose());
                }
                let node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(node)
                    .set_tcp_settings(info.tcp_settings().clone());
                let mut sentinel = sentinel.lock().await;
                tokio::time::timeout(
                    self.lookup_timeout,
                    sentinel.async_master_for(master, Some(&node)),
                )
                .await
                .map_err(|_| {
                    RedisError::from((
                        ErrorKind::Io,
                        "no Sentinel answered",
                        format!("within {:?}", self.lookup_timeout),
                    ))
                })?
            }
        }
    }

    /// Opens a multiplexed connection with `config` to the server to use now.
    pub(crate) async fn open(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let password = self.credentials.password().await.map_err(|e| {
            RedisError::from((
                ErrorKind::AuthenticationFailed,
                "cannot read the password",
                e.to_string(),
            ))
        })?;
        let client = self.client(password.as_ref()).await?;
        let config = match &self.resolver {
            Some(r) => config.clone().set_dns_resolver(Dns(Arc::clone(r))),
            None => config.clone(),
        };
        let mut opened = client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        match &opened {
            Ok(_) => self.credentials.accepted(),
            Err(e) if is_refused_login(e) && self.credentials.source().rotates() => {
                self.credentials.refused(e.to_string(), password.as_ref());
            }
            Err(_) => {}
        }
        if let (Ok(conn), Some(hook)) = (&mut opened, &self.after_connect) {
            hook(conn).await?;
        }
        opened
    }
}

/// Whether the server refused the login (`WRONGPASS`, `NOAUTH`), or the password could not
/// be read.
pub(crate) fn is_refused_login(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}

fn config_error(e: poolkit_core::ConfigError) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "invalid configuration",
        e.to_string(),
    ))
}
