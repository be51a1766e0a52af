//! The task of one socket slot: open the socket (retrying with the shared back-off and
//! jitter), put it into routing, wait until it dies, says GOAWAY, reaches its lifetime or
//! is retired, take it out of routing (its requests drain), and start again. Connects
//! are these tasks' work, never a caller's, so a caller who gives up cancels nothing.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::task::Poll;

use tokio::sync::Notify;

use super::table::Entry;
use super::{Clock, Held, Inner, Multiplexer};
use crate::backoff::{Backoff, jittered};
use crate::metrics::{CloseReason, ErrorKind};

/// What the pool tells one slot's task: wake up (retired, resized, closed), and why.
#[derive(Debug, Default)]
pub(crate) struct SlotCtl {
    wake: Notify,
    reason: StdMutex<Option<CloseReason>>,
}

impl SlotCtl {
    /// Wakes the slot's task (one task waits here, so nobody else is woken).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The slot's socket was taken out of routing for `reason`.
    pub(crate) fn retire(&self, reason: CloseReason) {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        self.wake.notify_one();
    }

    fn take_reason(&self) -> Option<CloseReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

enum Ended {
    /// The socket's own `closed` future completed.
    Closed(CloseReason),
    /// Its lifetime ran out.
    Lifetime,
    /// The pool retired it, shrank below this slot, or closed.
    Told,
}

/// Runs slot `i` until the pool closes.
pub(crate) async fn drive<M: Multiplexer>(inner: Arc<Inner<M>>, i: usize) {
    let ctl = &inner.slots[i];
    let mut backoff = Backoff::new();
    let mut reopen = false;
    loop {
        if inner.closed.load(Acquire) {
            return;
        }
        if i >= inner.wanted.load(Acquire) {
            ctl.wake.notified().await;
            continue;
        }
        let Some(opened) = connect(&inner, i, &mut backoff).await else {
            continue; // failed (after its back-off), or the pool changed meanwhile
        };
        if inner.closed.load(Acquire) || i >= inner.wanted.load(Acquire) {
            if let Some(t) = &inner.telemetry {
                t.record_closed(CloseReason::Overflow);
            }
            continue;
        }
        backoff.reset();
        if reopen {
            inner.reconnects.fetch_add(1, Relaxed);
            if let Some(t) = &inner.telemetry {
                t.record_reconnect();
            }
        }
        reopen = true;
        let id = inner.next_id.fetch_add(1, Relaxed);
        let entry = crate::sync::Arc::new(Entry::new(
            id,
            i,
            Held::new(opened.socket, inner.telemetry.clone()),
            &inner.table.counts,
            inner.now(),
        ));
        ctl.take_reason(); // a retire of the previous socket is done with
        inner.table.install(crate::sync::Arc::clone(&entry));
        inner.table.counts.opened.fetch_add(1, Relaxed);
        inner.changed.send_modify(|v| *v += 1);

        let ended = live(&inner, i, &entry, opened.closed).await;
        let reason = match ended {
            Ended::Closed(r) => r,
            Ended::Lifetime => CloseReason::MaxLifetime,
            Ended::Told => ctl.take_reason().unwrap_or(if inner.closed.load(Acquire) {
                CloseReason::PoolClosed
            } else {
                CloseReason::Overflow
            }),
        };
        inner.table.remove(id);
        if let Some(t) = &inner.telemetry {
            if reason == CloseReason::Broken {
                t.error(ErrorKind::Broken);
            }
            t.record_closed(reason);
        }
        tracing::debug!(pool = %inner.config.name, socket = id, reason = reason.as_str(), in_flight = entry.in_flight(), "shared socket retired");
        // The last lease to finish drops the socket.
    }
}

/// One connect attempt (bounded by the connect timeout); on failure, records it and
/// sleeps its back-off (woken early when the pool closes or shrinks).
async fn connect<M: Multiplexer>(
    inner: &Arc<Inner<M>>,
    i: usize,
    backoff: &mut Backoff,
) -> Option<super::Opened<M::Socket>> {
    let counts = &inner.table.counts;
    counts.connecting.fetch_add(1, AcqRel);
    let start = Clock::now();
    let outcome = tokio::time::timeout(inner.config.connect_timeout, inner.mux.connect()).await;
    counts.connecting.fetch_sub(1, AcqRel);
    match outcome {
        Ok(Ok(opened)) => {
            if let Some(t) = &inner.telemetry {
                t.record_created(start.elapsed());
            }
            return Some(opened);
        }
        Ok(Err(e)) => {
            tracing::warn!(pool = %inner.config.name, error = %e, "shared connect failed");
            *inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((Clock::now(), Arc::new(e)));
        }
        Err(_) => {
            tracing::warn!(pool = %inner.config.name, took = ?start.elapsed(), "shared connect timed out");
        }
    }
    if let Some(t) = &inner.telemetry {
        t.error(ErrorKind::Connect);
    }
    inner.changed.send_modify(|v| *v += 1);
    // Back off; the pool closing or shrinking wakes the slot early.
    let _ = tokio::time::timeout(backoff.next_delay(), inner.slots[i].wake.notified()).await;
    None
}

/// Waits while the socket is live; returns why it stopped.
async fn live<M: Multiplexer>(
    inner: &Arc<Inner<M>>,
    i: usize,
    entry: &crate::sync::Arc<Entry<Held<M::Socket>>>,
    closed: std::pin::Pin<Box<dyn Future<Output = CloseReason> + Send>>,
) -> Ended {
    let ctl = &inner.slots[i];
    let mut closed = closed;
    let expiry = inner
        .config
        .max_lifetime
        .map(|lt| tokio::time::Instant::now() + jittered(lt));
    let mut lifetime = pin!(async move {
        match expiry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    loop {
        let mut woken = pin!(ctl.wake.notified());
        let ended = poll_fn(|cx| {
            if let Poll::Ready(r) = closed.as_mut().poll(cx) {
                return Poll::Ready(Some(Ended::Closed(r)));
            }
            if lifetime.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Ended::Lifetime));
            }
            woken.as_mut().poll(cx).map(|()| None)
        })
        .await;
        if let Some(e) = ended {
            return e;
        }
        if entry.is_retired() || inner.closed.load(Acquire) || i >= inner.wanted.load(Acquire) {
            return Ended::Told;
        }
    }
}
