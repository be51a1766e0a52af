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
    /// (no shared slot or exclusive connection in time), a closed pool, or a failed
    /// connect (its `source` is a `redis::RedisError`). See [`PoolError`] for what
    /// [`Error::is_timeout`] and [`Error::timeout_var`] mean.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The server stopped being the master (a failover): it answered READONLY,
    /// MASTERDOWN, LOADING or UNBLOCKED. The pool retired every shared and exclusive
    /// connection at once and reconnects (resolving the name again, or asking the
    /// Sentinels); the command was not retried.
    #[error(
        "the primary moved: {reason}; the pool retired every connection to that server and reconnects; the command was not retried"
    )]
    PrimaryMoved {
        /// What the reply says about the server.
        reason: &'static str,
        /// The driver's error.
        #[source]
        source: redis::RedisError,
    },
    /// A new connection could not log in with the secret from a rotating source (a
    /// password file, a token provider): it could not be read, or the server refused it.
    /// Connections opened earlier keep serving.
    #[error(
        "pool `{pool}`: cannot log in to Redis at {target} with the password from {source_name}: {reason}"
    )]
    Credentials {
        /// The pool's name.
        pool: String,
        /// `host:port` (never the password).
        target: String,
        /// Where the secret came from (`REDIS_PASSWORD_FILE=/run/secrets/redis`).
        source_name: String,
        /// The server's (or the file's, or the provider's) answer.
        reason: String,
        /// The driver's error.
        #[source]
        source: Arc<redis::RedisError>,
    },
    /// A command failed.
    #[error("redis command failed: {0}")]
    Backend(#[source] redis::RedisError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

poolkit_core::adapter_error!(Error);

impl Error {
    /// Whether the server moved (a failover): see [`Error::PrimaryMoved`].
    #[must_use]
    pub fn is_primary_moved(&self) -> bool {
        matches!(self, Self::PrimaryMoved { .. })
    }

    /// Whether a rotating secret failed: see [`Error::Credentials`].
    #[must_use]
    pub fn is_credentials(&self) -> bool {
        matches!(self, Self::Credentials { .. })
    }
}

/// A command's error: [`Error::PrimaryMoved`] when the reply says the server moved, else
/// [`Error::Backend`].
impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        match crate::failover::moved_reason(&e) {
            Some(reason) => Self::PrimaryMoved { reason, source: e },
            None => Self::Backend(e),
        }
    }
}
