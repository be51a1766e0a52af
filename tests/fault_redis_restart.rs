//! A private redis-server killed (SIGKILL) and restarted on the same port while 1,000
//! tasks send commands over the shared connections and 8 tasks wait in `BLPOP` on
//! exclusive connections. Every command either gets its own reply or a typed error within
//! `P_TIMEOUT` + `P_POOL_TIMEOUT`; both modes serve again within 1 s of the server's
//! return; nothing hangs.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::PrivateRedis;
use poolkit::core::PoolError;
use poolkit::redis::{Config, Error, Pool, redis};

const TASKS: u64 = 1000;
const WAITERS: u64 = 8;
const TIMEOUT: Duration = Duration::from_secs(1); // P_TIMEOUT and P_POOL_TIMEOUT
/// A command that takes longer than this counts as a hang.
const HANG: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    timeout: AtomicU64,
    connect: AtomicU64,
    backend: AtomicU64,
    untyped: AtomicU64,
    mixed_up: AtomicU64,
    hung: AtomicU64,
    slowest_error_ms: AtomicU64,
    /// Milliseconds since the test began of the last success (shared, exclusive).
    last_ok_ms: AtomicU64,
}

impl Tally {
    fn error(&self, e: &Error, took: Duration) {
        let counter = match e {
            Error::Pool(PoolError::Timeout { .. }) => &self.timeout,
            Error::Pool(PoolError::Connect { .. }) => &self.connect,
            Error::Backend(_) => &self.backend,
            _ => &self.untyped,
        };
        counter.fetch_add(1, SeqCst);
        self.slowest_error_ms
            .fetch_max(u64::try_from(took.as_millis()).unwrap_or(u64::MAX), SeqCst);
    }
}

fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms(since: Instant) -> u64 {
    ms_of(since.elapsed())
}

/// Runs `op` under the hang watchdog and counts its outcome.
async fn counted<T>(
    tally: &Tally,
    begin: Instant,
    op: impl std::future::Future<Output = Result<T, Error>>,
    check: impl FnOnce(T) -> bool,
) {
    let t = Instant::now();
    match tokio::time::timeout(HANG, op).await {
        Err(_) => {
            tally.hung.fetch_add(1, SeqCst);
        }
        Ok(Ok(v)) => {
            if check(v) {
                tally.ok.fetch_add(1, SeqCst);
                tally.last_ok_ms.fetch_max(ms(begin), SeqCst);
            } else {
                tally.mixed_up.fetch_add(1, SeqCst);
            }
        }
        Ok(Err(e)) => {
            tally.error(&e, t.elapsed());
            // Back off a little so a dead server is not spun on by 1,000 tasks.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Milliseconds (since `begin`) of the first success recorded after `from_ms`.
async fn first_ok_after(tally: &Tally, from_ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let last = tally.last_ok_ms.load(SeqCst);
        if last >= from_ms {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("no success within 5 s of the server's return");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load_with_blpop_waiters() {
    let mut server = PrivateRedis::start(&[]);
    let mut config = Config::new(server.url());
    config.pool.name = "fault_rrestart".to_owned();
    config.pool.prefix = "FAULT_RRESTART".to_owned();
    config.pool.pool_size = 12; // 12 shared sockets; 12 exclusive for the 8 waiters
    config.max_in_flight = 512;
    config.pool.acquire_timeout = TIMEOUT;
    config.command_timeout = TIMEOUT;
    let pool = Pool::new(config)
        .await
        .expect("pool on the private redis-server");

    let begin = Instant::now();
    let stop_at = begin + Duration::from_secs(6);
    let shared = Arc::new(Tally::default());
    let exclusive = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (pool, tally) = (pool.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let word = format!("t{t}-{i}");
                let cmd = redis::cmd("ECHO").arg(&word).clone();
                counted(&tally, begin, pool.query::<String>(&cmd), |r| r == word).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for w in 0..WAITERS {
        let (pool, tally) = (pool.clone(), exclusive.clone());
        tasks.push(tokio::spawn(async move {
            let list = format!("jobs{w}");
            while Instant::now() < stop_at {
                let blpop = async {
                    let mut conn = pool.exclusive().await?;
                    let reply: Option<(String, String)> = redis::cmd("BLPOP")
                        .arg(&list)
                        .arg(0.2)
                        .query_async(&mut conn)
                        .await?;
                    Ok::<_, Error>(reply)
                };
                counted(&tally, begin, blpop, |r| {
                    r.is_none_or(|(key, job)| key == list && job.starts_with(&format!("{list}:")))
                })
                .await;
            }
        }));
    }
    // A producer keeps every list fed through the shared connections.
    {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                for w in 0..WAITERS {
                    let list = format!("jobs{w}");
                    let cmd = redis::cmd("RPUSH")
                        .arg(&list)
                        .arg(format!("{list}:{n}"))
                        .clone();
                    let _ = pool.query::<i64>(&cmd).await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = (shared.ok.load(SeqCst), exclusive.ok.load(SeqCst));
    tokio::task::block_in_place(|| server.stop());
    let down_ms = ms(begin);
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| server.up());
    let back_ms = ms(begin);
    let shared_back = first_ok_after(&shared, back_ms).await - back_ms;
    let exclusive_back = first_ok_after(&exclusive, back_ms).await - back_ms;
    for t in tasks {
        t.await.expect("a load task panicked");
    }
    let s = pool.stats();
    println!(
        "FIGURES redis restart: down at {down_ms} ms for 2 s; shared {shared:?}; exclusive {exclusive:?}; shared served again {shared_back} ms and BLPOP {exclusive_back} ms after the server was back; ok before the kill {before:?}; reconnects {}",
        pool.reconnects()
    );
    for (what, tally) in [("shared", &shared), ("exclusive", &exclusive)] {
        assert_eq!(
            tally.hung.load(SeqCst),
            0,
            "{what}: nothing hangs: {tally:?}"
        );
        assert_eq!(tally.mixed_up.load(SeqCst), 0, "{what}: own replies only");
        assert_eq!(
            tally.untyped.load(SeqCst),
            0,
            "{what}: typed errors: {tally:?}"
        );
        let errors =
            tally.timeout.load(SeqCst) + tally.connect.load(SeqCst) + tally.backend.load(SeqCst);
        assert!(errors > 0, "{what}: the restart was felt: {tally:?}");
        // At worst a wait for a place (P_POOL_TIMEOUT) and then the command (P_TIMEOUT).
        assert!(
            tally.slowest_error_ms.load(SeqCst) <= ms_of(2 * TIMEOUT) + 300,
            "{what}: errors within the timeouts: {tally:?}"
        );
    }
    assert!(
        before.0 > 1000 && before.1 > 0,
        "load ran before the kill: {before:?}"
    );
    assert!(shared_back <= 1000, "shared recovery {shared_back} ms");
    assert!(
        exclusive_back <= 1000,
        "exclusive recovery {exclusive_back} ms"
    );
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
    let e = pool.exclusive_stats();
    assert_eq!((e.used, e.pending), (0, 0), "{e:?}");
    assert!(e.open <= 12, "{e:?}");
}
