//! Redis failover under load: 1,000 tasks of shared traffic (each `SET` and `ECHO` carries
//! a word of its own, so a reply meant for another command shows) and 8 `BLPOP` waiters on
//! exclusive connections fed by a producer.
//!
//! - `replicaof_swap_with_a_moving_name`: a master on 127.0.0.1 and its replica on
//!   127.0.0.2 (the same port) swap roles with `REPLICAOF`, and the pool's name moves to
//!   the new master (a resolver override, as a DNS endpoint moves). The old master answers
//!   READONLY: the pool retires every connection and reconnects.
//! - `sentinel_failover`: the pool follows a real `redis-sentinel`
//!   (`redis+sentinel://…/mymaster`) through `SENTINEL FAILOVER`.
//!
//! Both check: 0 replies mixed between commands, writes resume within 1 s, every failed
//! call has a typed error, nothing hangs.
#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RedisNode, RedisSentinel, port_free_on_two};
use poolkit::core::PoolError;
use poolkit::redis::{Config, Error, Pool, redis};

const TASKS: u64 = 1000;
const WAITERS: u64 = 8;
const HANG: Duration = Duration::from_secs(5);

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
struct Tally {
    writes_ok: AtomicU64,
    reads_ok: AtomicU64,
    blpop_ok: AtomicU64,
    mixed: AtomicU64,
    hung: AtomicU64,
    write_times: Mutex<Vec<u64>>,
    errors: Mutex<HashMap<(&'static str, &'static str), u64>>,
    samples: Mutex<HashMap<&'static str, String>>,
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Pool(PoolError::PrimaryMoved { .. }) => "primary_moved",
        Error::Pool(PoolError::Connect { .. }) => "connect",
        Error::Pool(PoolError::Timeout { .. }) => "timeout",
        // The connection dropped under the command (the server closed it).
        Error::Backend(b) if b.is_connection_dropped() || b.is_io_error() => "connection_dropped",
        _ => "untyped",
    }
}

impl Tally {
    fn failed(&self, what: &'static str, e: &Error) {
        let k = kind(e);
        *self.errors.lock().unwrap().entry((what, k)).or_default() += 1;
        self.samples
            .lock()
            .unwrap()
            .entry(k)
            .or_insert_with(|| e.to_string());
    }
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn load(
    pool: &Pool,
    tally: &Arc<Tally>,
    begin: Instant,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (pool, tally, stop) = (pool.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(SeqCst) {
                i += 1;
                let word = format!("t{t}-{i}");
                let write = i.is_multiple_of(2);
                let outcome = if write {
                    let cmd = redis::cmd("SET").arg(format!("fo:{t}")).arg(&word).clone();
                    match tokio::time::timeout(HANG, pool.query::<String>(&cmd)).await {
                        Err(_) => {
                            tally.hung.fetch_add(1, SeqCst);
                            continue;
                        }
                        Ok(Ok(reply)) if reply == "OK" => {
                            tally.writes_ok.fetch_add(1, SeqCst);
                            tally.write_times.lock().unwrap().push(ms(begin));
                            Ok(())
                        }
                        Ok(Ok(_)) => {
                            tally.mixed.fetch_add(1, SeqCst);
                            Ok(())
                        }
                        Ok(Err(e)) => Err(("write", e)),
                    }
                } else {
                    let cmd = redis::cmd("ECHO").arg(&word).clone();
                    match tokio::time::timeout(HANG, pool.query::<String>(&cmd)).await {
                        Err(_) => {
                            tally.hung.fetch_add(1, SeqCst);
                            continue;
                        }
                        Ok(Ok(reply)) if reply == word => {
                            tally.reads_ok.fetch_add(1, SeqCst);
                            Ok(())
                        }
                        Ok(Ok(_)) => {
                            tally.mixed.fetch_add(1, SeqCst);
                            Ok(())
                        }
                        Ok(Err(e)) => Err(("read", e)),
                    }
                };
                match outcome {
                    Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err((what, e)) => {
                        tally.failed(what, &e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    for w in 0..WAITERS {
        let (pool, tally, stop) = (pool.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let list = format!("fo:jobs{w}");
            while !stop.load(SeqCst) {
                let blpop = async {
                    let mut conn = pool.exclusive().await?;
                    let reply: Option<(String, String)> = redis::cmd("BLPOP")
                        .arg(&list)
                        .arg(0.2)
                        .query_async(&mut conn)
                        .await?;
                    Ok::<_, Error>(reply)
                };
                match tokio::time::timeout(HANG, blpop).await {
                    Err(_) => {
                        tally.hung.fetch_add(1, SeqCst);
                    }
                    Ok(Ok(reply)) => {
                        if reply.is_some_and(|(key, job)| {
                            key != list || !job.starts_with(&format!("{list}:"))
                        }) {
                            tally.mixed.fetch_add(1, SeqCst);
                        } else {
                            tally.blpop_ok.fetch_add(1, SeqCst);
                        }
                    }
                    Ok(Err(e)) => {
                        tally.failed("blpop", &e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let (pool, stop) = (pool.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(SeqCst) {
            n += 1;
            let list = format!("fo:jobs{}", n % WAITERS);
            let job = format!("{list}:{n}");
            let _ = pool
                .query::<i64>(redis::cmd("LPUSH").arg(&list).arg(&job))
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }));
    tasks
}

fn report(name: &str, tally: &Tally, pool: &Pool, switched_ms: u64) -> u64 {
    let mut times = tally.write_times.lock().unwrap().clone();
    times.sort_unstable();
    let resumed = times
        .iter()
        .find(|t| **t >= switched_ms)
        .map(|t| t - switched_ms)
        .expect("no write succeeded after the switch");
    let (gap, gap_from) = times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or((0, 0));
    let errors = tally.errors.lock().unwrap().clone();
    let samples = tally.samples.lock().unwrap().clone();
    let (s, x) = (pool.stats(), pool.exclusive_stats());
    println!(
        "FIGURES {name}: writes ok {}, reads ok {}, BLPOP ok {}; replies mixed up {}; hung {}; writes resumed {resumed} ms after the switch (at {switched_ms} ms; no write succeeded for {gap} ms from {gap_from} ms); errors {errors:?}; server_moved events {}, shared reconnects {}, closed server_moved shared {} exclusive {}",
        tally.writes_ok.load(SeqCst),
        tally.reads_ok.load(SeqCst),
        tally.blpop_ok.load(SeqCst),
        tally.mixed.load(SeqCst),
        tally.hung.load(SeqCst),
        s.errors_by("server_moved"),
        pool.reconnects(),
        s.closed_by("server_moved"),
        x.closed_by("server_moved"),
    );
    for (k, e) in &samples {
        println!("FIGURES {name}: sample {k}: {e}");
    }
    assert_eq!(
        tally.mixed.load(SeqCst),
        0,
        "replies mixed between commands"
    );
    assert_eq!(tally.hung.load(SeqCst), 0, "calls hung");
    assert!(
        !samples.contains_key("untyped"),
        "untyped errors: {:?}",
        samples.get("untyped")
    );
    assert!(tally.blpop_ok.load(SeqCst) > 0);
    resumed
}

fn tune(mut config: Config, name: &str) -> Config {
    config.pool.name = name.to_owned();
    config.pool.prefix = name.to_ascii_uppercase();
    config.pool.pool_size = 12; // 12 shared sockets; 12 exclusive for the 8 waiters
    config.max_in_flight = 512;
    config.pool.acquire_timeout = Duration::from_secs(1);
    config.command_timeout = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaof_swap_with_a_moving_name() {
    let _turn = TURN.lock().await;
    let port = port_free_on_two();
    let (a, b) = tokio::task::spawn_blocking(move || {
        let a = RedisNode::start("127.0.0.1", Some(port));
        let b = RedisNode::start("127.0.0.2", Some(port));
        b.replicate(&a);
        (a, b)
    })
    .await
    .unwrap();
    let moved = Arc::new(AtomicBool::new(false));
    let to = moved.clone();
    let mut config = tune(
        Config::new(format!("redis://cache.failover.test:{port}")),
        "failover_swap",
    );
    config.resolver = Some(Arc::new(move |host: &str, port: u16| {
        assert_eq!(host, "cache.failover.test");
        let ip = if to.load(SeqCst) {
            Ipv4Addr::new(127, 0, 0, 2)
        } else {
            Ipv4Addr::new(127, 0, 0, 1)
        };
        Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)])
    }));
    let pool = Pool::new(config).await.expect("pool on the master");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let tasks = load(&pool, &tally, begin, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The swap: b becomes the master, a its replica; then the name moves to b.
    let (a, b) = tokio::task::spawn_blocking(move || {
        b.cli(&["REPLICAOF", "NO", "ONE"]);
        a.cli(&["REPLICAOF", &b.host, &b.port.to_string()]);
        (a, b)
    })
    .await
    .unwrap();
    moved.store(true, SeqCst);
    let switched_ms = ms(begin);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    let resumed = report("failover_redis replicaof-swap", &tally, &pool, switched_ms);
    assert!(
        resumed <= 1_000,
        "writes resumed {resumed} ms after the swap"
    );
    assert!(
        pool.stats().errors_by("server_moved") >= 1,
        "READONLY was seen as a move"
    );
    assert_eq!(
        (a.role(), b.role()),
        ("slave".to_owned(), "master".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover() {
    let _turn = TURN.lock().await;
    let (m, r, sentinel) = tokio::task::spawn_blocking(|| {
        let m = RedisNode::start("127.0.0.1", None);
        let r = RedisNode::start("127.0.0.1", None);
        r.replicate(&m);
        let sentinel = RedisSentinel::start(&m, Duration::from_millis(1000));
        sentinel.wait_for_replicas(1);
        (m, r, sentinel)
    })
    .await
    .unwrap();
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port);
    let config = tune(
        Config::sentinel_url(&url).expect("a sentinel URL"),
        "failover_sentinel",
    );
    let pool = Pool::new(config).await.expect("pool through the sentinel");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let tasks = load(&pool, &tally, begin, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failover_ms = ms(begin);
    let answer = sentinel.cli(&["SENTINEL", "FAILOVER", "mymaster"]);
    assert!(answer.contains("OK"), "SENTINEL FAILOVER: {answer}");
    let end = Instant::now() + Duration::from_secs(15);
    while sentinel.master_port() != Some(r.port) {
        assert!(
            Instant::now() < end,
            "the sentinel did not switch to the replica"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let switched_ms = ms(begin);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    let resumed = report("failover_redis sentinel", &tally, &pool, switched_ms);
    println!(
        "FIGURES failover_redis sentinel: SENTINEL FAILOVER at {failover_ms} ms, the sentinel named the new master at {switched_ms} ms"
    );
    assert!(
        resumed <= 1_000,
        "writes resumed {resumed} ms after the sentinel's switch"
    );
    assert_eq!(r.role(), "master");
    assert!(
        pool.stats().errors_by("server_moved") >= 1,
        "the switch was seen"
    );
    // Writes go to the new master (not to the old one, which may still think it is one).
    pool.query::<()>(redis::cmd("SET").arg("fo:final").arg("after"))
        .await
        .expect("a write after the failover");
    assert_eq!(r.cli(&["GET", "fo:final"]).trim(), "after");
    drop((m, sentinel));
}
