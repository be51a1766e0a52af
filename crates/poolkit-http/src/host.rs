//! The connections to one origin: an HTTP/1.1 engine (`poolkit_core::engine`) or an
//! HTTP/2 pool on the multiplexed core (`poolkit_core::mux`), whichever the origin speaks.
//! Over TLS with `P_HTTP_VERSION=auto` the first connection learns it (ALPN).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::h1::H1Engine;
use crate::h2::H2Pool;
use crate::url::Origin;

/// The protocol an origin speaks, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    H1,
    H2,
}

/// Everything the pool keeps for one origin.
pub(crate) struct Host {
    pub(crate) origin: Origin,
    /// The HTTP/1.1 engine; `None` when the pool speaks HTTP/2 only.
    pub(crate) h1: Option<H1Engine>,
    /// The HTTP/2 pool, started once the origin is known to speak HTTP/2.
    pub(crate) h2: OnceLock<H2Pool>,
    /// Set once the protocol is known (at once, unless TLS with `auto`).
    pub(crate) proto: OnceLock<Proto>,
    /// The connect that learns the protocol (TLS with `auto`): one at a time, once.
    pub(crate) probe: tokio::sync::Mutex<()>,
    /// When a request last ended here (nanoseconds since `epoch`), so an idle HTTP/2
    /// origin is forgotten (and its connection closed) after `P_IDLE_TIMEOUT`.
    last_used: AtomicU64,
    epoch: Instant,
}

impl Host {
    pub(crate) fn new(origin: Origin, h1: Option<H1Engine>, proto: Option<Proto>) -> Self {
        let known = OnceLock::new();
        if let Some(p) = proto {
            let _ = known.set(p);
        }
        Self {
            origin,
            h1,
            h2: OnceLock::new(),
            proto: known,
            probe: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn proto(&self) -> Option<Proto> {
        self.proto.get().copied()
    }

    /// Notes that a request ended now.
    pub(crate) fn touch(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_used.store(nanos, Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_nanos(self.last_used.load(Relaxed)))
    }

    /// Whether nothing is in use or waiting here, nothing is open over HTTP/1.1, and an
    /// HTTP/2 connection has been idle for `idle_timeout` (the origin can be forgotten).
    pub(crate) fn is_unused(&self, idle_timeout: Option<Duration>) -> bool {
        let h1 = self.h1.as_ref().map(H1Engine::counts).unwrap_or_default();
        let h1_unused = h1.open + h1.connecting + h1.used + h1.pending == 0;
        let h2_unused = self.h2.get().is_none_or(|p| {
            p.in_flight() == 0
                && p.pending() == 0
                && idle_timeout.is_some_and(|t| self.idle_for() >= t)
        });
        h1_unused && h2_unused
    }

    /// (in use, open, waiting) here: HTTP/1.1 connections, HTTP/2 requests in flight and
    /// sockets, callers waiting for either.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let h1 = self.h1.as_ref().map(H1Engine::counts).unwrap_or_default();
        let (used, open, pending) = self.h2.get().map_or((0, 0, 0), |p| {
            (p.in_flight() as u64, p.open() as u64, p.pending() as u64)
        });
        (
            used + u64::from(h1.used),
            open + u64::from(h1.open),
            pending + u64::from(h1.pending),
        )
    }

    /// The most requests in flight here: the HTTP/1.1 ceiling or the HTTP/2 streams.
    pub(crate) fn ceiling(&self, h1_ceiling: u32) -> u64 {
        match self.h2.get() {
            Some(p) if self.proto() == Some(Proto::H2) => p.config().max_in_flight as u64,
            _ => u64::from(h1_ceiling),
        }
    }
}
