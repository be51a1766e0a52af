//! The engine's state and every change to it, kept behind one lock and free of I/O, clocks
//! and tasks, so the loom tests can drive exactly this code. The rest of `engine/` does
//! the waiting, connecting and closing around it.
//!
//! Invariants (checked by `check` in debug builds and by the model tests):
//! - `waiters` is empty whenever `idle` is not: a connection never sits idle while
//!   someone waits, so FIFO needs no other gate;
//! - `open` (connected, idle or in use) `= idle.len() + used`;
//! - `open + connecting` exceeds the ceiling only after a cut, and then only until the
//!   connections above it are returned.

use crate::waiters::{Ticket, WaitQueue};

/// What a waiter receives.
pub(crate) enum Handed<C> {
    /// A connection, now counted as used.
    Conn(C),
    /// The pool closed while it waited.
    Closed,
}

/// The outcome of [`State::take`].
pub(crate) enum Take<C> {
    /// An idle connection, now counted as used.
    Idle(C),
    /// Queued: wait on the ticket; start `connects` new connections first. `wake`: every
    /// connect under way is sleeping between attempts, so none may be tried for this
    /// caller in time; the caller cuts one back-off short unless one ends soon enough.
    Wait {
        ticket: Ticket<Handed<C>>,
        connects: u32,
        wake: bool,
    },
    /// The pool is closed.
    Closed,
}

/// What became of a returned connection.
pub(crate) enum Put<C> {
    /// Idle, or handed to the oldest waiter.
    Kept,
    /// To be closed by the caller (outside the lock); `connects` replacements to start for
    /// waiters.
    Close { conn: C, connects: u32 },
}

/// Why [`State::put`] closes a connection it would otherwise keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surplus {
    /// Above the (cut) ceiling.
    Ceiling,
    /// Above `pool_size` with nobody waiting: a burst connection.
    Overflow,
    /// The pool is closing.
    Closed,
}

/// Connections, waiters and counts of one pool.
pub(crate) struct State<C> {
    /// Idle connections, most recently returned last (taken first).
    pub(crate) idle: Vec<C>,
    pub(crate) waiters: WaitQueue<Handed<C>>,
    /// Connected: idle or in use.
    pub(crate) open: u32,
    /// Connects started and not yet finished.
    pub(crate) connecting: u32,
    /// Of `connecting`, those sleeping in back-off after a failed attempt.
    pub(crate) backing_off: u32,
    /// Checked out.
    pub(crate) used: u32,
    pub(crate) pool_size: u32,
    pub(crate) max_size: u32,
    pub(crate) closed: bool,
}

impl<C> State<C> {
    pub(crate) fn new(pool_size: u32, max_size: u32) -> Self {
        Self {
            idle: Vec::new(),
            waiters: WaitQueue::default(),
            open: 0,
            connecting: 0,
            backing_off: 0,
            used: 0,
            pool_size,
            max_size,
            closed: false,
        }
    }

    /// Connects to start now so every waiter can be served, within the ceiling.
    fn wanted(&self) -> u32 {
        if self.closed {
            return 0;
        }
        let waiters = u32::try_from(self.waiters.len()).unwrap_or(u32::MAX);
        let room = self.max_size.saturating_sub(self.open + self.connecting);
        waiters.saturating_sub(self.connecting).min(room)
    }

    /// Reserves up to `n` connects (counted as connecting until [`State::connected`] or
    /// [`State::connect_failed`]); returns how many were reserved.
    pub(crate) fn reserve(&mut self, n: u32) -> u32 {
        let room = self.max_size.saturating_sub(self.open + self.connecting);
        let n = if self.closed { 0 } else { n.min(room) };
        self.connecting += n;
        n
    }

    fn reserve_wanted(&mut self) -> u32 {
        let n = self.wanted();
        self.connecting += n;
        n
    }

    /// A caller asks for a connection.
    pub(crate) fn take(&mut self) -> Take<C> {
        if self.closed {
            return Take::Closed;
        }
        if let Some(conn) = self.idle.pop() {
            self.used += 1;
            return Take::Idle(conn);
        }
        let ticket = self.waiters.push();
        let connects = self.reserve_wanted();
        // A connect in back-off is no attempt for this caller: wake one when the others
        // under way cannot serve every waiter.
        let trying = self.connecting - self.backing_off;
        let wake = connects == 0
            && self.backing_off > 0
            && u32::try_from(self.waiters.len()).unwrap_or(u32::MAX) > trying;
        Take::Wait {
            ticket,
            connects,
            wake,
        }
    }

    /// Keeps `conn` as open: to the oldest waiter, else idle, else (above a limit) back to
    /// the caller to close.
    fn place(&mut self, conn: C) -> Result<(), (C, Surplus)> {
        if self.closed {
            return Err((conn, Surplus::Closed));
        }
        if self.open > self.max_size {
            return Err((conn, Surplus::Ceiling));
        }
        match self.waiters.give(Handed::Conn(conn)) {
            Ok(()) => {
                self.used += 1;
                Ok(())
            }
            Err(Handed::Conn(conn)) if self.open > self.pool_size => Err((conn, Surplus::Overflow)),
            Err(Handed::Conn(conn)) => {
                self.idle.push(conn);
                Ok(())
            }
            Err(Handed::Closed) => Ok(()),
        }
    }

    fn closing(&mut self, conn: C) -> Put<C> {
        self.open -= 1;
        Put::Close {
            conn,
            connects: self.reserve_wanted(),
        }
    }

    /// A checked-out connection comes back; `keep` is false when it must be closed
    /// (broken, expired, used up).
    pub(crate) fn put(&mut self, conn: C, keep: bool) -> (Put<C>, Option<Surplus>) {
        self.used -= 1;
        if !keep {
            return (self.closing(conn), None);
        }
        match self.place(conn) {
            Ok(()) => (Put::Kept, None),
            Err((conn, why)) => (self.closing(conn), Some(why)),
        }
    }

    /// A new connection is ready.
    pub(crate) fn connected(&mut self, conn: C) -> (Put<C>, Option<Surplus>) {
        self.connecting -= 1;
        self.open += 1;
        match self.place(conn) {
            Ok(()) => (Put::Kept, None),
            Err((conn, why)) => (self.closing(conn), Some(why)),
        }
    }

    /// A connect failed; `true` when it should be retried (someone still waits for it, or
    /// the pool is below `floor`, its minimum of idle connections), in which case it stays
    /// reserved and counts as backing off until [`State::retrying`].
    pub(crate) fn connect_failed(&mut self, floor: u32) -> bool {
        self.connecting -= 1;
        if self.wanted() > 0 || (!self.closed && self.open + self.connecting < floor) {
            self.connecting += 1;
            self.backing_off += 1;
            return true;
        }
        false
    }

    /// A connect's back-off is over (slept out, or woken for a caller).
    pub(crate) fn retrying(&mut self) {
        self.backing_off -= 1;
    }

    /// Gives back `n` reserved connects that were never started.
    pub(crate) fn unreserve(&mut self, n: u32) {
        self.connecting -= n;
    }

    /// A checked-out connection is closed without coming back (failed validation, or its
    /// caller went away mid-validation). Returns connects to start for waiters.
    pub(crate) fn discard(&mut self) -> u32 {
        self.used -= 1;
        self.open -= 1;
        self.reserve_wanted()
    }

    /// Idle connections closed by upkeep (idle timeout, lifetime) leave the count.
    /// Returns connects to start for waiters.
    pub(crate) fn forget_idle(&mut self, n: u32) -> u32 {
        self.open -= n;
        self.reserve_wanted()
    }

    /// New sizes. Returns idle connections to close (above the new ceiling) and connects
    /// to start for waiters (after a raise).
    pub(crate) fn resize(&mut self, pool_size: u32, max_size: u32) -> (Vec<C>, u32) {
        self.pool_size = pool_size;
        self.max_size = max_size;
        let mut surplus = Vec::new();
        while self.open > self.max_size {
            // Oldest-returned first: the front of the stack.
            if self.idle.is_empty() {
                break;
            }
            surplus.push(self.idle.remove(0));
            self.open -= 1;
        }
        (surplus, self.reserve_wanted())
    }

    /// Closes the pool: waiters are told, idle connections are returned to be closed.
    pub(crate) fn close(&mut self) -> Vec<C> {
        self.closed = true;
        while self.waiters.give(Handed::Closed).is_ok() {}
        let idle = std::mem::take(&mut self.idle);
        self.open -= u32::try_from(idle.len()).unwrap_or(u32::MAX);
        idle
    }

    /// Checks the invariants (debug builds and tests).
    pub(crate) fn check(&self) {
        debug_assert!(self.idle.is_empty() || self.waiters.is_empty());
        debug_assert!(self.backing_off <= self.connecting);
        debug_assert_eq!(
            self.open as usize,
            self.idle.len() + self.used as usize,
            "open = idle + used"
        );
    }
}

#[cfg(all(test, not(poolkit_loom)))]
mod tests {
    use super::*;

    fn waits(s: &mut State<u32>) -> (u32, bool) {
        match s.take() {
            Take::Wait { connects, wake, .. } => (connects, wake),
            _ => unreachable!("nothing idle"),
        }
    }

    #[test]
    fn a_caller_wakes_a_connect_in_back_off_only_when_no_attempt_serves_it() {
        let mut s: State<u32> = State::new(1, 1);
        // The first caller reserves the only connect; nothing sleeps yet.
        assert_eq!(waits(&mut s), (1, false));
        // It fails and backs off (a caller still waits, so it is retried).
        assert!(s.connect_failed(0));
        assert_eq!((s.connecting, s.backing_off), (1, 1));
        // A second caller: no room for another connect, and the one under way sleeps:
        // it is woken for this caller.
        assert_eq!(waits(&mut s), (0, true));
        // Awake and trying: a third caller wakes nothing.
        s.retrying();
        assert_eq!(waits(&mut s), (0, false));
        s.check();
    }
}
