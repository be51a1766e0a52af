//! A connection's life in time, for every pool kind (the engine's checked-out connections
//! and the multiplexed core's shared sockets): the clock, lifetime jitter, and the back-off
//! between connect attempts.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The clock of the checkout path: `quanta` reads the CPU's time-stamp counter, several
/// times cheaper than `clock_gettime` on virtual machines, where a `std` `Instant::now`
/// was a third of a no-I/O checkout.
pub(crate) type Clock = quanta::Instant;

/// The most a connection's lifetime is shortened, so connections opened together do not
/// all expire together.
pub(crate) const LIFETIME_JITTER: f64 = 0.025;

/// `lifetime` shortened by a random fraction in `[0, LIFETIME_JITTER)`.
pub(crate) fn jittered(lifetime: Duration) -> Duration {
    lifetime.mul_f64(1.0 - LIFETIME_JITTER * random_unit())
}

/// A random number in `[0, 1)` from std's random hasher keys (no `rand` needed).
pub(crate) fn random_unit() -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let unit = (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

/// The delays between the attempts of one connect that keeps failing: doubling from
/// [`Backoff::FIRST`] up to a cap, each cut by a random part of up to half (so
/// reconnects spread out), never above the cap.
///
/// The cap is [`Backoff::MAX`] or half the caller's bound (the acquire timeout), the
/// smaller: a caller that arrives once the server is back sees a new attempt within its
/// own wait, as bb8 caps its back-off at half the connection timeout.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// The first delay (before jitter).
    pub(crate) const FIRST: Duration = Duration::from_millis(25);
    /// The longest delay, so a server that comes back is used within half a second.
    pub(crate) const MAX: Duration = Duration::from_millis(500);
    /// The shortest cap, whatever the bound (no busy loop against a refusing server).
    const FLOOR: Duration = Duration::from_millis(5);

    /// A back-off for connects that callers wait on for at most `bound`.
    pub(crate) fn new(bound: Duration) -> Self {
        let cap = Self::MAX.min(bound / 2).max(Self::FLOOR);
        Self {
            next: Self::FIRST.min(cap),
            cap,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(1.0 - 0.5 * random_unit());
        self.next = (self.next * 2).min(self.cap);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_shortens_by_at_most_the_bound() {
        let lt = Duration::from_secs(1000);
        let all: Vec<Duration> = (0..200).map(|_| jittered(lt)).collect();
        assert!(
            all.iter()
                .all(|d| *d <= lt && *d >= lt.mul_f64(1.0 - LIFETIME_JITTER))
        );
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert!(distinct.len() > 150, "lifetimes are spread out");
    }

    #[test]
    fn back_off_doubles_to_its_cap_and_never_passes_it() {
        let mut b = Backoff::new(Duration::from_secs(30));
        let first = b.next_delay();
        assert!(
            first <= Backoff::FIRST && first >= Backoff::FIRST / 2,
            "{first:?}"
        );
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Backoff::MAX));
        assert!(delays[10..].iter().all(|d| *d >= Backoff::MAX / 2));
        // A 200 ms acquire timeout caps it at 100 ms.
        let mut b = Backoff::new(Duration::from_millis(200));
        assert!((0..20).all(|_| b.next_delay() <= Duration::from_millis(100)));
    }
}
