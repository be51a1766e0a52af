//! The connections to one origin: the HTTP/1.1 engine (idle connections, queue, connects,
//! lifetime, upkeep: `poolkit_core::engine`), and for HTTP/2 a FIFO gate sized to the
//! ceiling, the shared connection and what it has lived through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use poolkit_core::metrics::CloseReason;
use poolkit_core::{Gate, Telemetry};

use crate::connect::Body;
use crate::h1::H1Engine;
use crate::url::Origin;

/// The protocol an origin speaks, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    H1,
    H2,
}

/// The shared HTTP/2 connection's life: counted closed exactly once, whoever notices first.
#[derive(Debug)]
pub(crate) struct Life {
    closed: AtomicBool,
    opened: AtomicBool,
    born: Instant,
    uses: AtomicU64,
    in_flight: AtomicU64,
    last_used: Mutex<Instant>,
    telemetry: Arc<Telemetry>,
    host_open: Arc<AtomicU64>,
}

impl Life {
    /// A connection being opened; counted open by [`Life::mark_open`].
    pub(crate) fn new(telemetry: Arc<Telemetry>, host_open: Arc<AtomicU64>) -> Self {
        Self {
            closed: AtomicBool::new(false),
            opened: AtomicBool::new(false),
            born: Instant::now(),
            uses: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last_used: Mutex::new(Instant::now()),
            telemetry,
            host_open,
        }
    }

    /// The connection's task has ended (the server closed it, or it broke): counts the
    /// close.
    pub(crate) fn task_ended(&self) {
        self.close(CloseReason::Broken);
    }

    /// The connection is open: counts it (once).
    pub(crate) fn mark_open(&self, took: Duration) {
        if !self.is_closed() && !self.opened.swap(true, Relaxed) {
            self.host_open.fetch_add(1, Relaxed);
            self.telemetry.opened(took);
        }
    }

    /// Counts the close (once, and only if it was counted open); later calls do nothing.
    pub(crate) fn close(&self, reason: CloseReason) {
        if !self.closed.swap(true, Relaxed) && self.opened.load(Relaxed) {
            self.host_open.fetch_sub(1, Relaxed);
            self.telemetry.closed(reason);
            tracing::debug!(reason = reason.as_str(), "connection closed");
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    pub(crate) fn begin(&self) {
        self.uses.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// Whether this connection was opened after `other`.
    pub(crate) fn younger_than(&self, other: &Self) -> bool {
        self.born > other.born
    }

    /// Exchanges started on this connection so far (HTTP/2: streams).
    pub(crate) fn uses(&self) -> u64 {
        self.uses.load(Relaxed)
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Relaxed) == 0).then(|| {
            self.last_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed()
        })
    }

    /// Why this connection should not be used again, if it should not.
    pub(crate) fn retire_reason(&self, limits: &Limits) -> Option<CloseReason> {
        if self.is_closed() {
            return Some(CloseReason::Broken);
        }
        if limits
            .max_lifetime
            .is_some_and(|max| self.born.elapsed() >= max)
        {
            return Some(CloseReason::MaxLifetime);
        }
        if limits
            .max_uses
            .is_some_and(|max| self.uses.load(Relaxed) >= max)
        {
            return Some(CloseReason::MaxUses);
        }
        if limits
            .idle_timeout
            .zip(self.idle_for())
            .is_some_and(|(max, idle)| idle >= max)
        {
            return Some(CloseReason::IdleTimeout);
        }
        None
    }
}

/// The per-connection limits, copied from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) max_uses: Option<u64>,
}

/// The shared HTTP/2 connection.
pub(crate) struct SharedH2 {
    pub(crate) sender: http2::SendRequest<Body>,
    pub(crate) life: Arc<Life>,
}

/// Everything the pool keeps for one origin.
pub(crate) struct Host {
    pub(crate) origin: Origin,
    /// The HTTP/1.1 engine; `None` when the pool speaks HTTP/2 only.
    pub(crate) h1: Option<H1Engine>,
    /// HTTP/2's FIFO gate: one place per stream.
    pub(crate) gate: Gate,
    pub(crate) h2: Mutex<Option<SharedH2>>,
    /// Held while opening a connection whose protocol may be HTTP/2, so concurrent
    /// callers share one connection instead of each opening their own.
    pub(crate) h2_connect: tokio::sync::Mutex<()>,
    pub(crate) proto: Mutex<Option<Proto>>,
    /// HTTP/2 connections open.
    pub(crate) open: Arc<AtomicU64>,
    /// Callers waiting at the HTTP/2 gate.
    pub(crate) waiting: AtomicU64,
}

impl Host {
    pub(crate) fn new(
        origin: Origin,
        h1: Option<H1Engine>,
        ceiling: u32,
        proto: Option<Proto>,
    ) -> Self {
        Self {
            origin,
            h1,
            gate: Gate::new(ceiling as usize),
            h2: Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
            proto: Mutex::new(proto),
            open: Arc::new(AtomicU64::new(0)),
            waiting: AtomicU64::new(0),
        }
    }

    /// Whether nothing is open, in use or waiting here (the origin can be forgotten).
    pub(crate) fn is_unused(&self) -> bool {
        let h1 = self.h1.as_ref().map(H1Engine::counts).unwrap_or_default();
        self.open.load(Relaxed) == 0
            && self.waiting.load(Relaxed) == 0
            && self.gate.in_use() == 0
            && h1.open + h1.connecting + h1.used + h1.pending == 0
    }

    /// (in use, open, waiting) here: HTTP/1.1 connections and HTTP/2 streams.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let h1 = self.h1.as_ref().map(H1Engine::counts).unwrap_or_default();
        (
            self.gate.in_use() as u64 + u64::from(h1.used),
            self.open.load(Relaxed) + u64::from(h1.open),
            self.waiting.load(Relaxed) + u64::from(h1.pending),
        )
    }

    pub(crate) fn proto(&self) -> Option<Proto> {
        *self.proto.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn learn(&self, proto: Proto) {
        *self.proto.lock().unwrap_or_else(PoisonError::into_inner) = Some(proto);
    }

    /// Lets go of the shared HTTP/2 connection if it is `life`'s: called when that
    /// connection's task ends, so that no sender of it outlives it (see `exchange::send`).
    pub(crate) fn forget_h2(&self, life: &Arc<Life>) {
        let mut slot = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        let gone = slot
            .take_if(|c| Arc::ptr_eq(&c.life, life))
            .map(|c| c.sender);
        drop(slot);
        // Dropping what may be the connection's last sender answers what is left in its
        // queue: outside the lock.
        drop(gone);
    }

    /// A stream on the shared HTTP/2 connection when it is fit for use; an unfit one is
    /// closed and removed.
    pub(crate) fn shared_h2(&self, limits: &Limits) -> Option<SharedH2> {
        self.shared_h2_if(limits, |_| true)
    }

    /// As [`Host::shared_h2`], but only when `usable` accepts the shared connection (a
    /// retry skips the connection that just failed it); a rejected one stays in place.
    pub(crate) fn shared_h2_if(
        &self,
        limits: &Limits,
        usable: impl Fn(&SharedH2) -> bool,
    ) -> Option<SharedH2> {
        let mut slot = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        let c = slot.as_ref()?;
        if !usable(c) {
            return None;
        }
        let reason = if c.sender.is_closed() {
            Some(CloseReason::Broken)
        } else {
            c.life.retire_reason(limits)
        };
        match reason {
            None => {
                c.life.begin();
                Some(SharedH2 {
                    sender: c.sender.clone(),
                    life: c.life.clone(),
                })
            }
            Some(reason) => {
                if let Some(old) = slot.take() {
                    old.life.close(reason);
                }
                None
            }
        }
    }

    /// Closes the shared HTTP/2 connection when it is past its idle timeout or lifetime
    /// (or in any case, when `reason` is given).
    pub(crate) fn sweep(&self, limits: &Limits, all: Option<CloseReason>) {
        let mut slot = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        let reason = slot.as_ref().and_then(|c| {
            all.or_else(|| {
                if c.sender.is_closed() {
                    Some(CloseReason::Broken)
                } else {
                    c.life.retire_reason(limits)
                }
            })
        });
        if let Some(reason) = reason
            && let Some(conn) = slot.take()
        {
            conn.life.close(reason);
        }
    }
}
