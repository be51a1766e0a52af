//! `Gate`: a first-come-first-served cap on how many callers hold a place at once (Redis
//! commands in flight, HTTP connections or streams per origin), with one deadline over
//! the whole wait. Built on the same waiter queue as the pool engine: a place given back
//! goes straight to the oldest waiter.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use thiserror::Error;

use crate::sync::{Arc, Mutex, lock};
use crate::waiters::{Ticket, WaitQueue};

/// Why [`Gate::enter`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GateError {
    /// No place came free before the deadline.
    #[error("no place came free before the deadline")]
    Timeout,
    /// The gate was closed.
    #[error("the gate is closed")]
    Closed,
}

struct GateState {
    in_use: usize,
    limit: usize,
    closed: bool,
    /// `true` hands a place over; `false` tells the waiter the gate closed.
    waiters: WaitQueue<bool>,
}

impl GateState {
    /// A place is given back: to the oldest waiter when the limit allows, else freed.
    fn release(&mut self) {
        if !self.closed && self.in_use <= self.limit && self.waiters.give(true).is_ok() {
            return; // handed over: still in use
        }
        self.in_use -= 1;
    }

    /// Serves waiters while the limit has room (after a raise).
    fn fill(&mut self) {
        while !self.closed && self.in_use < self.limit && !self.waiters.is_empty() {
            if self.waiters.give(true).is_ok() {
                self.in_use += 1;
            }
        }
    }
}

/// A FIFO cap with a deadline. Cheap to clone (clones share the gate).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let gate = poolkit_core::Gate::new(1);
/// let place = gate.try_enter().expect("room for one");
/// assert!(gate.try_enter().is_none());
/// let waited = gate.enter(Duration::from_millis(10)).await;
/// assert_eq!(waited.unwrap_err(), poolkit_core::GateError::Timeout);
/// drop(place);
/// assert!(gate.enter(Duration::from_millis(10)).await.is_ok());
/// # }
/// ```
#[derive(Clone)]
pub struct Gate {
    state: Arc<Mutex<GateState>>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("Gate")
            .field("in_use", &s.in_use)
            .field("limit", &s.limit)
            .field("pending", &s.waiters.len())
            .field("closed", &s.closed)
            .finish()
    }
}

/// A place held in a [`Gate`]; dropping it gives the place back (to the oldest waiter).
pub struct Place {
    state: Arc<Mutex<GateState>>,
}

impl fmt::Debug for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Place")
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.release();
        let wake = s.waiters.wakers();
        drop(s);
        drop(wake);
    }
}

/// Leaves the queue when a waiting `enter` is dropped or times out, handing on a place it
/// was given in the meantime.
struct Leave<'a> {
    gate: &'a Gate,
    ticket: Option<Ticket<bool>>,
}

impl Leave<'_> {
    /// Leaves the queue; `true` when a place had been given first (the caller now holds it).
    fn leave(&mut self) -> bool {
        let Some(ticket) = self.ticket.take() else {
            return false;
        };
        let mut s = lock(&self.gate.state);
        matches!(s.waiters.cancel(&ticket), Some(true))
    }
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if self.leave() {
            drop(self.gate.place());
        }
    }
}

impl Gate {
    /// A gate with room for `limit` holders.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(GateState {
                in_use: 0,
                limit,
                closed: false,
                waiters: WaitQueue::default(),
            })),
        }
    }

    fn place(&self) -> Place {
        Place {
            state: Arc::clone(&self.state),
        }
    }

    /// A place now, if one is free and nobody waits ahead (so the queue stays fair).
    #[must_use]
    pub fn try_enter(&self) -> Option<Place> {
        let mut s = lock(&self.state);
        if s.closed || !s.waiters.is_empty() || s.in_use >= s.limit {
            return None;
        }
        s.in_use += 1;
        drop(s);
        Some(self.place())
    }

    /// Waits first come, first served for a place, at most `timeout`. Cancel-safe:
    /// dropping the future leaves no place taken and no one skipped.
    ///
    /// # Errors
    /// [`GateError::Timeout`] after `timeout`; [`GateError::Closed`] once the gate closes.
    pub async fn enter(&self, timeout: Duration) -> Result<Place, GateError> {
        self.enter_until(tokio::time::Instant::now() + timeout)
            .await
    }

    /// As [`Gate::enter`], with an absolute deadline (one deadline can cover several steps).
    ///
    /// # Errors
    /// As [`Gate::enter`].
    pub async fn enter_until(&self, deadline: tokio::time::Instant) -> Result<Place, GateError> {
        self.enter_or(tokio::time::sleep_until(deadline)).await
    }

    /// Waits for a place until `give_up` completes (the deadline; a plain future so the
    /// model checker can drive it without a timer).
    pub(crate) async fn enter_or(
        &self,
        give_up: impl Future<Output = ()>,
    ) -> Result<Place, GateError> {
        let ticket = {
            let mut s = lock(&self.state);
            if s.closed {
                return Err(GateError::Closed);
            }
            if s.waiters.is_empty() && s.in_use < s.limit {
                s.in_use += 1;
                drop(s);
                return Ok(self.place());
            }
            s.waiters.push()
        };
        let mut leave = Leave {
            gate: self,
            ticket: Some(ticket),
        };
        let given = match &leave.ticket {
            Some(t) => {
                let mut wait = pin!(t.wait());
                let mut give_up = pin!(give_up);
                poll_fn(|cx| {
                    if let Poll::Ready(g) = wait.as_mut().poll(cx) {
                        return Poll::Ready(Some(g));
                    }
                    give_up.as_mut().poll(cx).map(|()| None)
                })
                .await
            }
            None => None,
        };
        match given {
            Some(true) => {
                leave.ticket = None;
                Ok(self.place())
            }
            Some(false) => {
                leave.ticket = None;
                Err(GateError::Closed)
            }
            // Gave up; a place given in the same instant is still ours.
            None if leave.leave() => Ok(self.place()),
            None => Err(GateError::Timeout),
        }
    }

    /// Changes the limit. A raise serves waiters at once; a cut takes effect as places
    /// are given back (no holder loses its place).
    pub fn set_limit(&self, limit: usize) {
        let mut s = lock(&self.state);
        s.limit = limit;
        s.fill();
        let wake = s.waiters.wakers();
        drop(s);
        drop(wake);
    }

    /// Closes the gate: waiters and later callers get [`GateError::Closed`]; places
    /// already held stay valid until dropped.
    pub fn close(&self) {
        let mut s = lock(&self.state);
        s.closed = true;
        while s.waiters.give(false).is_ok() {}
        let wake = s.waiters.wakers();
        drop(s);
        drop(wake);
    }

    /// Places held now.
    #[must_use]
    pub fn in_use(&self) -> usize {
        lock(&self.state).in_use
    }

    /// Callers waiting now.
    #[must_use]
    pub fn pending(&self) -> usize {
        lock(&self.state).waiters.len()
    }

    /// The current limit.
    #[must_use]
    pub fn limit(&self) -> usize {
        lock(&self.state).limit
    }

    /// Whether [`Gate::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }
}
