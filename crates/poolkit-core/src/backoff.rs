//! The timing functions every connection owner shares: the reconnect back-off with
//! jitter, and the lifetime jitter. The engine (checked-out connections) and the
//! multiplexed core (shared sockets) both use these, so a pool's reconnects and
//! expiries behave the same whichever kind of connection it holds.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The most a connection's lifetime is shortened, so connections opened together do not
/// all expire together.
pub const LIFETIME_JITTER: f64 = 0.025;

/// The first retry delay after a failed connect; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// The longest retry delay (before up to 50 % jitter), so a server that comes back is
/// used within about a second.
pub const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// `lifetime` shortened by a random fraction in `[0, LIFETIME_JITTER)`.
#[must_use]
pub fn jittered(lifetime: Duration) -> Duration {
    lifetime.mul_f64(1.0 - LIFETIME_JITTER * random_unit())
}

/// A random number in `[0, 1)` from std's random hasher keys (no `rand` needed).
#[must_use]
pub fn random_unit() -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let unit = (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

/// Exponential back-off between connect attempts: [`FIRST_BACKOFF`], doubling up to
/// [`MAX_BACKOFF`] (or a lower cap), each delay lengthened by up to 50 % at random so
/// clients that lost the server together do not come back together.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A fresh back-off, capped at [`MAX_BACKOFF`].
    #[must_use]
    pub fn new() -> Self {
        Self::capped(MAX_BACKOFF)
    }

    /// A fresh back-off whose delays (jitter included) never exceed `cap`, e.g. half an
    /// acquire timeout, so a caller with a short timeout still sees a connect attempt.
    #[must_use]
    pub fn capped(cap: Duration) -> Self {
        Self {
            next: FIRST_BACKOFF.min(cap),
            cap: cap.min(MAX_BACKOFF.mul_f64(1.5)),
        }
    }

    /// The next delay to sleep, and the one after it doubled.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(1.0 + 0.5 * random_unit()).min(self.cap);
        self.next = (self.next * 2).min(MAX_BACKOFF).min(self.cap);
        delay
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF.min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_shortens_by_at_most_the_bound() {
        let lt = Duration::from_secs(100);
        let all: Vec<Duration> = (0..200).map(|_| jittered(lt)).collect();
        assert!(
            all.iter()
                .all(|d| *d <= lt && *d >= lt.mul_f64(1.0 - LIFETIME_JITTER))
        );
        assert!(all.iter().any(|d| *d != all[0]), "not all the same");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= FIRST_BACKOFF && first <= FIRST_BACKOFF.mul_f64(1.5));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF.mul_f64(1.5)));
        assert!(*delays.last().unwrap() >= MAX_BACKOFF);
        b.reset();
        assert!(b.next_delay() <= FIRST_BACKOFF.mul_f64(1.5));
    }

    #[test]
    fn a_capped_backoff_never_sleeps_past_its_cap() {
        let mut b = Backoff::capped(Duration::from_millis(100));
        assert!((0..20).all(|_| b.next_delay() <= Duration::from_millis(100)));
    }
}
