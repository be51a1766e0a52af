//! Connect errors that waiting cannot fix (a wrong password, an unknown database, a
//! certificate that does not verify, nothing listening when the pool is built): the
//! adapter says which they are, the connect that met one stops retrying, and every caller
//! waiting for a connection gets the server's reason at once instead of after the acquire
//! timeout. Connect WARNs go through here too, one line per reason per interval.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::conn::Clock;

/// Says whether a connect error of manager `M` is one retrying cannot fix. `worked` is
/// true once the pool has been built or has opened a connection: an adapter keeps
/// retrying a refused connection then (a restart), and fails at once on it only while the
/// pool is built. The manager is passed so the answer can depend on its settings (a
/// refused login is worth retrying while a rotating secret may be replaced).
pub type Classify<M> = fn(&M, &<M as bb8::ManageConnection>::Error, worked: bool) -> bool;

/// Never fatal: every connect error is retried within the acquire timeout.
pub(crate) fn never<M: bb8::ManageConnection>(_: &M, _: &M::Error, _: bool) -> bool {
    false
}

/// How often one connect-failure reason is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Reasons remembered for rate-limiting; past this the oldest are forgotten.
const WARN_REASONS: usize = 32;

pub(crate) struct FailFast<E> {
    /// The last error retrying cannot fix, and when it came.
    last: Mutex<Option<(Clock, Arc<E>)>>,
    /// Woken when one comes: every waiting caller then gives up with it.
    pub(crate) failed: Notify,
    worked: AtomicBool,
    /// Per reason: when it was last logged, and how often it came since.
    warned: Mutex<HashMap<String, (Clock, u64)>>,
}

impl<E> fmt::Debug for FailFast<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailFast")
            .field("worked", &self.worked)
            .finish_non_exhaustive()
    }
}

impl<E: fmt::Display> FailFast<E> {
    pub(crate) fn new() -> Self {
        Self {
            last: Mutex::new(None),
            failed: Notify::new(),
            worked: AtomicBool::new(false),
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// The pool works: built, or a connection opened.
    pub(crate) fn worked(&self) {
        self.worked.store(true, Ordering::Relaxed);
    }

    /// Whether the pool has worked (see [`Classify`]).
    pub(crate) fn has_worked(&self) -> bool {
        self.worked.load(Ordering::Relaxed)
    }

    /// A connect failed with `e`, which retrying cannot fix when `fatal`. Logs it
    /// (rate-limited); when fatal, every waiting caller is woken to give up with it.
    pub(crate) fn failed(&self, pool: &str, e: &Arc<E>, fatal: bool) -> bool {
        self.warn(pool, e, fatal);
        if fatal {
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((Clock::now(), Arc::clone(e)));
            self.failed.notify_waiters();
        }
        fatal
    }

    /// The error retrying cannot fix that came at or after `since`, if any.
    pub(crate) fn since(&self, since: Clock) -> Option<Arc<E>> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| Arc::clone(e))
    }

    fn warn(&self, pool: &str, e: &E, fatal: bool) {
        let reason = e.to_string();
        let now = Clock::now();
        let repeated = {
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            if !warned.contains_key(&reason)
                && warned.len() >= WARN_REASONS
                && let Some(oldest) = warned
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                warned.remove(&oldest);
            }
            match warned.get_mut(&reason) {
                Some((at, n)) if now.saturating_duration_since(*at) < WARN_EVERY => {
                    *n += 1;
                    return;
                }
                Some((at, n)) => {
                    *at = now;
                    std::mem::take(n)
                }
                None => {
                    warned.insert(reason.clone(), (now, 0));
                    0
                }
            }
        };
        if fatal {
            tracing::warn!(pool = %pool, error = %reason, "connect failed; retrying cannot fix this, so callers get the error at once");
        } else if repeated > 0 {
            tracing::warn!(pool = %pool, error = %reason, repeated, "connect failed (again {repeated} times since the last line)");
        } else {
            tracing::warn!(pool = %pool, error = %reason, "connect failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_logged_once_per_interval_and_counted() {
        let ff: FailFast<String> = FailFast::new();
        let e = Arc::new("refused".to_owned());
        let before = Clock::now();
        assert!(ff.failed("p", &e, true));
        assert!(ff.since(before).is_some(), "kept for the callers");
        for _ in 0..5 {
            assert!(!ff.failed("p", &e, false));
        }
        let warned = ff.warned.lock().unwrap();
        assert_eq!(warned.get("refused").map(|(_, n)| *n), Some(5));
    }
}
