//! The bb8 manager for tokio-postgres connections.

use tokio_postgres::{Client, NoTls};

use crate::tls::MakeRustls;

/// Opens tokio-postgres connections for bb8 and checks them.
///
/// Written here rather than wrapping `bb8-postgres` so that one `Pool` type serves every
/// TLS mode and the connection task reports its end through `tracing`. poolkit wraps it
/// in [`poolkit_core::engine::Engine`], which adds the timing, counting and
/// idle-time validation.
#[derive(Debug, Clone)]
pub struct Manager {
    config: tokio_postgres::Config,
    pool: String,
    tls: Option<MakeRustls>,
}

impl Manager {
    /// A manager that connects with `config`, for the pool called `pool`.
    #[must_use]
    pub fn new(config: tokio_postgres::Config, pool: &str) -> Self {
        Self {
            config,
            pool: pool.to_owned(),
            tls: None,
        }
    }

    /// The same manager, negotiating TLS with `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: MakeRustls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The connection settings (its `Debug` hides the password).
    #[must_use]
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Client;
    type Error = tokio_postgres::Error;

    /// Opens a connection. tokio-postgres bounds only the TCP connect by its
    /// `connect_timeout`; a server that accepts TCP and never answers (a black hole: a
    /// hung server, a half-open firewall) would hold the startup exchange forever and
    /// keep a connect slot of the pool. The whole connect (TCP, TLS, startup,
    /// authentication) is bounded here by the same timeout (`P_CONNECT_TIMEOUT`).
    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match self.config.get_connect_timeout() {
            Some(limit) => tokio::time::timeout(*limit, self.open())
                .await
                .unwrap_or_else(|_| Err(tokio_postgres::Error::__private_api_timeout())),
            None => self.open().await,
        }
    }

    async fn is_valid(&self, conn: &mut Client) -> Result<(), tokio_postgres::Error> {
        conn.simple_query("").await.map(|_| ())
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        conn.is_closed()
    }
}

impl Manager {
    async fn open(&self) -> Result<Client, tokio_postgres::Error> {
        let pool = self.pool.clone();
        let report = move |e: tokio_postgres::Error| {
            tracing::debug!(pool = %pool, error = %crate::error::chain(&e), "connection ended with an error");
        };
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move { connection.await.unwrap_or_else(report) });
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(async move { connection.await.unwrap_or_else(report) });
                Ok(client)
            }
        }
    }
}
