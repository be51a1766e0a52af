//! Running behind a transaction-mode pooler (PgBouncer, Supavisor on port 6543): which
//! pooler sits in front, and warnings for statements that leave session state behind. The
//! query path without named prepared statements is in `client.rs`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_postgres::error::SqlState;

/// Which kind of server-side pooler sits between the pool and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Pooler {
    /// PostgreSQL itself, or a pooler in session mode that keeps one server connection
    /// per client connection: everything works.
    #[default]
    None,
    /// A session-mode pooler (Supavisor on 5432): like `None`, but connections may be
    /// shared over time, so session state is warned about.
    Session,
    /// A transaction-mode pooler (PgBouncer `pool_mode=transaction`, Supavisor on 6543):
    /// each transaction may run on a different server connection, so named prepared
    /// statements break. Queries go as unnamed statements with typed parameters.
    Transaction,
}

impl Pooler {
    /// `none`, `session` or `transaction`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Session => "session",
            Self::Transaction => "transaction",
        }
    }

    /// Parses `none` / `session` / `transaction` (case-insensitive).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "direct" | "off" => Some(Self::None),
            "session" => Some(Self::Session),
            "transaction" => Some(Self::Transaction),
            _ => None,
        }
    }
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Pooler {
    const fn to_u8(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Session => 1,
            Self::Transaction => 2,
        }
    }

    const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Session,
            2 => Self::Transaction,
            _ => Self::None,
        }
    }
}

/// The pooler mode a pool's queries follow now: the configured one, until a server
/// answer shows a transaction-mode pooler in front (then transaction, for good).
#[derive(Debug)]
pub(crate) struct PoolerMode {
    mode: AtomicU8,
    /// The variable that sets the mode (`DATABASE_POOLER`), for the log line.
    var: String,
}

impl PoolerMode {
    pub(crate) fn new(pooler: Pooler, var: String) -> Self {
        Self {
            mode: AtomicU8::new(pooler.to_u8()),
            var,
        }
    }

    /// The mode in force.
    pub(crate) fn get(&self) -> Pooler {
        Pooler::from_u8(self.mode.load(Ordering::Acquire))
    }

    /// Whether the mode in force is transaction.
    pub(crate) fn transaction(&self) -> bool {
        self.get() == Pooler::Transaction
    }

    /// Called with the error of a statement that went as a named prepared statement
    /// poolkit made (tokio-postgres's `s<N>`, or a [`crate::Statement`] prepared here).
    /// SQLSTATE 26000 (the statement does not exist: the Bind reached another server
    /// connection than the Parse) or 42P05 (a statement of that name already exists: the
    /// Parse reached a connection another client prepared on) means a transaction-mode
    /// pooler sits in front; either way the statement never ran. Switches the pool to
    /// transaction mode (logged once) and returns true: the caller runs it again, unnamed.
    pub(crate) fn refused(&self, pool: &str, e: &tokio_postgres::Error) -> bool {
        let Some(code) = e.code() else { return false };
        if *code != SqlState::INVALID_SQL_STATEMENT_NAME && *code != SqlState::DUPLICATE_PSTATEMENT
        {
            return false;
        }
        let before = self
            .mode
            .swap(Pooler::Transaction.to_u8(), Ordering::AcqRel);
        if before != Pooler::Transaction.to_u8() {
            let server = e
                .as_db_error()
                .map_or_else(String::new, |d| format!(" ({})", d.message()));
            tracing::warn!(
                pool = %pool,
                "a named prepared statement failed with SQLSTATE {}{server}: a transaction-mode pooler (PgBouncer, Supavisor) is in front; pool `{pool}` now runs every statement unnamed (the statement was run again). Set {}=transaction to start in this mode",
                code.code(),
                self.var
            );
        }
        true
    }
}

/// What kind of session state a statement leaves behind, if any.
#[must_use]
pub fn session_state(sql: &str) -> Option<&'static str> {
    let s = sql.trim_start().to_ascii_lowercase();
    let starts = |p: &str| s.starts_with(p);
    if (starts("set ") && !starts("set local ") && !starts("set transaction ")) || starts("reset ")
    {
        Some("SET without LOCAL changes the server connection for whoever uses it next")
    } else if starts("listen ") {
        Some("LISTEN needs a session; notifications will not reach this client")
    } else if starts("prepare ") {
        Some("PREPARE creates a named statement on one server connection only")
    } else if s.contains("pg_advisory_lock(") || s.contains("pg_try_advisory_lock(") {
        Some("session advisory locks stay on a server connection; use pg_advisory_xact_lock")
    } else if starts("create temp") || starts("create temporary") {
        Some("temporary tables live on one server connection only")
    } else if s.contains("with hold") {
        Some("a cursor WITH HOLD outlives the transaction")
    } else {
        None
    }
}

/// Warns once per pool and kind about statements that leave session state behind a pooler.
#[derive(Debug, Default)]
pub(crate) struct SessionWarnings {
    seen: Mutex<HashSet<&'static str>>,
}

impl SessionWarnings {
    pub(crate) fn check(&self, pool: &str, pooler: Pooler, sql: &str) {
        if pooler == Pooler::None {
            return;
        }
        if let Some(kind) = session_state(sql) {
            let first = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(kind);
            if first {
                tracing::warn!(pool = %pool, pooler = %pooler, "{kind} (behind a {pooler}-mode pooler)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_is_recognised() {
        assert!(session_state("SET search_path = app").is_some());
        assert!(session_state("  set statement_timeout to 5").is_some());
        assert!(session_state("SET LOCAL statement_timeout = 5").is_none());
        assert!(session_state("LISTEN jobs").is_some());
        assert!(session_state("select pg_advisory_lock(1)").is_some());
        assert!(session_state("select pg_advisory_xact_lock(1)").is_none());
        assert!(session_state("PREPARE q AS SELECT 1").is_some());
        assert!(session_state("SELECT 1").is_none());
        assert_eq!(Pooler::parse("Transaction"), Some(Pooler::Transaction));
        assert_eq!(Pooler::parse("bogus"), None);
    }
}
