//! Exclusive mode: one connection per caller, for what cannot share a connection
//! (blocking commands such as BLPOP, WATCH/MULTI/EXEC).

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use crate::connector::Connector;

/// Opens Redis connections for bb8 (exclusive checkout) and checks them with `PING`.
///
/// Written here rather than taken from `bb8-redis` so that connections get poolkit's
/// connect timeout and no response timeout (a `BLPOP 0` may legitimately wait forever),
/// and open the way the pool's shared connections do (Sentinel, a rotating password, the
/// pool's resolver, TCP keep-alive).
#[derive(Debug, Clone)]
pub struct Manager {
    connector: Arc<Connector>,
    config: AsyncConnectionConfig,
}

impl Manager {
    /// A manager for `client`, connecting with `config`.
    #[must_use]
    pub fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self {
            connector: Arc::new(Connector::fixed(client)),
            config,
        }
    }

    pub(crate) fn with_connector(connector: Arc<Connector>, config: AsyncConnectionConfig) -> Self {
        Self { connector, config }
    }

    /// Whether the password can change while the pool runs (a file, a token provider).
    pub(crate) fn rotates(&self) -> bool {
        self.connector.credentials().source().rotates()
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = MultiplexedConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        self.connector.open(&self.config).await
    }

    async fn is_valid(&self, conn: &mut MultiplexedConnection) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await
    }

    fn has_broken(&self, _: &mut MultiplexedConnection) -> bool {
        false
    }
}

impl redis::aio::ConnectionLike for crate::PooledConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let conn: &mut MultiplexedConnection = self;
            let reply = conn.req_packed_command(cmd).await;
            if let Err(e) = &reply {
                self.note_error(e);
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let conn: &mut MultiplexedConnection = self;
            let reply = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &reply {
                self.note_error(e);
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        let conn: &MultiplexedConnection = self;
        conn.get_db()
    }
}
