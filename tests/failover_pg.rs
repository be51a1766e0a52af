//! PostgreSQL failover under load: a private primary and its streaming replica
//! (`pg_basebackup -R`), 1,000 tasks mixing writes (each a unique id) and reads. The
//! primary is stopped (`pg_ctl stop -m fast`) and the replica promoted (`pg_ctl promote`).
//!
//! - `promote_replica_multi_host_url`: the URL lists both servers with
//!   `target_session_attrs=read-write`; reads go to `DATABASE_READ_URL`, the two servers the
//!   other way round with `prefer-standby`.
//! - `promote_replica_name_moves`: the RDS / Aurora case: one host name, no session attrs,
//!   and the name moves from the old primary (127.0.0.1) to the replica (127.0.0.2, the same
//!   port) through the pool's resolver, before the promotion finishes (so connections land
//!   on a standby first, and writes there fail with 25006).
//!
//! Both check that writes resume within 2 s of the promotion, that every acknowledged write
//! is in the new primary and none is there twice, that every failed call has a typed error,
//! and that reads keep being served.
#![cfg(feature = "postgres")]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, HBA_TRUST, MARKER, port_free_on_two};
use poolkit::core::PoolError;
use poolkit::postgres::{Config, Error, Pool};

const TASKS: usize = 1000;
/// A call that takes longer than this is a hang.
const HANG: Duration = Duration::from_secs(10);

/// The two tests take turns: each runs 1,000 tasks and two clusters on a 2-core machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
struct Tally {
    writes_ok: AtomicU64,
    reads_ok: AtomicU64,
    /// Write completion times (ms since the start).
    write_times: Mutex<Vec<u64>>,
    acked: Mutex<Vec<i64>>,
    /// Failed calls by the error's variant, writes and reads apart.
    write_errors: Mutex<HashMap<&'static str, u64>>,
    read_errors: Mutex<HashMap<&'static str, u64>>,
    samples: Mutex<HashMap<&'static str, String>>,
    hung: AtomicU64,
}

/// The error's variant; `untyped` for anything a caller could not act on.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Pool(PoolError::PrimaryMoved { .. }) => "primary_moved",
        Error::Pool(PoolError::Connect { .. }) => "connect",
        Error::Pool(PoolError::Timeout { .. }) => "timeout",
        // Cut off with its connection (the socket closed mid-statement): typed as a
        // closed connection by tokio-postgres.
        Error::Backend(b) if b.is_closed() => "connection_closed",
        _ => "untyped",
    }
}

impl Tally {
    fn failed(&self, write: bool, e: &Error) {
        let k = kind(e);
        let map = if write {
            &self.write_errors
        } else {
            &self.read_errors
        };
        *map.lock().unwrap().entry(k).or_default() += 1;
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

/// Runs the 1,000 tasks until `stop` is set. Writes insert a unique id; reads count the
/// task's rows.
fn load(
    pool: &Pool,
    tally: &Arc<Tally>,
    begin: Instant,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next_id = Arc::new(AtomicI64::new(1));
    (0..TASKS)
        .map(|t| {
            let (pool, tally, stop, next_id) =
                (pool.clone(), tally.clone(), stop.clone(), next_id.clone());
            tokio::spawn(async move {
                let task = i32::try_from(t).unwrap();
                let mut i = 0u64;
                while !stop.load(SeqCst) {
                    i += 1;
                    let write = i.is_multiple_of(2);
                    let outcome = if write {
                        let id = next_id.fetch_add(1, SeqCst);
                        let op = async {
                            let c = pool.get().await?;
                            c.execute("INSERT INTO t (id, task) VALUES ($1, $2)", &[&id, &task])
                                .await?;
                            Ok::<_, Error>(())
                        };
                        match tokio::time::timeout(HANG, op).await {
                            Ok(Ok(())) => {
                                tally.writes_ok.fetch_add(1, SeqCst);
                                tally.acked.lock().unwrap().push(id);
                                tally.write_times.lock().unwrap().push(ms(begin));
                                Ok(())
                            }
                            Ok(Err(e)) => Err(e),
                            Err(_) => {
                                tally.hung.fetch_add(1, SeqCst);
                                continue;
                            }
                        }
                    } else {
                        let op = async {
                            let c = pool.read().await?;
                            c.query_one("SELECT count(*) FROM t WHERE task = $1", &[&task])
                                .await?;
                            Ok::<_, Error>(())
                        };
                        match tokio::time::timeout(HANG, op).await {
                            Ok(Ok(())) => {
                                tally.reads_ok.fetch_add(1, SeqCst);
                                Ok(())
                            }
                            Ok(Err(e)) => Err(e),
                            Err(_) => {
                                tally.hung.fetch_add(1, SeqCst);
                                continue;
                            }
                        }
                    };
                    match outcome {
                        Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(e) => {
                            tally.failed(write, &e);
                            // A dead primary is not spun on by 1,000 tasks.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// What the run showed, checked and printed.
struct Run {
    name: &'static str,
    stop_began_ms: u64,
    promoted_ms: u64,
}

async fn finish(run: Run, pool: &Pool, tally: &Tally, new_primary: &Cluster) {
    let write_times = tally.write_times.lock().unwrap().clone();
    let first_after = write_times
        .iter()
        .copied()
        .filter(|t| *t >= run.promoted_ms)
        .min()
        .expect("no write succeeded after the promotion");
    let resumed = first_after - run.promoted_ms;
    // The outage as the writers saw it: the longest time with no write succeeding.
    let mut sorted = write_times.clone();
    sorted.sort_unstable();
    let (gap, gap_from) = sorted
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or((0, 0));
    let stored: Vec<i64> = new_primary
        .sql("SELECT id FROM t ORDER BY id")
        .lines()
        .map(|l| l.parse().expect("an id"))
        .collect();
    let mut seen = HashSet::new();
    let twice: Vec<i64> = stored
        .iter()
        .copied()
        .filter(|id| !seen.insert(*id))
        .collect();
    let acked = tally.acked.lock().unwrap().clone();
    let missing: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !seen.contains(id))
        .collect();
    let acked_set: HashSet<i64> = acked.iter().copied().collect();
    let unacked_stored = seen.iter().filter(|id| !acked_set.contains(id)).count();
    let write_errors = tally.write_errors.lock().unwrap().clone();
    let read_errors = tally.read_errors.lock().unwrap().clone();
    let samples = tally.samples.lock().unwrap().clone();
    let s = pool.stats();
    println!(
        "FIGURES {}: writes ok {}, reads ok {}; writes resumed {resumed} ms after the promotion (stop began at {} ms, promotion done at {} ms; no write succeeded for {gap} ms from {gap_from} ms); \
         write errors {write_errors:?}; read errors {read_errors:?}; acknowledged {}, missing in the new primary {}, stored twice {}, stored but not acknowledged {unacked_stored}; \
         server_moved events {}, closed server_moved {}, created {}, connect errors {}; hung {}",
        run.name,
        tally.writes_ok.load(SeqCst),
        tally.reads_ok.load(SeqCst),
        run.stop_began_ms,
        run.promoted_ms,
        acked.len(),
        missing.len(),
        twice.len(),
        s.errors_by("server_moved"),
        s.closed_by("server_moved"),
        s.created,
        s.errors_by("connect"),
        tally.hung.load(SeqCst),
    );
    for (k, e) in &samples {
        println!("FIGURES {}: sample {k}: {e}", run.name);
        assert!(!e.contains(MARKER), "a password in an error: {e}");
    }
    assert_eq!(tally.hung.load(SeqCst), 0, "calls hung");
    assert!(
        resumed <= 2_000,
        "writes resumed {resumed} ms after the promotion"
    );
    assert!(
        missing.is_empty(),
        "acknowledged writes missing from the new primary: {missing:?}"
    );
    assert!(twice.is_empty(), "writes stored twice: {twice:?}");
    assert!(
        !write_errors.contains_key("untyped") && !read_errors.contains_key("untyped"),
        "untyped errors: {:?}",
        samples.get("untyped")
    );
    assert!(
        s.errors_by("server_moved") >= 1,
        "the move was seen as one event: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_replica_multi_host_url() {
    let _turn = TURN.lock().await;
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = Cluster::primary("127.0.0.1", None, Some(HBA_TRUST));
        primary.sql(
            "CREATE TABLE t (id bigint NOT NULL, task int NOT NULL); CREATE INDEX ON t (task)",
        );
        let replica = Cluster::replica_of(&primary, "127.0.0.1", None);
        (primary, replica)
    })
    .await
    .unwrap();
    let (p, r) = (primary.port, replica.port);
    let mut config = Config::new(format!(
        "postgres://postgres:{MARKER}@127.0.0.1:{p},127.0.0.1:{r}/postgres?target_session_attrs=read-write"
    ));
    config.read_urls = vec![
        format!(
            "postgres://postgres:{MARKER}@127.0.0.1:{r},127.0.0.1:{p}/postgres?target_session_attrs=prefer-standby"
        )
        .into(),
    ];
    config.pool.name = "failover_multi".into();
    config.pool.prefix = "FAILOVER_MULTI".into();
    config.pool.pool_size = 10;
    config.pool.min_idle = 4;
    config.pool.acquire_timeout = Duration::from_secs(2);
    config.connect_timeout = Some(Duration::from_secs(1));
    let pool = Pool::new(config).await.expect("pool on the primary");
    assert_eq!(pool.read_pools().len(), 1);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let tasks = load(&pool, &tally, begin, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop_began_ms = ms(begin);
    let primary = tokio::task::spawn_blocking(move || {
        primary.stop_fast();
        primary
    })
    .await
    .unwrap();
    let replica = tokio::task::spawn_blocking(move || {
        replica.promote();
        replica
    })
    .await
    .unwrap();
    let promoted_ms = ms(begin);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    let run = Run {
        name: "failover_pg multi-host",
        stop_began_ms,
        promoted_ms,
    };
    finish(run, &pool, &tally, &replica).await;
    let reads_failed: u64 = tally.read_errors.lock().unwrap().values().sum();
    assert_eq!(reads_failed, 0, "reads went to the standby throughout");
    drop(primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_replica_name_moves() {
    let _turn = TURN.lock().await;
    let port = port_free_on_two();
    let (primary, replica) = tokio::task::spawn_blocking(move || {
        let primary = Cluster::primary("127.0.0.1", Some(port), Some(HBA_TRUST));
        primary.sql(
            "CREATE TABLE t (id bigint NOT NULL, task int NOT NULL); CREATE INDEX ON t (task)",
        );
        let replica = Cluster::replica_of(&primary, "127.0.0.2", Some(port));
        (primary, replica)
    })
    .await
    .unwrap();
    let moved = Arc::new(AtomicBool::new(false));
    let to = moved.clone();
    let resolver = move |host: &str, port: u16| {
        assert_eq!(host, "db.failover.test");
        let ip = if to.load(SeqCst) {
            Ipv4Addr::new(127, 0, 0, 2)
        } else {
            Ipv4Addr::new(127, 0, 0, 1)
        };
        Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)])
    };
    let pool = Pool::builder()
        .url(format!(
            "postgres://postgres:{MARKER}@db.failover.test:{port}/postgres"
        ))
        .name("failover_dns")
        .pool_size(10)
        .min_idle(4)
        .acquire_timeout(Duration::from_secs(2))
        .resolver(resolver)
        .build()
        .await
        .expect("pool on the primary");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let tasks = load(&pool, &tally, begin, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop_began_ms = ms(begin);
    let primary = tokio::task::spawn_blocking(move || {
        primary.stop_fast();
        primary
    })
    .await
    .unwrap();
    // The name moves to the replica before it is promoted: new connections reach a standby.
    moved.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replica = tokio::task::spawn_blocking(move || {
        replica.promote();
        replica
    })
    .await
    .unwrap();
    let promoted_ms = ms(begin);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    let run = Run {
        name: "failover_pg name-moves",
        stop_began_ms,
        promoted_ms,
    };
    finish(run, &pool, &tally, &replica).await;
    let moved_errors = tally
        .write_errors
        .lock()
        .unwrap()
        .get("primary_moved")
        .copied()
        .unwrap_or(0);
    assert!(
        moved_errors > 0,
        "writes on the standby failed as PrimaryMoved (25006)"
    );
    drop(primary);
}
