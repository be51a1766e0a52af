//! The CLI's errors and the exit code each maps to.

use poolkit_core::ConfigError;
use thiserror::Error;

/// Exit code when a check found a problem (a budget that does not fit, a server that
/// does not answer).
pub(crate) const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code for bad flags (clap uses the same).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code for a bad environment variable.
pub(crate) const EXIT_CONFIG: u8 = 3;
/// Exit code when a server cannot be reached or an operation fails.
pub(crate) const EXIT_FAILED: u8 = 4;

/// Everything that stops a subcommand. Messages never hold a password.
#[derive(Debug, Error)]
pub(crate) enum Error {
    /// A flag value is not usable (beyond what clap checks).
    #[error("{0}")]
    Usage(String),
    /// An environment variable is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A server could not be reached or answered with an error.
    #[error("{0}")]
    Failed(String),
    /// `poolctl check` found problems (already printed).
    #[error("{0} of {1} pools failed their checks (see above)")]
    CheckFailed(usize, usize),
    /// `poolctl check` could not reach a server (the reason is printed above).
    #[error("{0} of {1} pools: the server could not be reached (see above)")]
    Unreachable(usize, usize),
}

impl Error {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Config(_) => EXIT_CONFIG,
            Self::Failed(_) | Self::Unreachable(..) => EXIT_FAILED,
            Self::CheckFailed(..) => EXIT_CHECK_FAILED,
        }
    }
}

impl Error {
    /// A PostgreSQL pool error, naming the variable that holds the URL.
    pub(crate) fn postgres(prefix: &str, e: poolkit_postgres::Error) -> Self {
        match e {
            poolkit_postgres::Error::Config(c) => Self::Config(c),
            other => Self::Failed(format!("{other} (URL from {prefix}_URL)")),
        }
    }

    /// A Redis pool error, naming the variables that say where Redis is.
    pub(crate) fn redis(prefix: &str, e: poolkit_redis::Error) -> Self {
        match e {
            poolkit_redis::Error::Config(c) => Self::Config(c),
            other => Self::Failed(format!(
                "{other} (address from {prefix}_URL, or {prefix}_HOST / {prefix}_PORT)"
            )),
        }
    }
}
