//! The HTTP pool's error type.

use poolkit_core::{ConfigError, PoolError};
use thiserror::Error;

/// A boxed error source (I/O, TLS or HTTP protocol errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong with a pooled HTTP request.
///
/// Messages name the pool, the origin (`https://host:port`, never a path, query or
/// credentials) and, for timeouts, the variable that sets the limit. Header values, and so
/// API keys, never appear.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure of the pool itself, the same shape in every adapter: no connection
    /// (HTTP/1.1) or stream (HTTP/2) free within `P_POOL_TIMEOUT` ([`PoolError::Timeout`]),
    /// the whole request past `P_TIMEOUT` ([`PoolError::Deadline`]), a closed pool, or a
    /// failed connect (TCP, TLS, HTTP/2 handshake, `P_CONNECT_TIMEOUT`). See [`PoolError`]
    /// for what [`Error::is_timeout`] and [`Error::timeout_var`] mean.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The connection failed while the request was under way.
    #[error("{pool}: request to {origin} failed: {source}")]
    Backend {
        /// The pool's name.
        pool: String,
        /// The origin.
        origin: String,
        /// The protocol or I/O error.
        #[source]
        source: BoxError,
    },
    /// The connection broke, or the server ended it (an HTTP/2 `GOAWAY`), while a request
    /// that is not idempotent was in flight. The server may have processed it, so it was
    /// not sent again; a request the server refused unprocessed (HTTP/2 `REFUSED_STREAM`)
    /// is retried instead and never ends here.
    #[error(
        "{pool}: the connection to {origin} broke while a {method} request was in flight; not retried because the server may have processed it (mark the request idempotent(true) if a repeat is safe): {source}"
    )]
    Interrupted {
        /// The pool's name.
        pool: String,
        /// The origin.
        origin: String,
        /// The request method (`POST`).
        method: String,
        /// The protocol or I/O error.
        #[source]
        source: BoxError,
    },
    /// The server answered with an error status (from [`crate::Response::error_for_status`]).
    #[error("{pool}: {origin} answered {status}: {body}")]
    Status {
        /// The pool's name.
        pool: String,
        /// The origin.
        origin: String,
        /// The status code.
        status: http::StatusCode,
        /// The start of the response body (at most 512 bytes).
        body: String,
    },
    /// The request could not be built (a bad URL, header or JSON body).
    #[error("{pool}: invalid request: {reason}")]
    InvalidRequest {
        /// The pool's name.
        pool: String,
        /// What is wrong.
        reason: String,
    },
    /// A response body was larger than `P_MAX_BODY` (read it with `bytes_stream()`).
    #[error(
        "{pool}: the response body from {origin} is larger than {limit} bytes; raise {var} or read it with bytes_stream()"
    )]
    BodyTooLarge {
        /// The pool's name.
        pool: String,
        /// The origin.
        origin: String,
        /// The cap, in bytes.
        limit: u64,
        /// The variable that sets it (`SUPABASE_MAX_BODY`).
        var: String,
    },
    /// More redirects than `P_MAX_REDIRECTS`.
    #[error("{pool}: more than {limit} redirects (last from {origin}); raise {var} or fix the URL")]
    TooManyRedirects {
        /// The pool's name.
        pool: String,
        /// The origin of the last redirect.
        origin: String,
        /// The limit.
        limit: u32,
        /// The variable that sets it (`SUPABASE_MAX_REDIRECTS`).
        var: String,
    },
    /// A response body was not the JSON the caller asked for.
    #[error("response body is not the expected JSON: {0}")]
    Decode(#[source] serde_json::Error),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

poolkit_core::adapter_error!(Error);

impl Error {
    /// Whether a non-idempotent request was cut off in flight ([`Error::Interrupted`]).
    #[must_use]
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Self::Interrupted { .. })
    }

    /// The HTTP status, for [`Error::Status`].
    #[must_use]
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
