//! `Tracked`: a pooled connection with what the engine needs to know about it.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::metrics::CloseReason;

/// The clock of the checkout path: `quanta` reads the CPU's time-stamp counter, several
/// times cheaper than `clock_gettime` on virtual machines, where a `std` `Instant::now`
/// was a third of a no-I/O checkout.
pub(crate) type Clock = quanta::Instant;

pub use crate::backoff::LIFETIME_JITTER;
use crate::backoff::jittered;

/// A pooled connection: when it was opened and expires, when it was last returned, how
/// many times it was checked out, and whether it must be retired when it comes back.
#[derive(Debug)]
pub struct Tracked<C> {
    conn: C,
    created: Clock,
    expires: Option<Clock>,
    pub(crate) last_used: Clock,
    pub(crate) uses: u64,
    pub(crate) retire: Option<CloseReason>,
    /// The pool's generation when the connect began (see `Engine::retire_all`).
    pub(crate) generation: u64,
}

impl<C> Tracked<C> {
    pub(crate) fn new(conn: C, max_lifetime: Option<Duration>, generation: u64) -> Self {
        let now = Clock::now();
        Self {
            conn,
            created: now,
            expires: max_lifetime.map(|lt| now + jittered(lt)),
            last_used: now,
            uses: 0,
            retire: None,
            generation,
        }
    }

    /// The pool's generation when this connection was opened: connections of a generation
    /// older than the pool's are retired (`Engine::retire_all`, a failover).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The connection itself, for one taken out of the pool.
    pub(crate) fn into_inner(self) -> C {
        self.conn
    }

    /// How old the connection is.
    #[must_use]
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// How long it has been idle (since its last return to the pool).
    #[must_use]
    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// How many times it was checked out, this time included.
    #[must_use]
    pub fn uses(&self) -> u64 {
        self.uses
    }

    pub(crate) fn expired(&self, now: Clock) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }

    pub(crate) fn idle_since(&self, now: Clock) -> Duration {
        now.saturating_duration_since(self.last_used)
    }

    /// Marks the connection to be closed instead of reused when it goes back to the pool
    /// (the first reason given wins).
    pub fn retire(&mut self, reason: CloseReason) {
        self.retire.get_or_insert(reason);
    }

    /// The wrapped connection.
    #[must_use]
    pub fn inner(&self) -> &C {
        &self.conn
    }

    /// The wrapped connection, mutably.
    pub fn inner_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

impl<C> Deref for Tracked<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for Tracked<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}
