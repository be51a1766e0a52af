//! PostgreSQL restart under load: 1000 tasks share a pool of 20 on a private cluster that
//! stops for 3 s and starts again. Every failure must be a typed error within the acquire
//! timeout, the pool must serve again within 2 s of the server's return, open connections
//! must never pass the ceiling, and the stats must add up afterwards. An idle pool whose
//! server stops stops counting the dead connections as open within an upkeep round.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::PrivatePg;
use poolkit::core::PoolError;
use poolkit::postgres::{Error, Pool};

const TASKS: usize = 1000;
const SIZE: u32 = 20;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
const OUTAGE: Duration = Duration::from_secs(3);

/// What one attempt (get + query) ended with, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Timeout,
    Connect,
    Backend,
    Other,
}

struct Attempt {
    started: Duration,
    ended: Duration,
    get_took: Duration,
    outcome: Outcome,
}

fn classify(e: &Error) -> Outcome {
    match e {
        Error::Pool(PoolError::Timeout { .. }) => Outcome::Timeout,
        Error::Pool(PoolError::Connect { .. }) => Outcome::Connect,
        // A statement cut off by the shutdown: the server's 57P01 (typed as the server
        // moving away), or the socket closing.
        Error::Backend(_) | Error::Pool(PoolError::PrimaryMoved { .. }) => Outcome::Backend,
        _ => Outcome::Other,
    }
}

async fn private_cluster() -> Arc<PrivatePg> {
    Arc::new(
        tokio::task::spawn_blocking(PrivatePg::start)
            .await
            .expect("start a private PostgreSQL cluster"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load() {
    let pg = private_cluster().await;
    let pool = Pool::builder()
        .url(pg.url())
        .name("fault_restart")
        .pool_size(SIZE)
        .min_idle(SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .ping_if_idle(Duration::from_secs(30))
        .application_name("poolkit_fault_restart")
        .build()
        .await
        .expect("pool on the private cluster");

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    // Watch the ceiling from both sides: the pool's own count every 5 ms, and the
    // server's pg_stat_activity every 100 ms while it is up.
    let max_open = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (pool, stop, max_open) = (pool.clone(), stop.clone(), max_open.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                max_open.fetch_max(pool.stats().open, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let server_max = Arc::new(AtomicU64::new(0));
    let server_watcher = {
        let (url, stop, server_max) = (pg.url(), stop.clone(), server_max.clone());
        tokio::spawn(async move {
            let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poolkit_fault_restart'";
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok((client, conn))) = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio_postgres::connect(&url, tokio_postgres::NoTls),
                )
                .await
                {
                    let driver = tokio::spawn(conn);
                    if let Ok(row) = client.query_one(sql, &[]).await {
                        let n: i64 = row.get(0);
                        server_max.fetch_max(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
                    }
                    drop(client);
                    let _ = driver.await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let (pool, stop) = (pool.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut log = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = t0.elapsed();
                let got = tokio::time::timeout(Duration::from_secs(5), pool.get())
                    .await
                    .expect("get() hung past 5 s");
                let get_took = t0.elapsed() - started;
                let outcome = match got {
                    Ok(conn) => {
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            conn.simple_query("SELECT 1"),
                        )
                        .await
                        .expect("a query hung past 5 s")
                        {
                            Ok(_) => Outcome::Ok,
                            Err(e) => classify(&Error::from(e)),
                        }
                    }
                    Err(e) => classify(&e),
                };
                log.push(Attempt {
                    started,
                    ended: t0.elapsed(),
                    get_took,
                    outcome,
                });
                if outcome != Outcome::Ok {
                    // A failing caller backs off a little, as a real client would.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            log
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg2 = pg.clone();
    let down_at = t0.elapsed();
    tokio::task::spawn_blocking(move || pg2.down())
        .await
        .expect("stop the server");
    let stopped_at = t0.elapsed();
    tokio::time::sleep(OUTAGE).await;
    let pg2 = pg.clone();
    tokio::task::spawn_blocking(move || pg2.up())
        .await
        .expect("start the server");
    let up_at = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    watcher.await.expect("watcher");
    server_watcher.await.expect("server watcher");

    // 1. Every failure is typed and came within the acquire timeout.
    let slack = Duration::from_millis(300);
    let slowest_get = all.iter().map(|a| a.get_took).max().unwrap_or_default();
    assert!(
        slowest_get <= ACQUIRE_TIMEOUT + slack,
        "a get() took {slowest_get:?}, past the {ACQUIRE_TIMEOUT:?} acquire timeout"
    );
    let count = |o: Outcome| all.iter().filter(|a| a.outcome == o).count();
    assert_eq!(count(Outcome::Other), 0, "untyped or unexpected errors");
    let failed_outside = all
        .iter()
        .filter(|a| {
            a.outcome != Outcome::Ok
                && (a.ended < down_at || a.started > up_at + Duration::from_secs(2))
        })
        .count();
    assert_eq!(
        failed_outside, 0,
        "failures outside the outage (plus the 2 s recovery allowance)"
    );

    // 2. Serving again within 2 s of the server's return.
    let first_ok_after = all
        .iter()
        .filter(|a| a.outcome == Outcome::Ok && a.started >= up_at)
        .map(|a| a.ended)
        .min()
        .expect("no success after the restart");
    let recovery = first_ok_after.saturating_sub(up_at);
    assert!(
        recovery <= Duration::from_secs(2),
        "recovered {recovery:?} after the server returned"
    );
    // Once recovered, nothing failed any more.
    let last_failure = all
        .iter()
        .filter(|a| a.outcome != Outcome::Ok)
        .map(|a| a.ended)
        .max()
        .unwrap_or_default();

    // 3. The ceiling held.
    let max_open = max_open.load(Ordering::Relaxed);
    let server_max = server_max.load(Ordering::Relaxed);
    assert!(
        max_open <= u64::from(SIZE),
        "pool counted {max_open} open > {SIZE}"
    );
    assert!(
        server_max <= u64::from(SIZE),
        "server saw {server_max} backends > {SIZE}"
    );

    // 4. The stats add up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = pool.stats();
    assert_eq!(s.used, 0, "connections left in use: {s:?}");
    assert_eq!(s.pending, 0, "waiters left: {s:?}");
    assert_eq!(
        s.open,
        s.created - s.closed_total(),
        "open != created - closed: {s:?}"
    );
    let oks = count(Outcome::Ok) as u64;
    let backend_failures = count(Outcome::Backend) as u64;
    assert_eq!(
        s.acquires,
        oks + backend_failures,
        "every successful get counted once: {s:?}"
    );
    let get_failures = (count(Outcome::Timeout) + count(Outcome::Connect)) as u64;
    assert!(
        s.timeouts <= get_failures && s.timeouts >= count(Outcome::Timeout) as u64,
        "timeouts {} vs {get_failures} failed gets",
        s.timeouts
    );
    assert!(
        s.closed_by("broken") + s.closed_by("invalid") + s.closed_by("server_moved") >= 1,
        "the restart closed connections as broken or moved (a shutdown ends every session with 57P01): {s:?}"
    );
    assert!(s.errors_by("connect") >= 1, "connect errors counted: {s:?}");

    // 5. No slot lost: the full size can be held at once again.
    let mut held = Vec::new();
    for _ in 0..SIZE {
        held.push(
            tokio::time::timeout(Duration::from_secs(2), pool.get())
                .await
                .expect("get after recovery")
                .expect("a connection after recovery"),
        );
    }
    for c in &held {
        c.simple_query("SELECT 1").await.expect("query");
    }
    drop(held);

    println!(
        "FIGURES pg_restart: tasks={TASKS} size={SIZE} attempts={} ok={oks} timeout={} connect={} backend={backend_failures} \
         stop_took={:?} outage={:?} recovery={recovery:?} last_failure_after_up={:?} slowest_get={slowest_get:?} \
         max_open_pool={max_open} max_open_server={server_max} created={} closed={:?} errors={:?} timeouts_counted={}",
        all.len(),
        count(Outcome::Timeout),
        count(Outcome::Connect),
        stopped_at - down_at,
        up_at - stopped_at,
        last_failure.saturating_sub(up_at),
        s.created,
        s.closed,
        s.errors,
        s.timeouts,
    );
}

/// An idle pool whose server crashes (`pg_ctl -m immediate`: no 57P01, the sockets just
/// close): `/pools` and the gauges stop counting the dead connections within an upkeep
/// round (a second), not at the next checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_a_stopped_server_stop_counting_as_open() {
    let pg = private_cluster().await;
    let pool = Pool::builder()
        .url(pg.url())
        .name("fault_idle_stop")
        .pool_size(4)
        .min_idle(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .build()
        .await
        .expect("pool on the private cluster");
    assert_eq!(pool.stats().open, 4);
    let down = pg.clone();
    tokio::task::spawn_blocking(move || down.crash())
        .await
        .unwrap();
    let stopped = Instant::now();
    while pool.stats().open > 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "still {} open {:?} after the server stopped: {:?}",
            pool.stats().open,
            stopped.elapsed(),
            pool.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = pool.stats();
    println!(
        "FIGURES fault_idle_stop: 4 idle connections counted open for {:?} after the server stopped; closed as broken {}",
        stopped.elapsed(),
        s.closed_by("broken")
    );
    assert_eq!(s.closed_by("broken"), 4, "{s:?}");
    let up = pg.clone();
    tokio::task::spawn_blocking(move || up.up()).await.unwrap();
    let back = Instant::now();
    loop {
        if pool.simple_query("SELECT 1").await.is_ok() {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(3), "not serving again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
