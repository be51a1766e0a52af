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
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Self::Backend(e)
    }
}
