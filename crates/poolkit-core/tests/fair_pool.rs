//! FairPool behaviour with an in-memory manager (pure pool logic, no I/O).
#![cfg(feature = "bb8")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use poolkit_core::bb8::{AcquireError, FairPool};
use poolkit_core::{Backend, PoolConfig};
use tokio::sync::Mutex;

/// Hands out numbered in-memory connections; can be told to fail connects.
#[derive(Debug, Default)]
struct Mem {
    next: AtomicU64,
    fail: std::sync::atomic::AtomicBool,
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
        if self.fail.load(Ordering::Relaxed) {
            return Err(MemError);
        }
        Ok(self.next.fetch_add(1, Ordering::Relaxed))
    }
    async fn is_valid(&self, _: &mut u64) -> Result<(), MemError> {
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
        FairPool::build(Mem::default(), config(1))
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
    let pool = FairPool::build(Mem::default(), c).await.expect("build");
    let held: Vec<_> = futures_util_join(&pool, 4).await;
    assert_eq!(pool.telemetry().open(), 4);
    drop(held);
    let s = pool.telemetry().stats();
    assert_eq!(s.open, 2, "back to P_POOL_SIZE: {s:?}");
    assert_eq!(s.closed_by("overflow"), 2);
}

async fn futures_util_join(
    pool: &FairPool<Mem>,
    n: usize,
) -> Vec<poolkit_core::bb8::Checkout<Mem>> {
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
    let pool = FairPool::build(Mem::default(), c).await.expect("build");
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(*pool.get().await.expect("get"));
    }
    assert_eq!(ids, vec![0, 0, 0, 1, 1, 1, 2]);
    assert_eq!(pool.telemetry().stats().closed_by("max_uses"), 2);

    let mut c = config(1);
    c.max_lifetime = Some(Duration::from_millis(200));
    let pool = FairPool::build(Mem::default(), c).await.expect("build");
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
    let pool = FairPool::build(Mem::default(), c.clone())
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
    let pool = FairPool::build(failing, c).await.expect("lazy build");
    match pool.get().await {
        Err(AcquireError::Connect(e)) => assert_eq!(e.to_string(), "connection refused by test"),
        other => panic!("expected the connect error, got {other:?}"),
    }
    assert!(pool.telemetry().stats().errors_by("connect") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_waiters_at_once() {
    let pool = Arc::new(
        FairPool::build(Mem::default(), config(1))
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
