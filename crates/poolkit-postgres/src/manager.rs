//! The bb8 manager for tokio-postgres connections.

use std::fmt;
use std::sync::Arc;

use poolkit_core::{Credentials, PasswordSource, Resolve};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::connect::{
    ConnectError, Endpoint, Role, SessionAttrs, endpoints, resolve, without_hosts,
};
use crate::error::chain;
use crate::failover::Failover;
use crate::tls::MakeRustls;

/// Opens tokio-postgres connections for bb8 and checks them.
///
/// Written here rather than wrapping `bb8-postgres` so that one `Pool` type serves every
/// TLS mode, the connection task reports its end through `tracing` (and a session the
/// server ends because it shuts down marks the server as moved), the hosts of a multi-host
/// URL are tried in order against `target_session_attrs` (all of libpq's values), names
/// are resolved anew at every connect (by the pool's resolver when it has one), and the
/// password is read from its source at every connect. poolkit wraps it in
/// [`poolkit_core::engine::Engine`], which adds the timing, counting and idle-time
/// validation.
#[derive(Clone)]
pub struct Manager {
    config: tokio_postgres::Config,
    base: tokio_postgres::Config,
    endpoints: Vec<Endpoint>,
    attrs: SessionAttrs,
    pool: String,
    tls: Option<MakeRustls>,
    credentials: Arc<Credentials>,
    resolver: Option<Arc<dyn Resolve>>,
    failover: Arc<Failover>,
    /// The server's `max_connections` and reserved connections, learned on the first
    /// connection (for the size advice's server cap).
    server_limit: std::sync::OnceLock<(u32, u32)>,
    after_connect: Option<crate::hooks::AfterConnect>,
    /// Connections opened by [`bb8::ManageConnection::connect`] (the checkouts) whose
    /// task has not ended, counted by that task itself: a connection the pool closed (or
    /// a connect refused after the login, for its role or by the after-connect hook)
    /// still holds its server backend until then (shared by clones).
    alive: Arc<std::sync::atomic::AtomicU32>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("pool", &self.pool)
            .field("config", &self.config)
            .field("target_session_attrs", &self.attrs)
            .field("password", self.credentials.source())
            .field("resolver", &self.resolver.as_ref().map(|_| "custom"))
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager that connects with `config`, for the pool called `pool`. Its
    /// `target_session_attrs` (`any`, `read-write`, `read-only`) are honoured; see
    /// [`Manager::with_session_attrs`] for the others.
    #[must_use]
    pub fn new(config: tokio_postgres::Config, pool: &str) -> Self {
        let attrs = match config.get_target_session_attrs() {
            tokio_postgres::config::TargetSessionAttrs::ReadWrite => SessionAttrs::ReadWrite,
            tokio_postgres::config::TargetSessionAttrs::ReadOnly => SessionAttrs::ReadOnly,
            _ => SessionAttrs::Any,
        };
        Self {
            base: without_hosts(&config),
            endpoints: endpoints(&config),
            config,
            attrs,
            pool: pool.to_owned(),
            tls: None,
            credentials: Arc::new(Credentials::new(PasswordSource::Url)),
            resolver: None,
            failover: Failover::new(pool, false),
            server_limit: std::sync::OnceLock::new(),
            after_connect: None,
            alive: Arc::default(),
        }
    }

    /// Runs `hook` on every new connection before it joins the pool; its error discards
    /// the connection (see [`crate::AfterConnect`]).
    #[must_use]
    pub fn with_after_connect(mut self, hook: Option<crate::hooks::AfterConnect>) -> Self {
        self.after_connect = hook;
        self
    }

    /// Connections opened for checkouts whose task has not ended yet (open in the pool,
    /// or closed by it and still closing): what the server still holds for them.
    pub(crate) fn alive(&self) -> u32 {
        self.alive.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server's `max_connections` and its reserved connections
    /// (`superuser_reserved_connections` + `reserved_connections`), once a connection has
    /// been opened.
    #[must_use]
    pub fn server_limit(&self) -> Option<(u32, u32)> {
        self.server_limit.get().copied()
    }

    async fn learn_limit(&self, client: &Client) {
        if self.server_limit.get().is_some() {
            return;
        }
        let sql = "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'), coalesce(current_setting('reserved_connections', true), '0')";
        if let Ok(msgs) = client.simple_query(sql).await {
            for m in msgs {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                    let n = |i: usize| row.get(i).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
                    let _ = self.server_limit.set((n(0), n(1) + n(2)));
                }
            }
        }
    }

    /// The same manager, negotiating TLS with `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: MakeRustls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same manager, wanting servers of this kind.
    #[must_use]
    pub fn with_session_attrs(mut self, attrs: SessionAttrs) -> Self {
        self.attrs = attrs;
        self
    }

    /// The same manager, taking the password from `credentials` at every connect.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// The same manager, resolving host names with `resolver`.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Option<Arc<dyn Resolve>>) -> Self {
        self.resolver = resolver;
        self
    }

    pub(crate) fn with_failover(mut self, failover: Arc<Failover>) -> Self {
        self.failover = failover;
        self
    }

    /// The connection settings (its `Debug` hides the password).
    #[must_use]
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Where the password comes from, and whether the last login with it was refused.
    #[must_use]
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Client;
    type Error = ConnectError;

    /// Opens a connection: each host in turn (each address the resolver gives), the
    /// first that fits `target_session_attrs` wins. tokio-postgres bounds only the TCP
    /// connect by its `connect_timeout`; a server that accepts TCP and never answers (a
    /// black hole) would hold the startup exchange forever, so each host's whole connect
    /// (TCP, TLS, startup, authentication, the session check) is bounded here by the same
    /// timeout (`P_CONNECT_TIMEOUT`).
    async fn connect(&self) -> Result<Client, ConnectError> {
        let (client, _ended) = self.connect_watched(Some(&self.alive)).await?;
        Ok(client)
    }

    async fn is_valid(&self, conn: &mut Client) -> Result<(), ConnectError> {
        conn.simple_query("")
            .await
            .map(|_| ())
            .map_err(ConnectError::Driver)
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        conn.is_closed()
    }
}

/// Completes when a connection's task ends (the socket closed or failed).
pub(crate) type Ended = tokio::sync::oneshot::Receiver<()>;

/// One connection counted in a [`Manager`]'s `alive` from its task's start to its end.
struct Alive(Arc<std::sync::atomic::AtomicU32>);

impl Alive {
    fn new(count: &Arc<std::sync::atomic::AtomicU32>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Manager {
    /// [`bb8::ManageConnection::connect`], also giving a future that completes when the
    /// connection's task ends (a shared connection needs to learn that it died); counted
    /// in `alive`, if given, while that task runs.
    pub(crate) async fn connect_watched(
        &self,
        alive: Option<&Arc<std::sync::atomic::AtomicU32>>,
    ) -> Result<(Client, Ended), ConnectError> {
        let generation = self.failover.generation();
        let password = self.credentials.password().await?;
        let limit = self.config.get_connect_timeout().copied();
        let passes: &[SessionAttrs] = match self.attrs {
            SessionAttrs::PreferStandby => &[SessionAttrs::Standby, SessionAttrs::Any],
            SessionAttrs::Any => &[SessionAttrs::Any],
            _ => std::slice::from_ref(&self.attrs),
        };
        let mut tried: Vec<(String, String)> = Vec::new();
        let mut last = None;
        let mut timed_out = None;
        for &wanted in passes {
            for endpoint in &self.endpoints {
                let dial = match resolve(endpoint, self.resolver.as_ref()).await {
                    Ok(dial) => dial,
                    Err(why) => {
                        tried.push((endpoint.label(), why));
                        continue;
                    }
                };
                for ep in dial {
                    let mut config = ep.config(&self.base);
                    if let Some(pw) = &password {
                        config.password(pw.expose());
                    }
                    let attempt = self.attempt(&config, wanted, generation, alive);
                    let outcome = match limit {
                        Some(t) => tokio::time::timeout(t, attempt).await.map_err(|_| t),
                        None => Ok(attempt.await),
                    };
                    match outcome {
                        Ok(Ok(mut opened)) => {
                            self.credentials.accepted();
                            self.learn_limit(&opened.0).await;
                            if let Some(hook) = &self.after_connect {
                                hook(&mut opened.0).await.map_err(ConnectError::Driver)?;
                            }
                            return Ok(opened);
                        }
                        Ok(Err(Refused::Role(role))) => {
                            if self.attrs.wants_primary() {
                                self.failover.moved_at_connect(
                                    generation,
                                    &format!(
                                        "a connect found {} to be {}",
                                        ep.label(),
                                        role.describe()
                                    ),
                                );
                            }
                            tried.push((ep.label(), role.describe().to_owned()));
                        }
                        Ok(Err(Refused::Driver(e))) => {
                            self.driver_failed(&e, generation, password.as_ref());
                            tried.push((ep.label(), chain(&e)));
                            last = Some(e);
                        }
                        Err(t) => {
                            tried.push((ep.label(), format!("no answer within {t:?}")));
                            timed_out = Some(t);
                        }
                    }
                }
            }
        }
        // One host tried once: its own error, as before multi-host support.
        if tried.len() == 1 && passes.len() == 1 {
            if let Some(t) = timed_out {
                return Err(ConnectError::Timeout(t));
            }
            if let Some(e) = last {
                return Err(ConnectError::Driver(e));
            }
        }
        Err(ConnectError::no_server(self.attrs, &tried, last))
    }
}

/// Why one endpoint would not do.
enum Refused {
    Role(Role),
    Driver(tokio_postgres::Error),
}

impl Manager {
    /// Opens one endpoint and checks its role when `wanted` asks for one.
    async fn attempt(
        &self,
        config: &tokio_postgres::Config,
        wanted: SessionAttrs,
        generation: u64,
        alive: Option<&Arc<std::sync::atomic::AtomicU32>>,
    ) -> Result<(Client, Ended), Refused> {
        let (client, ended) = self
            .open(config, generation, alive)
            .await
            .map_err(Refused::Driver)?;
        if wanted == SessionAttrs::Any {
            return Ok((client, ended));
        }
        let role = Role::of(&client).await.map_err(Refused::Driver)?;
        if role.fits(wanted) {
            Ok((client, ended))
        } else {
            Err(Refused::Role(role))
        }
    }

    /// Notes what a failed connect says: a refused login (kept for health when the secret
    /// rotates), or a server that does not take connections now (the server moved).
    fn driver_failed(
        &self,
        e: &tokio_postgres::Error,
        generation: u64,
        password: Option<&poolkit_core::Secret>,
    ) {
        let Some(code) = e.code() else { return };
        if crate::connect::is_auth_code(code) && self.credentials.source().rotates() {
            self.credentials.refused(chain(e), password);
        }
        if *code == SqlState::CANNOT_CONNECT_NOW {
            let why = crate::failover::moved_reason(code).unwrap_or_default();
            self.failover
                .moved_at_connect(generation, &format!("a connect got SQLSTATE 57P03: {why}"));
        }
    }

    async fn open(
        &self,
        config: &tokio_postgres::Config,
        generation: u64,
        alive: Option<&Arc<std::sync::atomic::AtomicU32>>,
    ) -> Result<(Client, Ended), tokio_postgres::Error> {
        let pool = self.pool.clone();
        let (end, ended) = tokio::sync::oneshot::channel();
        let failover = Arc::clone(&self.failover);
        // The connection task ends with the server's error when the server ends the
        // session (a shutdown sends every session 57P01): that marks the server as moved.
        let report = move |e: tokio_postgres::Error| {
            tracing::debug!(pool = %pool, error = %chain(&e), "connection ended with an error");
            failover.seen(&e, generation);
        };
        match &self.tls {
            None => {
                let (client, connection) = config.connect(NoTls).await?;
                let alive = alive.map(Alive::new);
                tokio::spawn(async move {
                    let _alive = alive;
                    connection.await.unwrap_or_else(report);
                    let _ = end.send(());
                });
                Ok((client, ended))
            }
            Some(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                let alive = alive.map(Alive::new);
                tokio::spawn(async move {
                    let _alive = alive;
                    connection.await.unwrap_or_else(report);
                    let _ = end.send(());
                });
                Ok((client, ended))
            }
        }
    }
}
