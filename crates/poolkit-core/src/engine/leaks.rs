//! Leak detection without a task per checkout: checkouts are noted in a map when the
//! pool has a leak threshold, and the upkeep task reports those held past it.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::conn::Clock;

struct Held {
    since: Clock,
    caller: &'static Location<'static>,
    reported: bool,
}

/// The checkouts of a pool with a leak threshold.
pub(crate) struct Leaks {
    threshold: Duration,
    next: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
}

impl Leaks {
    pub(crate) fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            next: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a checkout taken at `caller`; returns its id.
    pub(crate) fn start(&self, caller: &'static Location<'static>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Held {
                    since: Clock::now(),
                    caller,
                    reported: false,
                },
            );
        id
    }

    /// The checkout `id` came back.
    pub(crate) fn stop(&self, id: u64) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The places of checkouts held past the threshold and not reported yet (each is
    /// reported once), with how long they have been held.
    pub(crate) fn overdue(&self, now: Clock) -> Vec<(&'static Location<'static>, Duration)> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.values_mut()
            .filter(|h| !h.reported && now.saturating_duration_since(h.since) >= self.threshold)
            .map(|h| {
                h.reported = true;
                (h.caller, now.saturating_duration_since(h.since))
            })
            .collect()
    }

    /// How often the upkeep task should look.
    pub(crate) fn period(&self) -> Duration {
        self.threshold / 4
    }
}
