//! Exclusive mode: one connection per caller, for what cannot share a connection
//! (blocking commands such as BLPOP, WATCH/MULTI/EXEC).

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

/// Opens Redis connections for bb8 (exclusive checkout) and checks them with `PING`.
///
/// Written here rather than taken from `bb8-redis` so that connections get poolkit's
/// connect timeout and no response timeout (a `BLPOP 0` may legitimately wait forever).
#[derive(Debug, Clone)]
pub struct Manager {
    client: Client,
    config: AsyncConnectionConfig,
}

impl Manager {
    /// A manager for `client`, connecting with `config`.
    #[must_use]
    pub fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self { client, config }
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = MultiplexedConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    async fn is_valid(&self, conn: &mut MultiplexedConnection) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await
    }

    fn has_broken(&self, _: &mut MultiplexedConnection) -> bool {
        false
    }
}
