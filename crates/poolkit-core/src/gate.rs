//! `Gate`: a first-come-first-served cap on how many callers hold a place at once (Redis
//! commands in flight, HTTP connections or streams per origin), with one deadline over
//! the whole wait. Built on the same waiter queue as the pool engine: a place given back
//! goes straight to the oldest waiter.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use thiserror::Error;

use crate::sync::{Arc, AtomicU64, Mutex, lock};
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

// The gate's hot word: places held (low 32 bits), the limit (next 30 bits, saturated at
// [`MAX_LIMIT`]), whether anyone waits, whether the gate is closed.
//
// Protocol (the queue's lock is written `L`):
// - [`WAITING`] is set iff the queue holds a waiter; it changes only under `L`, and it is
//   set by a compare-and-swap from the very state in which the caller found no room, so
//   a place given back after that look sees it and goes the locked way;
// - while [`WAITING`] is clear, entering and giving back are one compare-and-swap on the
//   word (no lock): nobody waits, so there is nobody to hand a place to;
// - while it is set, every change of the word happens under `L` (a compare-and-swap from
//   outside fails on the changed word, sees [`WAITING`] and takes `L`), so a place
//   given back goes to the oldest waiter as before.
/// Places held: the low 32 bits of the word.
const IN_USE: u64 = (1 << 32) - 1;
/// Where the limit starts in the word.
const LIMIT_SHIFT: u32 = 32;
/// The largest limit the word holds; a higher one (a gate with no real cap) counts as it.
const MAX_LIMIT: u64 = (1 << 30) - 1;
/// Someone waits in the queue.
const WAITING: u64 = 1 << 62;
/// The gate was closed.
const CLOSED: u64 = 1 << 63;

fn in_use_of(word: u64) -> u64 {
    word & IN_USE
}

fn limit_of(word: u64) -> u64 {
    (word >> LIMIT_SHIFT) & MAX_LIMIT
}

/// Whether `word` has room for one more holder and nobody waits ahead.
fn has_room(word: u64) -> bool {
    word & (WAITING | CLOSED) == 0 && in_use_of(word) < limit_of(word)
}

struct Inner {
    word: AtomicU64,
    locked: Mutex<Queue>,
}

/// What only changes under the lock.
struct Queue {
    /// The limit as asked (the word holds it saturated at [`MAX_LIMIT`]).
    limit: usize,
    /// `true` hands a place over; `false` tells the waiter the gate closed.
    waiters: WaitQueue<bool>,
}

impl Inner {
    /// One compare-and-swap taking a place while nobody waits and there is room.
    fn try_take(&self) -> bool {
        let mut word = self.word.load(Acquire);
        while has_room(word) {
            match self
                .word
                .compare_exchange_weak(word, word + 1, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
        false
    }

    /// A place is given back: freed by one compare-and-swap while nobody waits, else
    /// handed to the oldest waiter under the lock.
    fn release(&self) {
        let mut word = self.word.load(Acquire);
        while word & WAITING == 0 {
            match self
                .word
                .compare_exchange_weak(word, word - 1, AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
        let mut q = lock(&self.locked);
        self.release_locked(&mut q);
        let wake = q.waiters.wakers();
        drop(q);
        drop(wake);
    }

    /// As [`Inner::release`], under the lock.
    fn release_locked(&self, q: &mut Queue) {
        let word = self.word.load(Acquire);
        if word & CLOSED == 0 && in_use_of(word) <= limit_of(word) && q.waiters.give(true).is_ok() {
            self.note_queue(q);
            return; // handed over: still in use
        }
        // Nobody to hand it to (or the gate is closed, or above a cut limit): freed. With
        // `WAITING` clear, a fast caller may move the word meanwhile, so this is atomic.
        self.word.fetch_sub(1, AcqRel);
    }

    /// Clears [`WAITING`] once the queue is empty (under the lock).
    fn note_queue(&self, q: &Queue) {
        if q.waiters.is_empty() {
            self.word.fetch_and(!WAITING, AcqRel);
        }
    }

    /// Serves waiters while the limit has room (after a raise; under the lock).
    fn fill(&self, q: &mut Queue) {
        loop {
            let word = self.word.load(Acquire);
            if word & CLOSED != 0 || in_use_of(word) >= limit_of(word) || q.waiters.is_empty() {
                break;
            }
            // `WAITING` is set (the queue is not empty): only this lock moves the word.
            if q.waiters.give(true).is_ok() {
                self.word.fetch_add(1, AcqRel);
            }
        }
        self.note_queue(q);
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
    inner: Arc<Inner>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("in_use", &self.in_use())
            .field("limit", &self.limit())
            .field("pending", &self.pending())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A place held in a [`Gate`]; dropping it gives the place back (to the oldest waiter).
pub struct Place {
    inner: Arc<Inner>,
}

impl fmt::Debug for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Place")
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.inner.release();
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
        let inner = &self.gate.inner;
        let mut q = lock(&inner.locked);
        let given = q.waiters.cancel(&ticket);
        inner.note_queue(&q);
        matches!(given, Some(true))
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
        let saturated = u64::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
        Self {
            inner: Arc::new(Inner {
                word: AtomicU64::new(saturated << LIMIT_SHIFT),
                locked: Mutex::new(Queue {
                    limit,
                    waiters: WaitQueue::default(),
                }),
            }),
        }
    }

    fn place(&self) -> Place {
        Place {
            inner: Arc::clone(&self.inner),
        }
    }

    /// A place now, if one is free and nobody waits ahead (so the queue stays fair).
    #[must_use]
    pub fn try_enter(&self) -> Option<Place> {
        self.inner.try_take().then(|| self.place())
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
        if self.inner.try_take() {
            return Ok(self.place());
        }
        let ticket = {
            let inner = &*self.inner;
            let mut q = lock(&inner.locked);
            let mut word = inner.word.load(Acquire);
            loop {
                if word & CLOSED != 0 {
                    return Err(GateError::Closed);
                }
                if has_room(word) {
                    match inner.word.compare_exchange(word, word + 1, AcqRel, Acquire) {
                        Ok(_) => {
                            drop(q);
                            return Ok(self.place());
                        }
                        Err(now) => word = now,
                    }
                    continue;
                }
                if word & WAITING != 0 {
                    break;
                }
                // No room: mark the queue taken in the same state the look found, so a
                // place given back after it comes this way (under this lock).
                match inner
                    .word
                    .compare_exchange(word, word | WAITING, AcqRel, Acquire)
                {
                    Ok(_) => break,
                    Err(now) => word = now,
                }
            }
            q.waiters.push()
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
        let inner = &*self.inner;
        let mut q = lock(&inner.locked);
        q.limit = limit;
        let saturated = u64::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
        let mut word = inner.word.load(Acquire);
        loop {
            let next = (word & !(MAX_LIMIT << LIMIT_SHIFT)) | (saturated << LIMIT_SHIFT);
            match inner
                .word
                .compare_exchange_weak(word, next, AcqRel, Acquire)
            {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        inner.fill(&mut q);
        let wake = q.waiters.wakers();
        drop(q);
        drop(wake);
    }

    /// Closes the gate: waiters and later callers get [`GateError::Closed`]; places
    /// already held stay valid until dropped.
    pub fn close(&self) {
        let inner = &*self.inner;
        let mut q = lock(&inner.locked);
        inner.word.fetch_or(CLOSED, AcqRel);
        while q.waiters.give(false).is_ok() {}
        inner.note_queue(&q);
        let wake = q.waiters.wakers();
        drop(q);
        drop(wake);
    }

    /// Places held now.
    #[must_use]
    pub fn in_use(&self) -> usize {
        usize::try_from(in_use_of(self.inner.word.load(Acquire))).unwrap_or(usize::MAX)
    }

    /// Callers waiting now.
    #[must_use]
    pub fn pending(&self) -> usize {
        lock(&self.inner.locked).waiters.len()
    }

    /// The current limit.
    #[must_use]
    pub fn limit(&self) -> usize {
        lock(&self.inner.locked).limit
    }

    /// Whether [`Gate::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.word.load(Acquire) & CLOSED != 0
    }
}
