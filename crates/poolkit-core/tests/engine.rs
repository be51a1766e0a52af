//! Engine behaviour with an in-memory manager (pure pool logic, no I/O): order, sizes,
//! rotation, timeouts, cancellation, resize, validation, leaks.
#![cfg(feature = "bb8")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use poolkit_core::engine::{AcquireError, Checkout, Engine};
use poolkit_core::{Backend, PoolConfig};
use tokio::sync::Mutex;

/// Hands out numbered in-memory connections; can be told to fail connects.
#[derive(Debug, Default)]
struct Mem {
    next: AtomicU64,
    fail: std::sync::atomic::AtomicBool,
    /// Connect and validation take this long.
    slow: std::sync::Mutex<Duration>,
    /// Validation fails.
    invalid: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct MemError;
impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused by test")
    }
}
impl std::error::Error for MemError {}

impl bb8::ManageConnection for Mem {
    type Connection = u64;
    type Error = MemError;
    async fn connect(&self) -> Result<u64, MemError> {
        let slow = *self.slow.lock().unwrap();
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        if self.fail.load(Ordering::Relaxed) {
            return Err(MemError);
        }
        Ok(self.next.fetch_add(1, Ordering::Relaxed))
    }
    async fn is_valid(&self, _: &mut u64) -> Result<(), MemError> {
        let slow = *self.slow.lock().unwrap();
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        if self.invalid.load(Ordering::Relaxed) {
            return Err(MemError);
        }
        Ok(())
    }
    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

fn config(size: u32) -> PoolConfig {
    let mut c = PoolConfig::new("mem", Backend::Postgres);
    c.pool_size = size;
    c.acquire_timeout = Duration::from_secs(5);
    c
}

// One thread, so that when task i counts as pending it has also queued on the gate (its
// first poll runs to the await) before task i + 1 starts: arrival order is well defined.
#[tokio::test(flavor = "current_thread")]
async fn waiters_are_served_in_arrival_order() {
    let pool = Arc::new(
        Engine::build(Mem::default(), config(1))
            .await
            .expect("build"),
    );
    let held = pool.get().await.expect("first");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..20 {
        let (p, order) = (Arc::clone(&pool), Arc::clone(&order));
        handles.push(tokio::spawn(async move {
            let c = p.get().await.expect("get");
            order.lock().await.push(i);
            drop(c);
        }));
        // Let task i queue before task i + 1 arrives.
        while pool.telemetry().pending() < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    drop(held);
    for h in handles {
        h.await.expect("task");
    }
    assert_eq!(*order.lock().await, (0..20).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_connections_close_when_returned_with_nobody_waiting() {
    let mut c = config(2);
    c.max_size = Some(4);
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    let held: Vec<_> = futures_util_join(&pool, 4).await;
    assert_eq!(pool.telemetry().open(), 4);
    drop(held);
    let s = pool.telemetry().stats();
    assert_eq!(s.open, 2, "back to P_POOL_SIZE: {s:?}");
    assert_eq!(s.closed_by("overflow"), 2);
}

async fn futures_util_join(pool: &Engine<Mem>, n: usize) -> Vec<Checkout<Mem>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.get().await.expect("get"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_uses_rotates_and_lifetime_expires() {
    let mut c = config(1);
    c.max_uses = Some(3);
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(*pool.get().await.expect("get"));
    }
    assert_eq!(ids, vec![0, 0, 0, 1, 1, 1, 2]);
    assert_eq!(pool.telemetry().stats().closed_by("max_uses"), 2);

    let mut c = config(1);
    c.max_lifetime = Some(Duration::from_millis(200));
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    let first = *pool.get().await.expect("get");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = *pool.get().await.expect("get");
    assert_ne!(first, second, "an expired connection is not handed out");
    assert_eq!(pool.telemetry().stats().closed_by("max_lifetime"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_on_time_and_connect_failures_say_why() {
    let mut c = config(1);
    c.acquire_timeout = Duration::from_millis(300);
    let pool = Engine::build(Mem::default(), c.clone())
        .await
        .expect("build");
    let _held = pool.get().await.expect("get");
    let start = Instant::now();
    match pool.get().await {
        Err(AcquireError::Timeout { waited, .. }) => {
            assert!(
                waited >= Duration::from_millis(290)
                    && start.elapsed() < Duration::from_millis(600),
                "{waited:?}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let failing = Mem::default();
    failing.fail.store(true, Ordering::Relaxed);
    let pool = Engine::build(failing, c).await.expect("lazy build");
    match pool.get().await {
        Err(AcquireError::Connect(e)) => assert_eq!(e.to_string(), "connection refused by test"),
        other => panic!("expected the connect error, got {other:?}"),
    }
    assert!(pool.telemetry().stats().errors_by("connect") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_waiters_at_once() {
    let pool = Arc::new(
        Engine::build(Mem::default(), config(1))
            .await
            .expect("build"),
    );
    let held = pool.get().await.expect("get");
    let waiter = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    while pool.telemetry().pending() == 0 {
        tokio::task::yield_now().await;
    }
    pool.close();
    let r = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("not a hang")
        .expect("task");
    assert!(matches!(r, Err(AcquireError::Closed)), "{r:?}");
    assert!(matches!(pool.get().await, Err(AcquireError::Closed)));
    drop(held);
    assert_eq!(pool.telemetry().used(), 0);
}

/// Open, used and pending settle at `open` / 0 / 0 and `open = created - closed`.
async fn settled(pool: &Engine<Mem>, open: u64) {
    let t = Instant::now();
    loop {
        let s = pool.telemetry().stats();
        if s.open == open && s.used == 0 && s.pending == 0 {
            assert_eq!(s.open, s.created - s.closed_total(), "{s:?}");
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "did not settle at {open}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_under_load_grows_at_once_and_shrinks_without_touching_busy_ones() {
    let mut c = config(4);
    c.acquire_timeout = Duration::from_secs(5);
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    // 200 tasks hammer a pool of 4; each holds its connection 1 ms.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let max_used = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (pool, stop, max_used) = (pool.clone(), Arc::clone(&stop), Arc::clone(&max_used));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let c = pool.get().await.expect("get under resize");
                    max_used.fetch_max(pool.telemetry().used(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    drop(c);
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pool.telemetry().open() <= 4);
    // Grow: the queue is served by new connections at once.
    pool.resize(16, None).expect("grow");
    let t = Instant::now();
    while pool.telemetry().open() < 16 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "did not grow: {:?}",
            pool.telemetry().stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Shrink: never more than the new ceiling once busy ones come back.
    pool.resize(2, None).expect("shrink");
    tokio::time::sleep(Duration::from_millis(200)).await;
    max_used.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = pool.telemetry().stats();
    assert!(s.open <= 2 && s.max_size == 2, "{s:?}");
    assert!(
        max_used.load(Ordering::Relaxed) <= 2,
        "used above the cut ceiling"
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert!(t.await.expect("task") > 0, "every task was served");
    }
    assert!(pool.telemetry().stats().closed_by("overflow") >= 14);
    settled(&pool, pool.telemetry().open()).await;
    // Bad sizes: the same errors as from the environment.
    let e = pool.resize(0, None).unwrap_err().to_string();
    assert!(e.contains("MEM_POOL_SIZE") && e.contains('0'), "{e}");
    let e = pool.resize(8, Some(4)).unwrap_err().to_string();
    assert!(e.contains("MEM_POOL_MAXSIZE"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_gets_lose_nothing_mid_wait_mid_connect_and_mid_validation() {
    let mem = Mem::default();
    *mem.slow.lock().unwrap() = Duration::from_millis(20);
    let mut c = config(3);
    c.ping_if_idle = Duration::ZERO; // every idle checkout is validated (slowly)
    let pool = Engine::build(mem, c).await.expect("build");
    // Mid-connect: the first gets start connects and are dropped before they finish.
    for _ in 0..50 {
        let _ = tokio::time::timeout(Duration::from_millis(5), pool.get()).await;
    }
    // Mid-wait and mid-validation, many at once.
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let cut = Duration::from_millis(1 + (i % 40));
                if let Ok(Ok(c)) = tokio::time::timeout(cut, pool.get()).await {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    drop(c);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = pool.telemetry().stats();
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
    assert!(s.open <= 3, "{s:?}");
    assert!(
        s.closed_by("aborted") > 0,
        "a check cut short closes its connection: {s:?}"
    );
    // Every place is back: the full size can be held at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            tokio::time::timeout(Duration::from_secs(2), pool.get())
                .await
                .expect("no lost place")
                .expect("get"),
        );
    }
    drop(held);
    settled(&pool, pool.telemetry().open()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_validation_closes_and_replaces_and_try_get_never_waits() {
    let mut c = config(2);
    c.ping_if_idle = Duration::ZERO;
    c.min_idle = 2;
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    settled(&pool, 2).await;
    // try_get only takes an idle connection that needs no check (here: none does).
    assert!(pool.try_get().is_none());
    pool.manager().invalid.store(true, Ordering::Relaxed);
    // Both idle connections fail their check and are closed; a new one (which needs no
    // check) serves the caller.
    let conn = pool
        .get()
        .await
        .expect("a fresh connection after the bad ones");
    assert_eq!(*conn, 2, "neither failed connection is handed out");
    let s = pool.telemetry().stats();
    assert!(
        s.closed_by("invalid") >= 2 && s.errors_by("health_check") >= 2,
        "{s:?}"
    );
    drop(conn);
    let mut c = config(1);
    c.min_idle = 1;
    let fresh = Engine::build(Mem::default(), c).await.expect("build");
    let held = fresh.try_get().expect("idle and fresh");
    assert!(
        fresh.try_get().is_none(),
        "none idle: no waiting, no connecting"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_down_to_min_idle_and_min_idle_is_restored() {
    let mut c = config(6);
    c.min_idle = 2;
    c.idle_timeout = Some(Duration::from_millis(150));
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    let held: Vec<_> = futures_util_join(&pool, 6).await;
    drop(held);
    assert_eq!(pool.telemetry().open(), 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = pool.telemetry().stats();
    assert_eq!(s.open, 2, "{s:?}");
    assert_eq!(s.closed_by("idle_timeout"), 4, "{s:?}");
    // Lose both: the pool opens two again by itself.
    let mut a = pool.get().await.expect("a");
    let mut b = pool.get().await.expect("b");
    a.tracked()
        .retire(poolkit_core::metrics::CloseReason::Broken);
    b.tracked()
        .retire(poolkit_core::metrics::CloseReason::Broken);
    drop((a, b));
    settled(&pool, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaks_are_counted_once_per_checkout_without_a_task_each() {
    let mut c = config(2);
    c.leak_threshold = Some(Duration::from_millis(100));
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    for _ in 0..1000 {
        drop(pool.get().await.expect("short checkout"));
    }
    let held = pool.get().await.expect("held");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pool.telemetry().stats().errors_by("leak"), 1);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_under_contention_every_task_within_ten_percent() {
    let pool = Engine::build(Mem::default(), config(4))
        .await
        .expect("build");
    let end = Instant::now() + Duration::from_millis(800);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    let c = pool.get().await.expect("get");
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    drop(c);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.expect("task"));
    }
    counts.sort_unstable();
    let (min, median) = (counts[0], counts[counts.len() / 2]);
    assert!(min * 10 >= median * 9, "unfair: min {min}, median {median}");
}
