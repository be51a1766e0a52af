//! Cancellation: 10,000 acquires cancelled at random points (timeouts around `get`,
//! timeouts around a query on a checked-out connection, aborted tasks, `select!` losers).
//! Afterwards in-use and pending must be back to 0, no slot may be lost, and the pool must
//! still serve its full size at once.
#![cfg(feature = "postgres")]

mod common;

use std::time::{Duration, Instant};

use common::{Rng, database_url, pg_unreachable};
use poolkit::postgres::Pool;

const SIZE: u32 = 10;
const ACQUIRES: u64 = 10_000;
const WAVE: usize = 500;

/// A random duration from 0 to `max_us` microseconds.
fn jitter(rng: &mut Rng, max_us: u64) -> Duration {
    Duration::from_micros(rng.below(max_us + 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancelled_acquires() {
    let pool = Pool::builder()
        .url(database_url())
        .name("fault_cancel")
        .pool_size(SIZE)
        .min_idle(SIZE)
        .acquire_timeout(Duration::from_secs(5))
        .application_name("poolkit_fault_cancel")
        .build()
        .await
        .unwrap_or_else(|e| panic!("{}", pg_unreachable(&e)));
    let start = Instant::now();
    let mut rng = Rng::new(0x5eed_cafe);
    let mut kinds = [0u64; 4];
    let mut completed = 0u64;
    let mut done = 0u64;
    while done < ACQUIRES {
        let mut handles = Vec::with_capacity(WAVE);
        let mut aborts = Vec::new();
        for _ in 0..WAVE {
            let kind = usize::try_from(rng.below(4)).expect("small");
            kinds[kind] += 1;
            let pool = pool.clone();
            let (a, b) = (jitter(&mut rng, 2_000), jitter(&mut rng, 2_000));
            match kind {
                // A timeout around get(): cancelled while queued or while bb8 works.
                0 => handles.push(tokio::spawn(async move {
                    match tokio::time::timeout(a, pool.get()).await {
                        Ok(Ok(conn)) => {
                            tokio::time::sleep(b).await;
                            drop(conn);
                            true
                        }
                        Ok(Err(e)) => panic!("get failed: {e}"),
                        Err(_) => false,
                    }
                })),
                // A timeout around a query: the connection is dropped mid-query.
                1 => handles.push(tokio::spawn(async move {
                    let conn = pool.get().await.expect("get");
                    tokio::time::timeout(a, conn.simple_query("SELECT pg_sleep(0.001)"))
                        .await
                        .is_ok_and(|r| r.is_ok())
                })),
                // A task aborted from outside at a random moment.
                2 => {
                    let h = tokio::spawn(async move {
                        let conn = pool.get().await.expect("get");
                        conn.simple_query("SELECT 1").await.expect("query");
                        tokio::time::sleep(b).await;
                        true
                    });
                    aborts.push((h, a));
                }
                // The loser of a select! against a timer.
                _ => handles.push(tokio::spawn(async move {
                    tokio::select! {
                        r = pool.get() => { drop(r.expect("get")); true }
                        () = tokio::time::sleep(a) => false,
                    }
                })),
            }
        }
        for (h, after) in aborts {
            tokio::time::sleep(after / 8).await;
            h.abort();
            match h.await {
                Ok(finished) => completed += u64::from(finished),
                Err(e) => assert!(e.is_cancelled(), "task panicked: {e}"),
            }
        }
        for h in handles {
            completed += u64::from(h.await.expect("acquire task"));
        }
        done += WAVE as u64;
    }
    let elapsed = start.elapsed();

    // In use and pending return to 0 (connections returned by dropped futures go back
    // at once; give the runtime a moment to run their drops).
    let settle = Instant::now();
    loop {
        let s = pool.stats();
        if s.used == 0 && s.pending == 0 {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(2),
            "still in use or pending after cancellations: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = pool.stats();
    assert!(s.open <= u64::from(SIZE), "{s:?}");
    assert_eq!(s.open, s.created - s.closed_total(), "{s:?}");
    // No slot lost: nothing counted in use or waiting ...
    assert_eq!((s.used, s.pending), (0, 0), "places lost: {s:?}");
    // ... and the full size can be held at once, each connection working.
    let mut held = Vec::new();
    for _ in 0..SIZE {
        held.push(
            tokio::time::timeout(Duration::from_secs(2), pool.get())
                .await
                .expect("the full size is available again")
                .expect("get"),
        );
    }
    for c in &held {
        c.simple_query("SELECT 1")
            .await
            .expect("a connection still works");
    }
    let in_use = pool.stats().used;
    drop(held);
    assert_eq!(in_use, u64::from(SIZE));
    println!(
        "FIGURES cancellation: acquires={ACQUIRES} kinds(get_timeout,query_timeout,abort,select)={kinds:?} \
         completed={completed} cancelled={} in {elapsed:?}; after: used={} pending={} open={} created={} closed={:?} timeouts={}",
        ACQUIRES - completed,
        s.used,
        s.pending,
        s.open,
        s.created,
        s.closed,
        s.timeouts
    );
}
