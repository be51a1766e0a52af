//! The routing table of the multiplexed core: the live sockets, each with its requests in
//! flight, and the [`Gate`] whose limit follows them (per-socket cap × live sockets, at
//! most the pool's cap). Pure state, no I/O and no timers, so loom checks every
//! interleaving of a lease racing a retire or an install (see `loom_tests`).
//!
//! Lock order: the table's write lock, then the gate's lock (a limit change). The lease
//! path takes the gate's lock and the table's read lock one after the other, never both.

use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crate::Gate;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, RwLock};

/// Counts shared by the table and its entries (an entry that drains counts itself out
/// when its last lease goes).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Sockets retired and still carrying requests.
    pub(crate) draining: AtomicUsize,
    /// Sockets being opened.
    pub(crate) connecting: AtomicUsize,
    /// Sockets opened since the start.
    pub(crate) opened: AtomicU64,
}

/// The bit of an entry's in-flight word set while the socket carries a request known to
/// be slow (see [`Table::pick_below`] with [`Pick::IdleSlow`]). It lives in the same word
/// as the count so that claiming an idle socket and marking it are one step: no request
/// can join the socket between the two and end up queued behind the slow one.
const SLOW: usize = 1 << (usize::BITS - 1);

/// How a request picks its socket (see [`Table::pick_below`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The least-loaded socket with room, preferring sockets that are not stalled.
    Any,
    /// The least-loaded socket with room that is not stalled; none when all of them are
    /// (the caller sends the request elsewhere rather than queue it behind a stall).
    Flowing,
    /// A socket with nothing in flight, marked as carrying a slow request until that
    /// request is done: it counts as stalled meanwhile, and [`Pick::Flowing`] passes it by.
    IdleSlow,
}

/// One open socket: the backend's handle, its requests in flight and when it last made
/// progress (a request finished, or one started on an idle socket).
pub(crate) struct Entry<S> {
    pub(crate) id: u64,
    pub(crate) slot: usize,
    pub(crate) socket: S,
    /// Requests in flight, with [`SLOW`] set while one of them is known to be slow.
    in_flight: AtomicUsize,
    /// When the socket last made progress, in nanoseconds since the table's epoch.
    progress: AtomicU64,
    /// The time between the last two completions (a pipelined socket serves in order,
    /// so this is how long the last request kept the ones behind it waiting).
    last_gap: AtomicU64,
    retired: AtomicBool,
    counts: Arc<Counts>,
}

impl<S> fmt::Debug for Entry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("slot", &self.slot)
            .field("in_flight", &self.in_flight())
            .field("retired", &self.retired.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S> Entry<S> {
    pub(crate) fn new(id: u64, slot: usize, socket: S, counts: &Arc<Counts>, now: u64) -> Self {
        Self {
            id,
            slot,
            socket,
            in_flight: AtomicUsize::new(0),
            progress: AtomicU64::new(now),
            last_gap: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            counts: Arc::clone(counts),
        }
    }

    /// Requests in flight on this socket.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed) & !SLOW
    }

    /// Whether the socket was taken out of routing.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Acquire)
    }

    /// Requests are in flight and either none finished for more than `bound`
    /// nanoseconds (a slow request at the head), or the last one to finish held the
    /// socket longer than that (slow requests are being served: the ones queued behind
    /// wait at least as long each).
    fn stalled(&self, now: u64, bound: u64) -> bool {
        Self::stalled_at(self.in_flight.load(Relaxed), self, now, bound)
    }

    /// [`Entry::stalled`] for the in-flight word `raw` read a moment ago.
    fn stalled_at(raw: usize, e: &Self, now: u64, bound: u64) -> bool {
        raw & SLOW != 0
            || (raw > 0
                && (now.saturating_sub(e.progress.load(Relaxed)) > bound
                    || e.last_gap.load(Relaxed) > bound))
    }

    /// One request finished at `now` (`slow`: the one it was claimed for by
    /// [`Pick::IdleSlow`], whose mark goes with it); returns the time since the socket's
    /// previous progress (on a socket that answers in order: how long this request held
    /// the head).
    pub(crate) fn done(&self, now: u64, slow: bool) -> u64 {
        let before = self.progress.swap(now, Relaxed);
        let gap = now.saturating_sub(before);
        self.last_gap.store(gap, Relaxed);
        self.in_flight
            .fetch_sub(if slow { 1 | SLOW } else { 1 }, AcqRel);
        gap
    }

    /// Marks the entry retired; `true` the first time.
    fn retire(&self) -> bool {
        let first = !self.retired.swap(true, AcqRel);
        if first {
            self.counts.draining.fetch_add(1, AcqRel);
        }
        first
    }
}

impl<S> Drop for Entry<S> {
    fn drop(&mut self) {
        if self.retired.load(Acquire) {
            self.counts.draining.fetch_sub(1, AcqRel);
        }
    }
}

/// The live sockets and the gate over them.
pub(crate) struct Table<S> {
    live: RwLock<Vec<Arc<Entry<S>>>>,
    pub(crate) counts: Arc<Counts>,
    pub(crate) gate: Gate,
    per_socket: usize,
    max_in_flight: usize,
    /// Route to the first socket with room (in table order) instead of the least loaded.
    fill_first: bool,
}

impl<S> Table<S> {
    /// An empty table: the gate admits nobody until a socket is installed.
    pub(crate) fn new(per_socket: usize, max_in_flight: usize) -> Self {
        Self {
            live: RwLock::new(Vec::new()),
            counts: Arc::new(Counts::default()),
            gate: Gate::new(0),
            per_socket: per_socket.max(1),
            max_in_flight: max_in_flight.max(1),
            fill_first: false,
        }
    }

    /// The same table routing each request to the first socket with room (see
    /// [`Routing::FirstWithRoom`](super::Routing::FirstWithRoom)).
    pub(crate) fn fill_first(mut self) -> Self {
        self.fill_first = true;
        self
    }

    fn read(&self) -> impl std::ops::Deref<Target = Vec<Arc<Entry<S>>>> + '_ {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> impl std::ops::DerefMut<Target = Vec<Arc<Entry<S>>>> + '_ {
        self.live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn limit_for(&self, live: usize) -> usize {
        self.per_socket.saturating_mul(live).min(self.max_in_flight)
    }

    /// Live sockets now.
    pub(crate) fn live(&self) -> usize {
        self.read().len()
    }

    /// Puts a new socket into routing; the gate admits `per_socket` more callers (the
    /// oldest waiters first).
    pub(crate) fn install(&self, entry: Arc<Entry<S>>) {
        let mut live = self.write();
        live.push(entry);
        self.gate.set_limit(self.limit_for(live.len()));
    }

    /// Takes socket `id` out of routing (its leases drain); `None` when it already was.
    pub(crate) fn remove(&self, id: u64) -> Option<Arc<Entry<S>>> {
        let mut live = self.write();
        let pos = live.iter().position(|e| e.id == id)?;
        // `remove`, not `swap_remove`: the order sockets came up in stays the routing
        // order of a fill-first table (a few sockets: the shift is nothing).
        let entry = live.remove(pos);
        entry.retire();
        self.gate.set_limit(self.limit_for(live.len()));
        Some(entry)
    }

    /// Takes every socket out of routing.
    pub(crate) fn remove_all(&self) -> Vec<Arc<Entry<S>>> {
        let mut live = self.write();
        let all: Vec<_> = live.drain(..).collect();
        for e in &all {
            e.retire();
        }
        self.gate.set_limit(0);
        all
    }

    /// Every live socket has requests in flight, none finished for more than `bound`
    /// nanoseconds (and there is at least one socket).
    pub(crate) fn all_stalled(&self, now: u64, bound: u64) -> bool {
        let live = self.read();
        !live.is_empty() && live.iter().all(|e| e.stalled(now, bound))
    }

    /// Claims one request on the least-loaded live socket below the per-socket cap,
    /// preferring sockets that are not stalled (`stall`: the bound in nanoseconds).
    /// Ties go to the first from `start`, so callers spread over equal sockets. A
    /// fill-first table takes the first socket in table order with room instead (still
    /// preferring sockets that are not stalled). `None` when no socket has room.
    #[cfg_attr(not(poolkit_loom), allow(dead_code))]
    pub(crate) fn pick(&self, start: usize, now: u64, stall: Option<u64>) -> Option<Arc<Entry<S>>> {
        self.pick_below(start, now, stall, Pick::Any)
    }

    /// As [`Table::pick`], the way `how` says. The claim is one compare-and-swap of the
    /// socket's in-flight word, which also holds the [`SLOW`] mark, so whether the socket
    /// was stalled, idle or marked is still true when the request lands on it.
    pub(crate) fn pick_below(
        &self,
        start: usize,
        now: u64,
        stall: Option<u64>,
        how: Pick,
    ) -> Option<Arc<Entry<S>>> {
        let live = self.read();
        let n = live.len();
        if n == 0 {
            return None;
        }
        loop {
            // (rank, load, index, word read): rank 0 = flowing, 1 = stalled.
            let mut best: Option<(u8, usize, usize, usize)> = None;
            for k in 0..n {
                let i = if self.fill_first { k } else { (start + k) % n };
                let e = &live[i];
                let raw = e.in_flight.load(Relaxed);
                let load = raw & !SLOW;
                if load >= self.per_socket || (how == Pick::IdleSlow && raw != 0) {
                    continue;
                }
                let stalled = stall.is_some_and(|b| Entry::stalled_at(raw, e, now, b));
                if how == Pick::Flowing && stalled {
                    continue;
                }
                let rank = u8::from(stalled);
                if self.fill_first {
                    if best.is_none_or(|(r, _, _, _)| rank < r) {
                        best = Some((rank, load, i, raw));
                    }
                    if rank == 0 {
                        break;
                    }
                } else if best.is_none_or(|(r, l, _, _)| (rank, load) < (r, l)) {
                    best = Some((rank, load, i, raw));
                }
            }
            let (_, load, i, raw) = best?;
            let e = &live[i];
            let claimed = if how == Pick::IdleSlow {
                1 | SLOW
            } else {
                raw + 1
            };
            if e.in_flight
                .compare_exchange(raw, claimed, AcqRel, Relaxed)
                .is_ok()
            {
                if load == 0 {
                    e.progress.store(now, Relaxed);
                }
                return Some(Arc::clone(e));
            }
            // Another caller moved this socket's count (or mark) first: look again.
        }
    }

    /// Every live socket (for `Debug` and telemetry).
    pub(crate) fn snapshot(&self) -> Vec<Arc<Entry<S>>> {
        self.read().clone()
    }
}
