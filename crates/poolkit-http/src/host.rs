//! The connections to one origin: a FIFO gate sized to the ceiling, idle HTTP/1.1
//! connections, the shared HTTP/2 connection, and what each connection has lived through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use poolkit_core::metrics::CloseReason;
use poolkit_core::{Gate, Telemetry};

use crate::connect::Body;
use crate::url::Origin;

/// The protocol an origin speaks, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    H1,
    H2,
}

/// One open connection's life: counted closed exactly once, whoever notices first.
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
    /// The connection's I/O task, ended by [`Life::abort`].
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Set (and `ended` notified) when the connection's task has ended by itself.
    task_ended: AtomicBool,
    ended: tokio::sync::Notify,
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
            task: Mutex::new(None),
            task_ended: AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
        }
    }

    /// The connection's task has ended (the server closed it, or it broke): counts the
    /// close and wakes every exchange waiting in [`Life::ended`].
    pub(crate) fn task_ended(&self) {
        self.task_ended.store(true, SeqCst);
        self.ended.notify_waiters();
        self.close(CloseReason::Broken);
    }

    /// Resolves once the connection's task has ended by itself.
    pub(crate) async fn ended(&self) {
        let notified = self.ended.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.task_ended.load(SeqCst) {
            return;
        }
        notified.await;
    }

    /// Remembers the connection's I/O task, so that [`Life::abort`] can end it.
    pub(crate) fn set_task(&self, task: tokio::task::AbortHandle) {
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Closes the socket now, not whenever hyper's connection task next notices that its
    /// request was dropped: a connection abandoned mid-exchange (timeout, cancellation)
    /// stops counting against the server at once.
    pub(crate) fn abort(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// The connection is open: counts it (once).
    pub(crate) fn mark_open(&self, took: Duration) {
        if !self.is_closed() && !self.opened.swap(true, Relaxed) {
            self.host_open.fetch_add(1, Relaxed);
            self.telemetry.record_created(took);
        }
    }

    /// Counts the close (once, and only if it was counted open); later calls do nothing.
    pub(crate) fn close(&self, reason: CloseReason) {
        if !self.closed.swap(true, Relaxed) && self.opened.load(Relaxed) {
            self.host_open.fetch_sub(1, Relaxed);
            self.telemetry.record_closed(reason);
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
    pub(crate) max_keepalive: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) max_uses: Option<u64>,
}

/// An idle HTTP/1.1 connection.
pub(crate) struct IdleH1 {
    pub(crate) sender: http1::SendRequest<Body>,
    pub(crate) life: Arc<Life>,
}

/// The shared HTTP/2 connection.
pub(crate) struct SharedH2 {
    pub(crate) sender: http2::SendRequest<Body>,
    pub(crate) life: Arc<Life>,
}

/// Everything the pool keeps for one origin.
pub(crate) struct Host {
    pub(crate) origin: Origin,
    /// FIFO gate: one place per connection in use (HTTP/1.1) or stream (HTTP/2).
    pub(crate) gate: Gate,
    pub(crate) idle: Mutex<Vec<IdleH1>>,
    pub(crate) h2: Mutex<Option<SharedH2>>,
    /// Held while opening a connection whose protocol may be HTTP/2, so concurrent
    /// callers share one connection instead of each opening their own.
    pub(crate) h2_connect: tokio::sync::Mutex<()>,
    pub(crate) proto: Mutex<Option<Proto>>,
    pub(crate) open: Arc<AtomicU64>,
    pub(crate) waiting: AtomicU64,
    /// Connections kept when returned with nobody waiting (`P_POOL_SIZE`; resizable).
    pub(crate) pool_size: AtomicU64,
}

impl Host {
    pub(crate) fn new(origin: Origin, pool_size: u32, ceiling: u32, proto: Option<Proto>) -> Self {
        Self {
            origin,
            gate: Gate::new(ceiling as usize),
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
            proto: Mutex::new(proto),
            open: Arc::new(AtomicU64::new(0)),
            waiting: AtomicU64::new(0),
            pool_size: AtomicU64::new(u64::from(pool_size)),
        }
    }

    /// Whether nothing is open, in use or waiting here (the origin can be forgotten).
    pub(crate) fn is_unused(&self) -> bool {
        self.open.load(Relaxed) == 0 && self.waiting.load(Relaxed) == 0 && self.gate.in_use() == 0
    }

    pub(crate) fn proto(&self) -> Option<Proto> {
        *self.proto.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn learn(&self, proto: Proto) {
        *self.proto.lock().unwrap_or_else(PoisonError::into_inner) = Some(proto);
    }

    /// The most recently used idle HTTP/1.1 connection still fit for use; unfit ones
    /// are closed on the way.
    pub(crate) fn take_idle(&self, limits: &Limits) -> Option<IdleH1> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            let reason = if conn.sender.is_closed() {
                Some(CloseReason::Broken)
            } else {
                conn.life.retire_reason(limits)
            };
            match reason {
                Some(reason) => conn.life.close(reason),
                None => return Some(conn),
            }
        }
        None
    }

    /// Puts a connection back after a complete exchange, or closes it.
    pub(crate) fn put_idle(&self, conn: IdleH1, limits: &Limits, pool_closed: bool) {
        let reason = if pool_closed {
            Some(CloseReason::PoolClosed)
        } else if conn.sender.is_closed() {
            Some(CloseReason::Broken)
        } else {
            conn.life.retire_reason(limits)
        };
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let reason = reason.or_else(|| {
            let overflow = self.open.load(Relaxed) > self.pool_size.load(Relaxed)
                && self.waiting.load(Relaxed) == 0;
            (idle.len() >= limits.max_keepalive || overflow).then_some(CloseReason::Overflow)
        });
        match reason {
            Some(reason) => conn.life.close(reason),
            None => idle.push(conn),
        }
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

    /// Closes idle connections past their idle timeout or lifetime (or all, when
    /// `reason` is given); returns how many remain idle.
    pub(crate) fn sweep(&self, limits: &Limits, all: Option<CloseReason>) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|conn| {
            let reason = all.or_else(|| {
                if conn.sender.is_closed() {
                    Some(CloseReason::Broken)
                } else {
                    conn.life.retire_reason(limits)
                }
            });
            match reason {
                Some(r) => {
                    conn.life.close(r);
                    false
                }
                None => true,
            }
        });
        let left = idle.len();
        drop(idle);
        {
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
        left
    }
}
