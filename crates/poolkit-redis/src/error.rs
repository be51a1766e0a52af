//! The Redis pool's error.

use std::sync::Arc;

use poolkit_core::{ConfigError, PoolError};
use thiserror::Error;

/// Everything that can go wrong getting or using a pooled Redis connection. No message
/// holds a password: targets are `host:port`, URLs are redacted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure of the pool itself, the same shape in every adapter: the acquire timeout
    /// (no shared slot or exclusive connection in time), a closed pool, a failed connect,
    /// a rotating password refused, or a failover (`READONLY`, `MASTERDOWN`, …: every
    /// connection retired, the command not retried). Sources are `redis::RedisError`s.
    /// See [`PoolError`] for what [`Error::is_timeout`] and [`Error::timeout_var`] mean.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A command failed.
    #[error("redis command failed: {0}")]
    Backend(#[source] redis::RedisError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

poolkit_core::adapter_error!(Error);

/// A command's error: [`PoolError::PrimaryMoved`] when the reply says the server moved, else
/// [`Error::Backend`].
impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        match crate::failover::moved_reason(&e) {
            Some(reason) => Self::Pool(PoolError::PrimaryMoved {
                code: None,
                reason,
                what: "command",
                source: Arc::new(e),
            }),
            None => Self::Backend(e),
        }
    }
}
