//! The Redis pool's error.

use std::sync::Arc;
use std::time::Duration;

use poolkit_core::ConfigError;
use thiserror::Error;

/// Everything that can go wrong getting or using a pooled Redis connection. No message
/// holds a password: targets are `host:port`, URLs are redacted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection (shared slot or exclusive checkout) within the acquire timeout.
    #[error(
        "pool `{pool}` exhausted: no connection within {waited:.1?} ({size} {what}, {pending} other callers waiting); raise {size_var} or {timeout_var}"
    )]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
        /// The ceiling that was reached.
        size: u32,
        /// What the ceiling counts ("commands in flight" or "exclusive connections").
        what: &'static str,
        /// Callers still waiting.
        pending: u64,
        /// The variable that raises the ceiling.
        size_var: String,
        /// The variable that sets the acquire timeout.
        timeout_var: String,
    },
    /// The pool was closed.
    #[error("pool `{pool}` is closed")]
    Closed {
        /// The pool's name.
        pool: String,
    },
    /// Connecting failed; `reason` is the server's or the network's answer.
    #[error("pool `{pool}`: cannot connect to Redis at {target}: {reason}")]
    Connect {
        /// The pool's name.
        pool: String,
        /// `host:port` (never the password).
        target: String,
        /// The driver's message.
        reason: String,
        /// The driver's error.
        #[source]
        source: Arc<redis::RedisError>,
    },
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

impl Error {
    /// Whether this is the pool-exhausted timeout.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// Whether connecting failed.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

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
