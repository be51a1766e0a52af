//! The configuration error shared by every poolkit crate.

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
