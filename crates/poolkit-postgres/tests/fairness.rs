//! 1000 tasks on 20 connections: first come, first served, nobody starves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_on_twenty_connections_all_make_progress() {
    let pool = builder("fair")
        .pool_size(20)
        .min_idle(20)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("build");
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..1000 {
        let pool = pool.clone();
        let stop = Arc::clone(&stop);
        handles.push(tokio::spawn(async move {
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let conn = pool
                    .get()
                    .await
                    .expect("no timeout with a 30 s acquire timeout");
                conn.simple_query("SELECT 1").await.expect("query");
                ops += 1;
            }
            ops
        }));
    }
    let mut max_open = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = pool.stats();
        assert!(
            s.open <= 20 && s.used <= 20,
            "never above the ceiling: {s:?}"
        );
        max_open = max_open.max(s.open);
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_task = Vec::new();
    for h in handles {
        per_task.push(h.await.expect("task panicked"));
    }
    per_task.sort_unstable();
    let min = per_task[0];
    let median = per_task[per_task.len() / 2];
    let s = pool.stats();
    assert_eq!(s.timeouts, 0);
    assert!(
        min >= 1,
        "a task starved: per-task ops min {min}, median {median}"
    );
    #[allow(clippy::cast_precision_loss)]
    let ratio = min as f64 / median as f64;
    assert!(ratio >= 0.5, "unfair: min {min} vs median {median}");
    assert_eq!(max_open, 20);
    assert_eq!(s.acquires, per_task.iter().sum::<u64>());
    assert_eq!((s.used, s.pending), (0, 0));
}
