//! The PostgreSQL pool's error.

use std::sync::Arc;

use poolkit_core::{ConfigError, PoolError};
use thiserror::Error;

use crate::connect::ConnectError;

/// Everything that can go wrong getting or using a pooled PostgreSQL connection.
///
/// No variant's message holds a password: connect errors name the host and port only,
/// and configuration errors redact secret values.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure of the pool itself, the same shape in every adapter: the acquire timeout,
    /// a transaction's deadline (rolled back, its connection closed), a closed pool, a
    /// failed connect or a rotating password refused (their `source` is a
    /// [`ConnectError`]), or a failover (SQLSTATE 25006, 57P01, 57P02, 57P03: every
    /// connection retired, the statement not retried; its `source` is the
    /// `tokio_postgres::Error`). See [`PoolError`] for what [`Error::is_timeout`] and
    /// [`Error::timeout_var`] mean.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A statement sent through the pool's shared connections
    /// ([`crate::Pool::query`] and its siblings) would leave session state behind on a
    /// connection other callers share (`SET`, `LISTEN`, `PREPARE`, `BEGIN`, `DECLARE`, a
    /// temporary table, a session advisory lock). It was not sent.
    #[error(
        "pool `{pool}`: {statement} leaves session state on a connection that other callers share, so it was not sent; run it on a connection of your own: pool.get() (or pool.transaction() for BEGIN … COMMIT)"
    )]
    SessionState {
        /// The pool's name.
        pool: String,
        /// What the statement does (`SET`, `LISTEN`, `BEGIN`, …).
        statement: &'static str,
    },
    /// The shared connection carrying this statement broke while it was in flight (the
    /// server closed it, or the network failed). Only the statements in flight on that
    /// connection fail; the pool replaces it in the background. The statement may or may
    /// not have run.
    #[error("pool `{pool}`: the shared connection broke with this statement in flight ({}); it may or may not have run; the pool opens a new one", chain(.source))]
    ConnectionLost {
        /// The pool's name.
        pool: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A query failed on a healthy connection.
    #[error("query failed: {}", chain(.0))]
    Backend(#[source] tokio_postgres::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

poolkit_core::adapter_error!(Error);

impl Error {
    /// Whether a statement was refused from the shared connections because it leaves
    /// session state behind: see [`Error::SessionState`].
    #[must_use]
    pub fn is_session_state(&self) -> bool {
        matches!(self, Self::SessionState { .. })
    }

    /// The SQLSTATE code of a server error, if this is one.
    #[must_use]
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Self::Backend(e) | Self::ConnectionLost { source: e, .. } => e.code(),
            Self::Pool(
                PoolError::Connect { source, .. } | PoolError::Credentials { source, .. },
            ) => source
                .downcast_ref::<ConnectError>()
                .and_then(ConnectError::code),
            Self::Pool(PoolError::PrimaryMoved { source, .. }) => source
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(tokio_postgres::Error::code),
            _ => None,
        }
    }
}

/// A statement's error: [`PoolError::PrimaryMoved`] when its SQLSTATE says the server
/// moved, else [`Error::Backend`].
impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        match e
            .code()
            .and_then(|c| crate::failover::moved_reason(c).map(|r| (c.code().to_owned(), r)))
        {
            Some((code, reason)) => Self::Pool(PoolError::PrimaryMoved {
                code: Some(code),
                reason,
                what: "statement",
                source: Arc::new(e),
            }),
            None => Self::Backend(e),
        }
    }
}

/// One error as one line; the server's error with its SQLSTATE, detail and hint
/// (`ERROR 23505: duplicate key value violates unique constraint "t_pkey" (detail: Key
/// (id)=(1) already exists.)`).
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() else {
        return e.to_string();
    };
    let mut out = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    let extra: Vec<String> = [("detail", db.detail()), ("hint", db.hint())]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
        .collect();
    if !extra.is_empty() {
        out.push_str(&format!(" ({})", extra.join("; ")));
    }
    out
}

/// A driver error with its causes, as one line (tokio-postgres's `Display` shows only
/// the kind, such as "db error"; the server's message is in the source chain).
#[must_use]
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = one_line(e);
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = one_line(s);
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
