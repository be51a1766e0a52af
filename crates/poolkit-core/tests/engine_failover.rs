//! The engine's failover pieces with an in-memory manager: the checkout ping's own bound
//! (`P_PING_TIMEOUT`: a half-open connection costs the caller that bound, and the caller is
//! served by another connection) and `retire_all` (every connection retired as one event,
//! connects under way redone, a burst of callers retiring each connection once).
#![cfg(feature = "bb8")]

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use poolkit_core::engine::Engine;
use poolkit_core::{Backend, PoolConfig};

/// Numbered in-memory connections; those listed in `frozen` never answer a ping.
#[derive(Debug, Default)]
struct Mem {
    next: AtomicU64,
    frozen: Mutex<HashSet<u64>>,
    connect_delay: Mutex<Duration>,
}

#[derive(Debug)]
struct MemError;
impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("test error")
    }
}
impl std::error::Error for MemError {}

impl bb8::ManageConnection for Mem {
    type Connection = u64;
    type Error = MemError;
    async fn connect(&self) -> Result<u64, MemError> {
        let delay = *self.connect_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        Ok(self.next.fetch_add(1, SeqCst))
    }
    async fn is_valid(&self, conn: &mut u64) -> Result<(), MemError> {
        if self.frozen.lock().unwrap().contains(conn) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

fn config(size: u32) -> PoolConfig {
    let mut c = PoolConfig::new("failover_mem", Backend::Postgres);
    c.pool_size = size;
    c.min_idle = size;
    c.acquire_timeout = Duration::from_secs(2);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_that_does_not_answer_costs_the_ping_timeout_and_another_connection_serves() {
    let mut c = config(3);
    c.ping_if_idle = Duration::ZERO; // validate every checkout
    c.ping_timeout = Some(Duration::from_millis(150));
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    // Take all three and return them so that connection 0 is on top of the idle stack.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.get().await.expect("get"));
    }
    held.sort_by_key(|c| std::cmp::Reverse(**c));
    drop(held); // returned 2, 1, 0: 0 is taken first
    pool.manager().frozen.lock().unwrap().insert(0);
    let asked = Instant::now();
    let conn = pool.get().await.expect("served by another connection");
    let took = asked.elapsed();
    assert_ne!(*conn, 0, "the frozen connection was handed out");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(600),
        "the caller waited {took:?}; the ping bound is 150 ms and the acquire timeout 2 s"
    );
    let s = pool.telemetry().stats();
    assert_eq!(
        (s.closed_by("invalid"), s.errors_by("health_check")),
        (1, 1),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_all_retires_every_connection_once_and_reopens() {
    let pool = Engine::build(Mem::default(), config(4))
        .await
        .expect("build");
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    assert_eq!((a.generation(), pool.generation()), (0, 0));
    assert!(
        pool.retire_all(a.generation()),
        "the first caller to see the move retires"
    );
    assert!(
        !pool.retire_all(b.generation()),
        "the same move seen again does nothing"
    );
    assert_eq!(pool.generation(), 1);
    // The 2 idle ones closed at once; min idle is restored with new connections.
    let end = Instant::now() + Duration::from_secs(2);
    while pool.telemetry().stats().created < 6 {
        assert!(Instant::now() < end, "no replacements");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool.telemetry().stats().closed_by("server_moved"), 2);
    drop((a, b)); // in use during the event: closed when returned, never reused
    let s = pool.telemetry().stats();
    assert_eq!(s.closed_by("server_moved"), 4, "{s:?}");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let c = pool.get().await.expect("get");
        assert_eq!(c.generation(), 1);
        seen.push(*c);
    }
    assert!(
        seen.iter().all(|id| *id >= 4),
        "an old connection came back: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_under_way_during_the_move_is_redone() {
    let mut c = config(1);
    c.min_idle = 0;
    let pool = Engine::build(Mem::default(), c).await.expect("build");
    *pool.manager().connect_delay.lock().unwrap() = Duration::from_millis(200);
    let getter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let c = pool.get().await.expect("get");
            (*c, c.generation())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pool.retire_all(0));
    let (id, generation) = getter.await.expect("task");
    assert_eq!(
        (id, generation),
        (1, 1),
        "the connect begun before the move was redone"
    );
    assert_eq!(pool.telemetry().stats().closed_by("server_moved"), 1);
}
