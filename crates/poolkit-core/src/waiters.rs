//! The waiter queue shared by the pool engine and the [`Gate`](crate::Gate): callers that
//! could not be served at once wait in arrival order, and whoever frees a connection (or a
//! place) hands it straight to the oldest of them. FIFO is then a property of the data
//! structure, not of a separate gate in front of it.
//!
//! Protocol (the owner's lock is written `L`):
//! - a waiter is pushed under `L`, and only ever removed under `L`;
//! - a giver pops the oldest waiter and fills its [`Slot`] under `L`;
//! - a waiter that gives up (timeout, or its future dropped) takes `L`, removes itself if it
//!   is still queued, and otherwise finds the value it was given in its slot and hands it on.
//!
//! So a value handed to a waiter is never lost: either the waiter takes it, or its
//! cancellation returns it to the owner under the same lock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex, lock};

enum SlotState<T> {
    Waiting(Option<Waker>),
    Given(T),
    Taken,
}

/// Where one waiter receives what it is given.
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Self {
            state: Mutex::new(SlotState::Waiting(None)),
        }
    }

    /// Fills the slot; returns its waiter's waker. Called under the owner's lock; the
    /// waker is woken after the lock is released (see [`WaitQueue::wakers`]).
    fn give(&self, value: T) -> Option<Waker> {
        let mut s = lock(&self.state);
        match std::mem::replace(&mut *s, SlotState::Given(value)) {
            SlotState::Waiting(w) => w,
            // A slot is popped from the queue once, so it is never given twice.
            SlotState::Given(_) | SlotState::Taken => None,
        }
    }

    /// Takes what was given, if anything.
    pub(crate) fn take(&self) -> Option<T> {
        let mut s = lock(&self.state);
        match std::mem::replace(&mut *s, SlotState::Taken) {
            SlotState::Given(v) => Some(v),
            other => {
                *s = other;
                None
            }
        }
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = lock(&self.state);
        match std::mem::replace(&mut *s, SlotState::Taken) {
            SlotState::Given(v) => Poll::Ready(v),
            SlotState::Waiting(_) => {
                *s = SlotState::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            SlotState::Taken => {
                // Polled again after completing: stay pending rather than panic.
                *s = SlotState::Taken;
                Poll::Pending
            }
        }
    }
}

/// A waiter's ticket: its place in the queue and its slot.
pub(crate) struct Ticket<T> {
    id: u64,
    slot: Arc<Slot<T>>,
}

impl<T> Ticket<T> {
    /// Resolves when the waiter is given a value. Cancel-safe only together with
    /// [`WaitQueue::cancel`] (see the module docs).
    pub(crate) fn wait(&self) -> Given<'_, T> {
        Given { slot: &self.slot }
    }
}

/// The future of [`Ticket::wait`].
pub(crate) struct Given<'a, T> {
    slot: &'a Slot<T>,
}

impl<T> Future for Given<'_, T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.slot.poll_take(cx)
    }
}

/// How many slots already given out [`WaitQueue`] keeps for reuse: a waiter handed its
/// value may not run for a few hundred hand-offs while the runtime's queue is long (10,000
/// callers at a full gate kept about 300 in use), and a slot is reused only once its
/// waiter has run. At most this many stay allocated after a burst (some 50 bytes each,
/// plus the value's size).
const SPARE_SLOTS: usize = 512;

/// Callers waiting in arrival order. Lives inside its owner's lock.
pub(crate) struct WaitQueue<T> {
    queue: VecDeque<(u64, Arc<Slot<T>>)>,
    /// Slots given out, oldest first, for new waiters to reuse once their tickets let go
    /// of them: under a steady queue (a few thousand callers taking turns at a full
    /// gate) a waiter then costs no allocation.
    spare: VecDeque<Arc<Slot<T>>>,
    next_id: u64,
    /// Waiters given something under the lock, to wake once it is released (a task woken
    /// under the lock would only run into it): the first inline, since a release usually
    /// hands on one value and a `Vec` would be allocated and freed for each.
    to_wake: Wakers,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            spare: VecDeque::new(),
            next_id: 0,
            to_wake: Wakers::default(),
        }
    }
}

/// Wakers collected under a lock, woken when dropped (after the lock's guard).
#[must_use = "wakers are woken when this is dropped; drop it after the lock"]
#[derive(Default)]
pub(crate) struct Wakers {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Wakers {
    fn push(&mut self, w: Waker) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.more.push(w);
        }
    }
}

impl Drop for Wakers {
    fn drop(&mut self) {
        if let Some(w) = self.first.take() {
            w.wake();
        }
        for w in self.more.drain(..) {
            w.wake();
        }
    }
}

impl<T> WaitQueue<T> {
    /// Queues a new waiter at the back.
    pub(crate) fn push(&mut self) -> Ticket<T> {
        let id = self.next_id;
        self.next_id += 1;
        let slot = self.reuse().unwrap_or_else(|| Arc::new(Slot::new()));
        self.queue.push_back((id, Arc::clone(&slot)));
        Ticket { id, slot }
    }

    /// The oldest spare slot, emptied, if its ticket has let go of it. `Arc::get_mut`
    /// proves that nobody else holds it (and orders its last use before this one); a slot
    /// still held goes to the back of the spares.
    fn reuse(&mut self) -> Option<Arc<Slot<T>>> {
        let mut slot = self.spare.pop_front()?;
        if let Some(free) = Arc::get_mut(&mut slot) {
            *free
                .state
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = SlotState::Waiting(None);
            Some(slot)
        } else {
            self.spare.push_back(slot);
            None
        }
    }

    /// Hands `value` to the oldest waiter; gives it back when nobody waits.
    pub(crate) fn give(&mut self, value: T) -> Result<(), T> {
        match self.queue.pop_front() {
            Some((_, slot)) => {
                if let Some(w) = slot.give(value) {
                    self.to_wake.push(w);
                }
                if self.spare.len() < SPARE_SLOTS {
                    self.spare.push_back(slot);
                }
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Removes a waiter that gives up. Returns what it had been given before it could
    /// leave (the caller must hand that on), or `None` when it was still queued.
    pub(crate) fn cancel(&mut self, ticket: &Ticket<T>) -> Option<T> {
        if let Some(pos) = self.queue.iter().position(|(id, _)| *id == ticket.id) {
            self.queue.remove(pos);
            return None;
        }
        ticket.slot.take()
    }

    /// The wakers of waiters given something since the last call; drop the result after
    /// releasing the owner's lock.
    pub(crate) fn wakers(&mut self) -> Wakers {
        std::mem::take(&mut self.to_wake)
    }

    /// How many wait.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
