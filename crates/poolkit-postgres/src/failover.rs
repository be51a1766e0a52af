//! "The server moved" as one event for the whole pool. A statement that fails with SQLSTATE
//! 25006 (read-only: a standby, or a demoted primary), a session the server ends with
//! 57P01 / 57P02 / 57P03 (shutdown, crash, not accepting connections), or a connect that
//! finds a standby where a write pool wants a primary, retires every connection of the pool
//! at once (idle ones now, busy ones when returned, connects under way redone); new
//! connections resolve the name again and go through `target_session_attrs`. Nothing is
//! retried: the caller gets [`crate::PoolError::PrimaryMoved`].

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use poolkit_core::metrics::ErrorKind;
use poolkit_core::{Alert, Severity};
use tokio_postgres::error::SqlState;

use crate::pool::Inner;

/// How long after a move health mentions it.
const REPORT_FOR: Duration = Duration::from_secs(60);

/// What a SQLSTATE says about the server, when it says the server moved.
#[must_use]
pub(crate) fn moved_reason(code: &SqlState) -> Option<&'static str> {
    Some(if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        "the server is read-only now (a standby, or a primary that was demoted); the statement did not run"
    } else if *code == SqlState::ADMIN_SHUTDOWN {
        "the server ended the session (shutting down for a failover or restart, or pg_terminate_backend)"
    } else if *code == SqlState::CRASH_SHUTDOWN {
        "the server crashed and ended every session"
    } else if *code == SqlState::CANNOT_CONNECT_NOW {
        "the server does not accept connections now (shutting down, starting up or in recovery)"
    } else {
        return None;
    })
}

/// One pool's view of failovers: the engine it retires, and the last move for health.
#[derive(Debug)]
pub(crate) struct Failover {
    pool: String,
    /// A read pool (a read replica, or `target_session_attrs` asking for a standby): a
    /// read-only error is what its server is, not a move.
    for_reads: bool,
    inner: OnceLock<Weak<Inner>>,
    last: Mutex<Option<(Instant, String)>>,
}

impl Failover {
    pub(crate) fn new(pool: &str, for_reads: bool) -> Arc<Self> {
        Arc::new(Self {
            pool: pool.to_owned(),
            for_reads,
            inner: OnceLock::new(),
            last: Mutex::new(None),
        })
    }

    /// Connects the tracker to its pool once the pool is built.
    pub(crate) fn attach(&self, inner: &Arc<Inner>) {
        let _ = self.inner.set(Arc::downgrade(inner));
    }

    /// The pool's generation now (0 while it is being built).
    pub(crate) fn generation(&self) -> u64 {
        self.inner
            .get()
            .and_then(Weak::upgrade)
            .map_or(0, |inner| inner.engine.generation())
    }

    /// Whether `code` means the server moved, for this pool.
    pub(crate) fn is_move(&self, code: &SqlState) -> bool {
        moved_reason(code).is_some()
            && !(self.for_reads && *code == SqlState::READ_ONLY_SQL_TRANSACTION)
    }

    /// A statement on a connection of generation `generation` failed with `e`: when its
    /// code says the server moved, the pool retires every connection.
    pub(crate) fn seen(&self, e: &tokio_postgres::Error, generation: u64) {
        if let Some(code) = e.code()
            && self.is_move(code)
        {
            let why = moved_reason(code).unwrap_or_default();
            self.moved(generation, &format!("SQLSTATE {}: {why}", code.code()));
        }
    }

    /// A connect (of `generation`) found the server moved (`why`: 57P03, or a standby where
    /// a write pool wants a primary): the connections still open go to a server that is
    /// not the one to use (a smart shutdown waits for them to end). Nothing to do when none
    /// are open (a server starting up refuses connects with 57P03 too).
    pub(crate) fn moved_at_connect(&self, generation: u64, why: &str) {
        let open = self
            .inner
            .get()
            .and_then(Weak::upgrade)
            .map_or(0, |inner| inner.engine.telemetry().open());
        if open > 0 {
            self.moved(generation, why);
        }
    }

    /// The server that connections of `generation` talk to moved (`why`): retire them all,
    /// once per generation however many callers see it.
    pub(crate) fn moved(&self, generation: u64, why: &str) {
        let Some(inner) = self.inner.get().and_then(Weak::upgrade) else {
            return;
        };
        if !inner.engine.retire_all(generation) {
            return;
        }
        inner.retire_shared();
        inner.engine.telemetry().error(ErrorKind::ServerMoved);
        let open = inner.engine.telemetry().open();
        tracing::warn!(pool = %self.pool, open, "the server moved ({why}): retiring every connection of the pool and reconnecting");
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), why.to_owned()));
    }

    /// An informational alert for a minute after a move.
    pub(crate) fn alert(&self) -> Option<Alert> {
        let (at, why) = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        (at.elapsed() < REPORT_FOR).then(|| {
            Alert::new(
                Severity::Info,
                &self.pool,
                format!(
                    "the server moved {:.0} s ago ({why}): every connection was retired and the pool reconnected",
                    at.elapsed().as_secs_f64()
                ),
                "nothing to do if this was a planned failover; with several hosts in the URL, target_session_attrs=read-write keeps writes off standbys".to_owned(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_of_a_move() {
        for code in [
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ] {
            assert!(moved_reason(&code).is_some(), "{code:?}");
        }
        assert!(moved_reason(&SqlState::UNIQUE_VIOLATION).is_none());
        let reads = Failover::new("r", true);
        assert!(
            !reads.is_move(&SqlState::READ_ONLY_SQL_TRANSACTION),
            "expected on a replica"
        );
        assert!(reads.is_move(&SqlState::ADMIN_SHUTDOWN));
        assert!(Failover::new("w", false).is_move(&SqlState::READ_ONLY_SQL_TRANSACTION));
    }
}
