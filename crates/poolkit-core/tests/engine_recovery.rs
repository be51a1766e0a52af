//! How the engine recovers from a bad connection and from a server that was away, with an
//! in-memory manager (pure pool logic): a broken idle connection is thrown away without a
//! ping, a caller who arrives once the server is back gets a connect attempt within its
//! own acquire timeout, whatever back-off the pool's connects were in, and callers served
//! while the server refuses connects do not turn the back-off into a retry per caller.
#![cfg(feature = "bb8")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use poolkit_core::engine::Engine;
use poolkit_core::{Backend, PoolConfig};

/// Numbered in-memory connections. Connects fail while `down`; connections whose number
/// is below `broken_below` report `has_broken`; a ping never answers.
#[derive(Debug, Default)]
struct Flaky {
    next: AtomicU64,
    down: AtomicBool,
    broken_below: AtomicU64,
    connects: AtomicU64,
    pings: AtomicU64,
    broken_asked: AtomicU64,
}

#[derive(Debug)]
struct Refused;
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused by test")
    }
}
impl std::error::Error for Refused {}

impl bb8::ManageConnection for Flaky {
    type Connection = u64;
    type Error = Refused;
    async fn connect(&self) -> Result<u64, Refused> {
        self.connects.fetch_add(1, Relaxed);
        if self.down.load(Relaxed) {
            return Err(Refused);
        }
        Ok(self.next.fetch_add(1, Relaxed))
    }
    async fn is_valid(&self, _: &mut u64) -> Result<(), Refused> {
        self.pings.fetch_add(1, Relaxed);
        // A half-open socket: the ping hangs.
        std::future::pending::<()>().await;
        Ok(())
    }
    fn has_broken(&self, conn: &mut u64) -> bool {
        self.broken_asked.fetch_add(1, Relaxed);
        *conn < self.broken_below.load(Relaxed)
    }
}

fn config(acquire_timeout: Duration) -> PoolConfig {
    let mut c = PoolConfig::new("flaky", Backend::Postgres);
    c.pool_size = 2;
    c.min_idle = 1;
    c.acquire_timeout = acquire_timeout;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_idle_connection_is_discarded_without_a_ping() {
    let pool = Engine::build(Flaky::default(), config(Duration::from_secs(4)))
        .await
        .expect("build");
    let m = pool.manager();
    // Connection 0 sits idle; its socket closes (has_broken says so from now on).
    m.broken_below.store(1, Relaxed);
    m.broken_asked.store(0, Relaxed);
    let start = std::time::Instant::now();
    let conn = pool.get().await.expect("served by a new connection");
    let took = start.elapsed();
    assert_eq!(*conn, 1, "the broken connection is not handed out");
    assert_eq!(
        m.pings.load(Relaxed),
        0,
        "no ping for a connection known broken"
    );
    assert_eq!(
        m.broken_asked.load(Relaxed),
        1,
        "has_broken is asked once per checkout"
    );
    assert!(
        took < Duration::from_millis(500),
        "the caller does not wait out a ping (ping timeout is 1 s): {took:?}"
    );
    let s = pool.telemetry().stats();
    assert_eq!(
        (s.closed_by("broken"), s.errors_by("broken")),
        (1, 1),
        "{s:?}"
    );
    assert_eq!(s.errors_by("health_check"), 0, "{s:?}");
}

/// The server goes away: the pool retires its connections and keeps reconnecting for
/// min_idle, backing off after each refusal; after the eighth refusal the server is back.
async fn away_then_back(pool: &Engine<Flaky>) {
    let m = pool.manager();
    m.down.store(true, Relaxed);
    assert!(pool.retire_all(pool.generation()));
    let seen = m.connects.load(Relaxed);
    while m.connects.load(Relaxed) < seen + 8 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    m.down.store(false, Relaxed);
}

// Paused time: back-off sleeps pass in an instant and the timings are exact.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_caller_after_the_server_is_back_gets_a_connect_within_its_acquire_timeout() {
    let acquire_timeout = Duration::from_millis(200);
    let pool = Engine::build(Flaky::default(), config(acquire_timeout))
        .await
        .expect("build");
    // The server is back just after a refusal, so the reconnect has its whole back-off
    // ahead of it (capped at half the acquire timeout); a caller arrives.
    away_then_back(&pool).await;
    let start = tokio::time::Instant::now();
    let conn = pool
        .get()
        .await
        .expect("a connect is tried for this caller within its acquire timeout");
    assert!(
        start.elapsed() <= acquire_timeout / 2,
        "served after the back-off at the latest: {:?}",
        start.elapsed()
    );
    drop(conn);

    // Again, with a caller whose own timeout (20 ms) is shorter than the back-off ahead:
    // its arrival cuts the back-off short.
    away_then_back(&pool).await;
    let start = tokio::time::Instant::now();
    let conn = pool
        .get_timeout(Duration::from_millis(20))
        .await
        .expect("a connect is tried within this caller's own timeout");
    assert!(
        start.elapsed() < Duration::from_millis(20),
        "{:?}",
        start.elapsed()
    );
    drop(conn);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn back_off_is_capped_by_the_acquire_timeout() {
    let acquire_timeout = Duration::from_millis(200);
    let pool = Engine::build(Flaky::default(), config(acquire_timeout))
        .await
        .expect("build");
    let m = pool.manager();
    m.down.store(true, Relaxed);
    assert!(pool.retire_all(pool.generation()));
    // Let the back-off grow to its longest.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = m.connects.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = m.connects.load(Relaxed) - before;
    // At most half the acquire timeout between tries (100 ms): at least 15 in 2 s, where
    // an uncapped back-off (500-750 ms) makes 4 at most.
    assert!(tries >= 15, "{tries} connect attempts in 2 s");
}

// Paused time: the attempts are counted exactly.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn callers_served_during_an_outage_do_not_cut_the_back_off_short() {
    // Four connections serve; the other four slots' connects are refused (a server that
    // refuses new logins: a rotated password, max_connections reached).
    let mut c = config(Duration::from_secs(2));
    c.pool_size = 8;
    c.min_idle = 4;
    let pool = Engine::build(Flaky::default(), c).await.expect("build");
    let m = pool.manager();
    m.down.store(true, Relaxed);
    let callers: Vec<_> = (0..200)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(conn) = pool.get().await {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        drop(conn);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = m.connects.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tries = m.connects.load(Relaxed) - before;
    for c in callers {
        c.abort();
    }
    println!("{tries} attempts in 1 s");
    assert!(tries < 200, "{tries} connect attempts in 1 s");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_idle_connection_whose_socket_closed_is_not_counted_open_past_one_upkeep_round() {
    let pool = Engine::build(Flaky::default(), config(Duration::from_secs(4)))
        .await
        .expect("build");
    let m = pool.manager();
    assert_eq!(pool.counts().open, 1);
    // The server ends idle connection 0's session; nobody checks a connection out.
    m.broken_below.store(1, Relaxed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = pool.telemetry().stats();
    assert_eq!(s.closed_by("broken"), 1, "{s:?}");
    assert_eq!(m.pings.load(Relaxed), 0, "found without a ping");
    // min_idle opens a new one in its place.
    assert_eq!(pool.counts().open, 1);
    assert_eq!(*pool.get().await.expect("the new connection"), 1);
}
