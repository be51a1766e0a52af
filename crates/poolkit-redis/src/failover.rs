//! "The server moved" as one event for the whole Redis pool: a reply of READONLY (the
//! server turned replica), MASTERDOWN (a replica lost its master), LOADING (a restarted
//! server or a new replica loading its data) or UNBLOCKED (a master turned replica released
//! its BLPOP waiters) retires every shared and exclusive connection at once; new ones open
//! through the connector, which resolves the name again or asks the Sentinels for the
//! master. Nothing is retried: the caller gets `PoolError::PrimaryMoved`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use poolkit_core::engine::Engine;
use poolkit_core::metrics::ErrorKind as Kind;
use poolkit_core::{Alert, Severity, Telemetry};
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::exclusive::Manager;
use crate::shared::{Lease, Shared};

/// The least time between two pool-wide reconnects: a name that still points at a replica
/// is not reconnected to in a loop.
const SPACING: Duration = Duration::from_millis(100);
/// How long after a move health mentions it.
const REPORT_FOR: Duration = Duration::from_secs(60);

/// What an error says about the server, when it says the server moved.
#[must_use]
pub(crate) fn moved_reason(e: &RedisError) -> Option<&'static str> {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly) => {
            Some("READONLY: the server is a replica now; the command did not run")
        }
        ErrorKind::Server(ServerErrorKind::MasterDown) => Some(
            "MASTERDOWN: the server is a replica that lost its master; the command did not run",
        ),
        ErrorKind::Server(ServerErrorKind::BusyLoading) => {
            Some("LOADING: the server is loading its data; the command did not run")
        }
        _ if e.code() == Some("UNBLOCKED") => Some(
            "UNBLOCKED: the server turned replica and released its blocked clients; the command did not complete",
        ),
        _ => None,
    }
}

/// One pool's view of failovers.
#[derive(Debug)]
pub(crate) struct Failover {
    pool: String,
    shared: Arc<Shared>,
    exclusive: Engine<Manager>,
    telemetry: Arc<Telemetry>,
    last: Mutex<Option<(Instant, &'static str)>>,
}

impl Failover {
    pub(crate) fn new(
        pool: &str,
        shared: Arc<Shared>,
        exclusive: Engine<Manager>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool: pool.to_owned(),
            shared,
            exclusive,
            telemetry,
            last: Mutex::new(None),
        })
    }

    /// A shared command on `lease` failed with `e`.
    pub(crate) fn shared_error(&self, lease: &Lease, e: &RedisError) {
        if let Some(why) = moved_reason(e)
            && self.shared.is_current(lease)
        {
            self.moved(why);
        }
    }

    /// A command on an exclusive connection of `generation` failed with `e`.
    pub(crate) fn exclusive_error(&self, generation: u64, e: &RedisError) {
        if let Some(why) = moved_reason(e)
            && generation == self.exclusive.generation()
        {
            self.moved(why);
        }
    }

    /// The sentinels switched the master (`+switch-master`, `payload` naming the old and
    /// new addresses).
    pub(crate) fn switched(&self, payload: &str) {
        tracing::info!(pool = %self.pool, switch = %payload, "the Redis Sentinels switched the master");
        self.moved("+switch-master: the Sentinels promoted another master");
    }

    fn moved(&self, why: &'static str) {
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|(at, _)| at.elapsed() < SPACING) {
                return;
            }
            *last = Some((Instant::now(), why));
        }
        self.shared.reconnect_all();
        self.exclusive.retire_all(self.exclusive.generation());
        self.telemetry.error(Kind::ServerMoved);
        tracing::warn!(pool = %self.pool, "the server moved ({why}): retiring every shared and exclusive connection and reconnecting");
    }

    /// An informational alert for a minute after a move.
    pub(crate) fn alert(&self) -> Option<Alert> {
        let (at, why) = (*self.last.lock().unwrap_or_else(PoisonError::into_inner))?;
        (at.elapsed() < REPORT_FOR).then(|| {
            Alert::new(
                Severity::Info,
                &self.pool,
                format!(
                    "the server moved {:.0} s ago ({why}): every connection was retired and the pool reconnected",
                    at.elapsed().as_secs_f64()
                ),
                "nothing to do if this was a planned failover; Redis Sentinel (P_SENTINELS) finds the new master without a DNS change".to_owned(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replies_of_a_move() {
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "READONLY",
            "You can't write against a read only replica.".to_owned(),
        ));
        assert!(moved_reason(&readonly).is_some());
        let other = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
        assert!(moved_reason(&other).is_none());
    }
}
