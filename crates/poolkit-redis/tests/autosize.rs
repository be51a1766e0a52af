//! `REDIS_POOL_SIZE=auto`: the exclusive pool sizes itself on the real server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use poolkit_redis::{Config, Pool, redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_pool_grows_under_blocking_commands_and_returns_to_the_floor() {
    let vars = [
        ("T_RAUTO_URL", redis_url()),
        ("T_RAUTO_POOL_SIZE", "auto".to_owned()),
        ("T_RAUTO_POOL_MAXSIZE", "12".to_owned()),
        ("T_RAUTO_POOL_AUTO_INTERVAL", "150ms".to_owned()),
        ("T_RAUTO_IDLE_TIMEOUT", "1s".to_owned()),
    ];
    let lookup = move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let config = Config::from_lookup("T_RAUTO", &lookup).expect("config");
    let pool = Pool::new(config).await.expect("build");
    let s = pool.exclusive_stats();
    assert!(s.auto_sized);
    assert_eq!((s.open_limit, s.max_size), (1, 12));
    assert!(
        !pool.stats().auto_sized,
        "shared connections are not auto-sized"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let list = format!("poolkit:rauto:{}", std::process::id());
    let users: Vec<_> = (0..40)
        .map(|_| {
            let (pool, stop, list) = (pool.clone(), stop.clone(), list.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A 10 ms blocking command: more connections serve more callers.
                    let r: Option<(String, String)> = pool
                        .with_exclusive(async |c| {
                            redis::cmd("BLPOP")
                                .arg(&list)
                                .arg(0.01)
                                .query_async(c)
                                .await
                        })
                        .await
                        .expect("BLPOP");
                    assert!(r.is_none());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(5);
    let mut peak = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(pool.exclusive_stats().open_limit);
    }
    stop.store(true, Ordering::Relaxed);
    for u in users {
        assert!(u.await.expect("user") > 0);
    }
    assert!(
        peak >= 9,
        "10 ms commands: it should near the ceiling 12, peaked at {peak}"
    );
    assert!(peak <= 12);
    let idle_from = Instant::now();
    loop {
        let s = pool.exclusive_stats();
        if s.open_limit == 1 && s.open <= 1 {
            break;
        }
        assert!(
            idle_from.elapsed() < Duration::from_secs(2),
            "not back at the floor after 2 s idle: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
