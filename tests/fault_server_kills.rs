//! Kills from the server side: `pg_terminate_backend` on every pooled backend, and a
//! PgBouncer killed and restarted. No broken connection may be handed out twice, and the
//! error counters and `closed{reason}` (stats and the `metrics` facade) must say what
//! happened.
#![cfg(feature = "postgres")]

mod common;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{PrivatePgBouncer, database_url, pg_unreachable};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use poolkit::core::PoolError;
use poolkit::postgres::{Error, Pool, PooledConnection};

/// The `metrics` recorder of this test binary, installed before any pool is built.
fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let s = recorder.snapshotter();
        recorder.install().expect("install the debugging recorder");
        s
    })
}

/// Counter totals so far, by (name, pool, label key, label value). Pools publish absolute
/// totals; the debugging recorder's snapshot drains them, so the largest value seen is
/// kept here.
type Totals = std::collections::HashMap<(String, String, String, String), u64>;

/// The value of counter `name` for `pool` with label `key=value`.
fn counter(name: &str, pool: &str, key: &str, value: &str) -> u64 {
    static TOTALS: std::sync::Mutex<Option<Totals>> = std::sync::Mutex::new(None);
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let totals = totals.get_or_insert_with(Totals::new);
    poolkit::core::metrics::publish_all();
    for (k, _, _, v) in snapshotter().snapshot().into_vec() {
        let DebugValue::Counter(c) = v else { continue };
        let key_ = k.key();
        let Some(p) = key_.labels().find(|l| l.key() == "pool") else {
            continue;
        };
        for l in key_
            .labels()
            .filter(|l| l.key() != "pool" && l.key() != "backend")
        {
            let total = totals
                .entry((
                    key_.name().to_owned(),
                    p.value().to_owned(),
                    l.key().to_owned(),
                    l.value().to_owned(),
                ))
                .or_default();
            *total = (*total).max(c);
        }
    }
    totals
        .get(&(name.into(), pool.into(), key.into(), value.into()))
        .copied()
        .unwrap_or(0)
}

/// Holds `n` connections at once and runs `SELECT pg_backend_pid()` on each; returns the
/// pids served and the number of failed queries.
async fn round(pool: &Pool, n: u32) -> (Vec<i32>, u32) {
    let mut held: Vec<PooledConnection> = Vec::new();
    let mut failures = 0;
    for _ in 0..n {
        match pool.get().await {
            Ok(c) => held.push(c),
            Err(e) => panic!("get failed after the kill: {e}"),
        }
    }
    let mut pids = Vec::new();
    for c in &held {
        match c.query_one("SELECT pg_backend_pid()", &[]).await {
            Ok(row) => pids.push(row.get::<_, i32>(0)),
            Err(e) => {
                failures += 1;
                let e = Error::from(e);
                // The session's FATAL 57P01 when it was read, else the closed socket.
                assert!(
                    matches!(&e, Error::Backend(_))
                        || matches!(&e, Error::Pool(PoolError::PrimaryMoved { code: Some(code), .. }) if code == "57P01"),
                    "typed: {e:?}"
                );
            }
        }
    }
    (pids, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_every_backend() {
    snapshotter();
    const SIZE: u32 = 8;
    let app = format!("poolkit_fault_kill_{}", std::process::id());
    let pool = Pool::builder()
        .url(database_url())
        .name("fault_kill")
        .pool_size(SIZE)
        .min_idle(SIZE)
        .acquire_timeout(Duration::from_secs(3))
        .application_name(&app)
        .build()
        .await
        .unwrap_or_else(|e| panic!("{}", pg_unreachable(&e)));
    let (before, f) = round(&pool, SIZE).await;
    assert_eq!(f, 0);
    assert_eq!(before.len(), SIZE as usize);

    let (admin, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{}", pg_unreachable(&e)));
    let driver = tokio::spawn(conn);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_terminate_backend")
        .len();
    assert_eq!(killed, SIZE as usize, "every pooled backend terminated");
    let killed_at = Instant::now();

    // Three rounds holding the whole pool: each killed connection may fail at most once
    // (in practice none is handed out: it reports closed and is replaced).
    let mut failures = 0;
    let mut served = HashSet::new();
    let mut first_round_ok = None;
    for i in 0..3 {
        let (pids, f) = round(&pool, SIZE).await;
        if i > 0 {
            assert_eq!(
                f, 0,
                "round {i} still failed: a broken connection came back"
            );
        }
        if f == 0 && first_round_ok.is_none() {
            first_round_ok = Some(killed_at.elapsed());
        }
        failures += f;
        served.extend(pids);
    }
    assert!(failures <= SIZE, "{failures} failures for {SIZE} kills");
    assert!(
        served.iter().all(|p| !before.contains(p)),
        "a terminated backend served a query"
    );

    // The server ends each session with 57P01 (as at a shutdown): one "server moved"
    // event for the pool, which retires every connection at once.
    let s = pool.stats();
    assert_eq!(
        s.closed_by("server_moved") + s.closed_by("broken"),
        u64::from(SIZE),
        "each connection closed once: {s:?}"
    );
    assert!(
        s.closed_by("server_moved") >= 1,
        "the kills were one pool-wide event: {s:?}"
    );
    assert_eq!(
        s.errors_by("server_moved"),
        1,
        "errors{{server_moved}}: one event, not one per connection: {s:?}"
    );
    assert_eq!(
        s.created,
        u64::from(2 * SIZE),
        "each kill replaced once: {s:?}"
    );
    assert_eq!(s.open, u64::from(SIZE));
    let m_closed = counter(
        "poolkit_connections_closed_total",
        "fault_kill",
        "reason",
        "server_moved",
    );
    let m_errors = counter(
        "poolkit_connection_errors_total",
        "fault_kill",
        "kind",
        "server_moved",
    );
    assert_eq!(
        m_closed,
        s.closed_by("server_moved"),
        "metric closed{{reason=server_moved}}"
    );
    assert_eq!(m_errors, 1, "metric errors{{kind=server_moved}}");
    println!(
        "FIGURES pg_terminate: killed={killed} failed_queries={failures} served_again_after={first_round_ok:?} \
         closed_server_moved={} closed_broken={} errors_server_moved={} created={}",
        s.closed_by("server_moved"),
        s.closed_by("broken"),
        s.errors_by("server_moved"),
        s.created
    );
    drop(admin);
    driver
        .await
        .expect("admin driver")
        .expect("admin connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_restart() {
    snapshotter();
    const SIZE: u32 = 5;
    let mut bouncer = tokio::task::spawn_blocking(PrivatePgBouncer::start)
        .await
        .expect("start a private pgbouncer");
    let pool = Pool::builder()
        .url(bouncer.url())
        .name("fault_bouncer")
        .pool_size(SIZE)
        .min_idle(SIZE)
        .acquire_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "pool through the private pgbouncer (to the shared server at DATABASE_URL={}): {e}",
                poolkit_core::redact_url(&database_url())
            )
        });
    let (_, f) = round(&pool, SIZE).await;
    assert_eq!(f, 0);

    bouncer = tokio::task::spawn_blocking(move || {
        bouncer.kill();
        bouncer
    })
    .await
    .expect("kill pgbouncer");
    // While it is down: a typed error within the acquire timeout, never a hang.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let down = tokio::time::timeout(Duration::from_secs(3), async {
        let c = pool.get().await?;
        c.simple_query("SELECT 1").await?;
        Ok::<(), Error>(())
    })
    .await
    .expect("no hang while pgbouncer is down");
    let took = start.elapsed();
    let e = down.expect_err("nothing to talk to");
    assert!(
        matches!(
            e,
            Error::Pool(PoolError::Connect { .. }) | Error::Pool(PoolError::Timeout { .. })
        ),
        "typed: {e:?}"
    );
    assert!(took <= Duration::from_millis(1300), "{took:?}");

    bouncer = tokio::task::spawn_blocking(move || {
        bouncer.up();
        bouncer
    })
    .await
    .expect("restart pgbouncer");
    let up = Instant::now();
    let mut failures = 0;
    for i in 0..3 {
        let (_, f) = round(&pool, SIZE).await;
        if i > 0 {
            assert_eq!(f, 0, "round {i}: a broken connection came back");
        }
        failures += f;
    }
    let recovered = up.elapsed();
    assert!(failures <= SIZE, "{failures} failures for {SIZE} dropped");
    let s = pool.stats();
    assert_eq!(s.closed_by("broken"), u64::from(SIZE), "{s:?}");
    assert!(
        s.errors_by("connect") >= 1,
        "the down-time connect failed: {s:?}"
    );
    assert_eq!(s.used, 0);
    assert_eq!(s.pending, 0);
    assert_eq!(
        counter(
            "poolkit_connections_closed_total",
            "fault_bouncer",
            "reason",
            "broken"
        ),
        u64::from(SIZE)
    );
    println!(
        "FIGURES pgbouncer_restart: dropped={SIZE} error_while_down={:?} in {took:?} failed_queries_after={failures} \
         three_rounds_after_restart={recovered:?} closed_broken={} errors_connect={}",
        e.to_string(),
        s.closed_by("broken"),
        s.errors_by("connect")
    );
    drop(bouncer);
}
