//! Rotation after P_MAX_USES, leak reports with the caller's location, and drain on close.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_rotate_after_max_uses() {
    let pool = builder("rotate")
        .pool_size(1)
        .min_idle(1)
        .max_uses(Some(3))
        .build()
        .await
        .expect("build");
    let mut pids = Vec::new();
    for _ in 0..7 {
        let conn = pool.get().await.expect("get");
        let row = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid");
        pids.push(row.get::<_, i32>(0));
    }
    assert!(
        pids[0] == pids[1] && pids[1] == pids[2] && pids[2] != pids[3],
        "{pids:?}"
    );
    assert!(pids[3] == pids[5] && pids[5] != pids[6], "{pids:?}");
    assert_eq!(pool.stats().closed_by("max_uses"), 2);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_past_the_leak_threshold_is_reported_with_its_caller() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global: the report comes from a timer task on another worker thread.
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber in this binary");

    let pool = builder("leak")
        .pool_size(2)
        .min_idle(1)
        .leak_threshold(Some(Duration::from_millis(150)))
        .build()
        .await
        .expect("build");
    let quick = pool.get().await.expect("get");
    drop(quick);
    let held = pool.get().await.expect("get"); // this line is the one the report names
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(held);
    let text = String::from_utf8(logs.0.lock().expect("buffer").clone()).expect("utf-8");
    assert_eq!(
        pool.stats().errors_by("leak"),
        1,
        "only the long hold is a leak; logs: {text}"
    );
    assert!(
        text.contains("leak threshold") && text.contains("hygiene.rs"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_checkouts_finish_then_closes_everything() {
    let admin = admin().await;
    let pool = builder("drain")
        .pool_size(4)
        .min_idle(3)
        .build()
        .await
        .expect("build");
    let mut holders = Vec::new();
    for _ in 0..2 {
        let conn = pool.get().await.expect("get");
        holders.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            conn.simple_query("SELECT 1")
                .await
                .expect("a checked-out connection keeps working during drain");
        }));
    }
    let draining = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.drain(Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let err = pool.get().await.expect_err("closed");
    assert!(err.is_closed(), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "fails at once"
    );
    for h in holders {
        h.await.expect("holder");
    }
    assert!(
        draining.await.expect("drain task"),
        "drained within the deadline"
    );
    let s = pool.stats();
    assert_eq!((s.open, s.used), (0, 0), "{s:?}");
    assert!(s.closed_by("pool_closed") >= 3, "{s:?}");
    assert!(
        eventually(Duration::from_secs(2), || async {
            backends(&admin, "drain").await == 0
        })
        .await,
        "no backend left on the server"
    );
}
