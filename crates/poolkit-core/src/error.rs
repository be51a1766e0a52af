//! The errors shared by every poolkit crate: the configuration error and the pool's own
//! failures (timeout, deadline, closed, connect).

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

/// A configuration value that is missing, malformed or contradicts another one.
///
/// Every variant names the environment variable (or the field, for values set in
/// code), so the message tells the operator exactly what to change. Values of secret
/// variables (passwords, keys, URLs with a password) are shown redacted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{var} is not set: {hint}")]
    Missing {
        /// The variable (or field) that is missing.
        var: String,
        /// What to set it to.
        hint: String,
    },
    /// A variable is set to a value that cannot be used.
    #[error("{var}={value:?} is invalid: expected {expected}")]
    Invalid {
        /// The variable (or field) that holds the bad value.
        var: String,
        /// The value as given (redacted when the variable is secret).
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// Two values contradict each other.
    #[error("{first} and {second} contradict each other: {reason}")]
    Conflict {
        /// The first variable, with its value (for example `DATABASE_POOL_MIN_IDLE=30`).
        first: String,
        /// The second variable, with its value.
        second: String,
        /// Why they cannot both hold, and what to do.
        reason: String,
    },
}

impl ConfigError {
    /// The name of the variable this error is about (the first one, for a conflict).
    #[must_use]
    pub fn var(&self) -> &str {
        match self {
            Self::Missing { var, .. } | Self::Invalid { var, .. } => var,
            Self::Conflict { first, .. } => first.split('=').next().unwrap_or(first),
        }
    }

    pub(crate) fn invalid(var: &str, value: &str, expected: &str) -> Self {
        Self::Invalid {
            var: var.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

/// A failure of the pool itself, the same in every adapter: the PostgreSQL, Redis and
/// HTTP pools' `Error` each embed it as `Error::Pool`, so one `match` (or one of the
/// methods below) reads all three the same way.
///
/// One meaning everywhere:
/// - [`PoolError::is_timeout`]: a time limit the pool enforces passed, either the acquire
///   timeout ([`PoolError::Timeout`], `P_POOL_TIMEOUT`) or a deadline
///   ([`PoolError::Deadline`]: a transaction's, a whole HTTP request's). A connect that
///   ran out of time is a [`PoolError::Connect`]: its cause is the server, not a limit to
///   raise.
/// - [`PoolError::timeout_var`]: the variable that sets the limit that passed
///   (`DATABASE_POOL_TIMEOUT`, `REDIS_POOL_TIMEOUT`, `SUPABASE_TIMEOUT`), when a variable
///   sets it.
/// - [`PoolError::is_pool_timeout`]: only the acquire timeout.
///
/// No message holds a password: targets are `host:port` (an HTTP pool's is the origin,
/// `https://host:port`).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool is exhausted: nothing came free within the acquire timeout.
    #[error(
        "pool `{pool}` exhausted: no {what} within {waited:.1?} (pool size {size}, {pending} other callers waiting); raise {size_var} or {timeout_var}, or hold connections for less time"
    )]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
        /// The ceiling that was reached.
        size: u32,
        /// What the caller waited for: `connection`, `command slot`, `connection to
        /// https://api.example.com:443`.
        what: String,
        /// Callers still waiting when this one gave up.
        pending: u32,
        /// The variable that raises the ceiling (`DATABASE_POOL_SIZE`, `MAX_POOL_SIZE`,
        /// `REDIS_MAX_IN_FLIGHT`).
        size_var: String,
        /// The variable that sets the acquire timeout (`DATABASE_POOL_TIMEOUT`), or what
        /// set it for this call (`get_timeout(…)`).
        timeout_var: String,
    },
    /// Work ran past its deadline (a transaction, which was rolled back and its
    /// connection closed; a whole HTTP request).
    #[error("pool `{pool}`: {what} ran past its {after:.1?} deadline{}", hint(.var.as_deref()))]
    Deadline {
        /// The pool's name.
        pool: String,
        /// What ran too long, and what became of it (`the transaction (rolled back)`,
        /// `the request to https://api.example.com:443`).
        what: String,
        /// The deadline.
        after: Duration,
        /// The variable that sets it (`SUPABASE_TIMEOUT`); `None` when the caller set it.
        var: Option<String>,
    },
    /// The pool was closed.
    #[error("pool `{pool}` is closed")]
    Closed {
        /// The pool's name.
        pool: String,
    },
    /// Connecting failed; `reason` is the server's (or the network's) answer.
    #[error("pool `{pool}`: cannot connect to {backend} at {target}: {reason}")]
    Connect {
        /// The pool's name.
        pool: String,
        /// What the pool connects to (`PostgreSQL`, `Redis`, `HTTP`).
        backend: &'static str,
        /// `host:port` (an HTTP pool's origin), never the password.
        target: String,
        /// The full error chain, as text.
        reason: String,
        /// The driver's error (downcast it to the adapter's type for details, such as
        /// `poolkit_postgres::ConnectError`).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A new connection could not log in with the secret from a rotating source (a
    /// password file, a token provider): the secret could not be read, or the server
    /// refused it. Connections opened earlier keep serving until their lifetime.
    #[error(
        "pool `{pool}`: cannot log in at {target} with the password from {source_name}: {reason}"
    )]
    Credentials {
        /// The pool's name.
        pool: String,
        /// `host:port` (never the password).
        target: String,
        /// Where the secret came from (`DATABASE_PASSWORD_FILE=/run/secrets/db`).
        source_name: String,
        /// The server's (or the file's, or the provider's) answer.
        reason: String,
        /// What failed (the driver's error).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The server stopped being the one the pool wants (a failover): it turned read-only
    /// or answered that it is no longer the primary (PostgreSQL SQLSTATE 25006, Redis
    /// `READONLY`), or it ended the session because it shuts down or crashed (PostgreSQL
    /// 57P01, 57P02, 57P03; Redis `MASTERDOWN`, `LOADING`, `UNBLOCKED`). The pool retired
    /// every connection to it at once and reconnects (resolving the name again, asking the
    /// Sentinels, trying the URL's hosts in order); the statement was not retried, so it
    /// ran at most once.
    #[error(
        "the primary moved: {reason}{}; the pool retired every connection to that server and reconnects; the {what} was not retried",
        code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default()
    )]
    PrimaryMoved {
        /// The SQLSTATE (`25006`, `57P01`, …); `None` for Redis.
        code: Option<String>,
        /// What the server's answer says about it.
        reason: &'static str,
        /// What was not retried: `statement`, `command`.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
}

fn hint(var: Option<&str>) -> String {
    var.map(|v| format!(" (raise {v} if the server is just slow)"))
        .unwrap_or_default()
}

impl PoolError {
    /// The acquire timeout of a pool configured by `config`, whose ceiling is `size` set by
    /// `size_var`.
    #[must_use]
    pub fn timeout(
        config: &crate::PoolConfig,
        waited: Duration,
        pending: u64,
        what: impl Into<String>,
    ) -> Self {
        Self::Timeout {
            pool: config.name.clone(),
            waited,
            size: config.ceiling(),
            what: what.into(),
            pending: u32::try_from(pending).unwrap_or(u32::MAX),
            size_var: config.ceiling_var(),
            timeout_var: config.var(crate::Knob::AcquireTimeout),
        }
    }

    /// A closed pool's error.
    #[must_use]
    pub fn closed(pool: &str) -> Self {
        Self::Closed {
            pool: pool.to_owned(),
        }
    }

    /// Whether a time limit the pool enforces passed: the acquire timeout or a deadline
    /// (see the type's documentation).
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Deadline { .. })
    }

    /// Whether the caller gave up waiting for the pool (the acquire timeout only).
    #[must_use]
    pub fn is_pool_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// Whether connecting failed.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// Whether the pool was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// Whether a rotating secret failed: see [`PoolError::Credentials`].
    #[must_use]
    pub fn is_credentials(&self) -> bool {
        matches!(self, Self::Credentials { .. })
    }

    /// Whether the server moved (a failover): see [`PoolError::PrimaryMoved`].
    #[must_use]
    pub fn is_primary_moved(&self) -> bool {
        matches!(self, Self::PrimaryMoved { .. })
    }

    /// The variable that sets the limit that passed, for a timeout: the acquire timeout's
    /// (`DATABASE_POOL_TIMEOUT`) or the deadline's (`SUPABASE_TIMEOUT`). `None` for other
    /// errors and for a deadline the caller set in code.
    #[must_use]
    pub fn timeout_var(&self) -> Option<&str> {
        match self {
            Self::Timeout { timeout_var, .. } => Some(timeout_var),
            Self::Deadline { var, .. } => var.as_deref(),
            _ => None,
        }
    }
}

/// The methods every adapter's `Error` shares, answered from the [`PoolError`] it embeds:
/// the same meaning of [`AdapterError::is_timeout`] and [`AdapterError::timeout_var`] for
/// PostgreSQL, Redis and HTTP.
pub trait AdapterError {
    /// The pool failure this error is, if it is one.
    fn pool_error(&self) -> Option<&PoolError>;

    /// As [`PoolError::is_timeout`]: the acquire timeout or a deadline passed.
    fn is_timeout(&self) -> bool {
        self.pool_error().is_some_and(PoolError::is_timeout)
    }

    /// As [`PoolError::is_pool_timeout`]: the acquire timeout passed.
    fn is_pool_timeout(&self) -> bool {
        self.pool_error().is_some_and(PoolError::is_pool_timeout)
    }

    /// As [`PoolError::is_connect`]: connecting failed.
    fn is_connect(&self) -> bool {
        self.pool_error().is_some_and(PoolError::is_connect)
    }

    /// As [`PoolError::is_closed`]: the pool was closed.
    fn is_closed(&self) -> bool {
        self.pool_error().is_some_and(PoolError::is_closed)
    }

    /// As [`PoolError::timeout_var`]: the variable that sets the limit that passed.
    fn timeout_var(&self) -> Option<&str> {
        self.pool_error().and_then(PoolError::timeout_var)
    }

    /// As [`PoolError::is_credentials`]: a rotating secret failed.
    fn is_credentials(&self) -> bool {
        self.pool_error().is_some_and(PoolError::is_credentials)
    }

    /// As [`PoolError::is_primary_moved`]: the server moved (a failover).
    fn is_primary_moved(&self) -> bool {
        self.pool_error().is_some_and(PoolError::is_primary_moved)
    }
}

/// Implements [`AdapterError`] for an adapter's `Error` whose `Pool` variant holds a
/// [`PoolError`], and gives it the same inherent methods (`is_timeout`, `is_pool_timeout`,
/// `is_connect`, `is_closed`, `timeout_var`, `pool_error`), so callers need no import.
#[macro_export]
macro_rules! adapter_error {
    ($error:ty) => {
        impl $crate::AdapterError for $error {
            fn pool_error(&self) -> Option<&$crate::PoolError> {
                match self {
                    Self::Pool(e) => Some(e),
                    _ => None,
                }
            }
        }

        impl $error {
            /// The pool failure this error is, if it is one (see [`poolkit_core::PoolError`]).
            #[must_use]
            pub fn pool_error(&self) -> Option<&$crate::PoolError> {
                $crate::AdapterError::pool_error(self)
            }

            /// Whether a time limit the pool enforces passed: the acquire timeout or a
            /// deadline ([`poolkit_core::PoolError::is_timeout`]).
            #[must_use]
            pub fn is_timeout(&self) -> bool {
                $crate::AdapterError::is_timeout(self)
            }

            /// Whether the caller gave up waiting for the pool (the acquire timeout only).
            #[must_use]
            pub fn is_pool_timeout(&self) -> bool {
                $crate::AdapterError::is_pool_timeout(self)
            }

            /// Whether connecting failed.
            #[must_use]
            pub fn is_connect(&self) -> bool {
                $crate::AdapterError::is_connect(self)
            }

            /// Whether the pool was closed.
            #[must_use]
            pub fn is_closed(&self) -> bool {
                $crate::AdapterError::is_closed(self)
            }

            /// Whether a rotating secret failed
            /// ([`poolkit_core::PoolError::Credentials`]).
            #[must_use]
            pub fn is_credentials(&self) -> bool {
                $crate::AdapterError::is_credentials(self)
            }

            /// Whether the server moved, a failover
            /// ([`poolkit_core::PoolError::PrimaryMoved`]).
            #[must_use]
            pub fn is_primary_moved(&self) -> bool {
                $crate::AdapterError::is_primary_moved(self)
            }

            /// The variable that sets the limit that passed, for a timeout
            /// ([`poolkit_core::PoolError::timeout_var`]).
            #[must_use]
            pub fn timeout_var(&self) -> Option<&str> {
                $crate::AdapterError::timeout_var(self)
            }
        }
    };
}
