//! Hooks around a connection's life, the same three as the PostgreSQL pool's (sqlx's
//! `PoolOptions`, deadpool's `Hook`s): `after_connect` (set up a new connection),
//! `before_acquire` (check an exclusive connection before it is handed out) and
//! `after_release` (decide whether one returned is reused).

use std::fmt;
use std::sync::Arc;

use poolkit_core::BoxFuture;
use redis::aio::MultiplexedConnection;

/// Runs on every new connection, shared and exclusive, before it serves (`CLIENT SETNAME`,
/// `CLIENT TRACKING`, a `SELECT`). An error discards the connection: the connect counts as
/// failed, with this error as its reason.
pub type AfterConnect =
    Arc<dyn Fn(&mut MultiplexedConnection) -> BoxFuture<'_, redis::RedisResult<()>> + Send + Sync>;

/// Runs before an exclusive connection is handed out; `false` closes it
/// (`closed{reason="rejected"}`) and the caller gets another, within its acquire timeout.
pub type BeforeAcquire =
    Arc<dyn Fn(&mut MultiplexedConnection) -> BoxFuture<'_, bool> + Send + Sync>;

/// Runs when an exclusive connection comes back; `false` closes it instead of reusing it
/// (`closed{reason="rejected"}`). Called from `Drop`, so it cannot wait.
pub type AfterRelease = Arc<dyn Fn(&MultiplexedConnection) -> bool + Send + Sync>;

/// The hooks of one pool (each optional).
#[derive(Clone, Default)]
pub struct Hooks {
    /// See [`AfterConnect`].
    pub after_connect: Option<AfterConnect>,
    /// See [`BeforeAcquire`].
    pub before_acquire: Option<BeforeAcquire>,
    /// See [`AfterRelease`].
    pub after_release: Option<AfterRelease>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("after_connect", &self.after_connect.is_some())
            .field("before_acquire", &self.before_acquire.is_some())
            .field("after_release", &self.after_release.is_some())
            .finish()
    }
}
