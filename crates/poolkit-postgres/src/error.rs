//! The PostgreSQL pool's error.

use std::sync::Arc;
use std::time::Duration;

use poolkit_core::ConfigError;
use thiserror::Error;

/// Everything that can go wrong getting or using a pooled PostgreSQL connection.
///
/// No variant's message holds a password: connect errors name the host and port only,
/// and configuration errors redact secret values.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The pool is exhausted: no connection came free within the acquire timeout.
    #[error(
        "pool `{pool}` exhausted: no connection within {waited:.1?} (pool size {size}, {pending} other callers waiting); raise {size_var} or {timeout_var}, or hold connections for less time"
    )]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
        /// The pool's ceiling.
        size: u32,
        /// Callers still waiting when this one gave up.
        pending: u64,
        /// The variable that raises the ceiling (`MAX_POOL_SIZE`, `DATABASE_POOL_SIZE`).
        size_var: String,
        /// The variable that sets the acquire timeout.
        timeout_var: String,
    },
    /// A transaction ran past its deadline: it was rolled back and its connection closed.
    #[error("pool `{pool}`: transaction ran past its {after:.1?} deadline and was rolled back")]
    Deadline {
        /// The pool's name.
        pool: String,
        /// The deadline.
        after: Duration,
    },
    /// The pool was closed.
    #[error("pool `{pool}` is closed")]
    Closed {
        /// The pool's name.
        pool: String,
    },
    /// Connecting to the server failed; `reason` is the server's (or the network's) answer.
    #[error("pool `{pool}`: cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// The pool's name.
        pool: String,
        /// `host:port` (never the password).
        target: String,
        /// The full error chain, as text.
        reason: String,
        /// The driver's error.
        #[source]
        source: Arc<tokio_postgres::Error>,
    },
    /// A query failed on a healthy connection.
    #[error("query failed: {}", chain(.0))]
    Backend(#[source] tokio_postgres::Error),
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

    /// The SQLSTATE code of a server error, if this is one.
    #[must_use]
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Self::Backend(e) => e.code(),
            Self::Connect { source, .. } => source.code(),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Backend(e)
    }
}

/// A driver error with its causes, as one line (tokio-postgres's `Display` shows only
/// the kind, such as "db error"; the server's message is in the source chain).
#[must_use]
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
