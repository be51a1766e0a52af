//! The HTTP pool's error type.

use std::time::Duration;

use poolkit_core::ConfigError;
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
    /// No connection (HTTP/1.1) or stream (HTTP/2) became free within `P_POOL_TIMEOUT`.
    #[error(
        "{pool}: no connection to {origin} became free within {waited:?}: all are busy; raise {var} or the pool size"
    )]
    Timeout {
        /// The pool's name.
        pool: String,
        /// The origin the caller queued for.
        origin: String,
        /// How long the caller waited.
        waited: Duration,
        /// The variable that sets the limit (`SUPABASE_POOL_TIMEOUT`).
        var: String,
    },
    /// The whole request took longer than `P_TIMEOUT`.
    #[error(
        "{pool}: request to {origin} did not complete within {after:?} (raise {var} if the server is just slow)"
    )]
    RequestTimeout {
        /// The pool's name.
        pool: String,
        /// The origin.
        origin: String,
        /// The deadline that passed.
        after: Duration,
        /// The variable that sets the limit (`SUPABASE_TIMEOUT`).
        var: String,
    },
    /// The pool was closed with [`crate::Pool::close`].
    #[error("{pool}: the pool is closed")]
    Closed {
        /// The pool's name.
        pool: String,
    },
    /// Opening a connection (TCP, TLS, HTTP/2 handshake) failed or took longer than
    /// `P_CONNECT_TIMEOUT`.
    #[error("{pool}: cannot connect to {origin}: {source}")]
    Connect {
        /// The pool's name.
        pool: String,
        /// The origin.
        origin: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
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

impl Error {
    /// Whether this is a timeout: the queue (`P_POOL_TIMEOUT`) or the request (`P_TIMEOUT`).
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::RequestTimeout { .. })
    }

    /// Whether the caller gave up waiting in the queue (`P_POOL_TIMEOUT`).
    #[must_use]
    pub fn is_pool_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// Whether opening a connection failed.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

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
