//! Soak: mixed load on all three backends for `SOAK_SECS` (default 600) with the
//! Prometheus recorder installed, the private PostgreSQL, redis-server and HTTP server
//! each restarted every `SOAK_RESTART_EVERY` seconds (default 120), RSS and open file descriptors sampled every 10 s.
//! At the end the pools are closed and the servers count what is still connected:
//! `pg_stat_activity`, `CLIENT LIST` and the HTTP server's open connections, all 0.
//!
//! A benchmark, not a CI test (`#[ignore]`): run it with `scripts/soak.sh`, which writes
//! the samples (CSV) and the chart (SVG) to `SOAK_OUT` (default `docs/soak`).
#![cfg(all(
    feature = "postgres",
    feature = "redis",
    feature = "http",
    feature = "monitor"
))]

mod common;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{PrivatePg, PrivateRedis};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use poolkit::core::env::process_lookup;
use poolkit::redis::redis;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The HTTP server: accepts and open connections counted, restartable on its port.
#[derive(Default)]
struct HttpSeen {
    accepted: AtomicU64,
    open: AtomicI64,
}

struct OpenGuard(Arc<HttpSeen>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

fn http_server(listener: TcpListener, seen: Arc<HttpSeen>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            seen.accepted.fetch_add(1, SeqCst);
            seen.open.fetch_add(1, SeqCst);
            let open = OpenGuard(seen.clone());
            conns.spawn(async move {
                let _open = open; // counts the close even when the restart aborts this task
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(bytes_ok())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

fn bytes_ok() -> hyper::body::Bytes {
    hyper::body::Bytes::from_static(b"ok")
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

#[derive(Default)]
struct Counts {
    ok: [AtomicU64; 3],
    err: [AtomicU64; 3],
}

fn count<T, E>(counts: &Counts, i: usize, r: &Result<T, E>) {
    if r.is_ok() {
        counts.ok[i].fetch_add(1, SeqCst);
    } else {
        counts.err[i].fetch_add(1, SeqCst);
    }
}

/// One sample: seconds, RSS (kB), fds, requests so far.
type Sample = (u64, u64, u64, u64);

/// A line chart of RSS (MB, left) and fds (right) against minutes, restarts marked.
fn svg(samples: &[Sample], restarts: &[u64]) -> String {
    let (w, h, pad) = (720.0, 320.0, 50.0);
    let t_max = samples.last().map_or(1, |s| s.0).max(1) as f64;
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(1) as f64 / 1024.0 * 1.2;
    let fd_max = samples.iter().map(|s| s.2).max().unwrap_or(1) as f64 * 1.2;
    let x = |t: f64| pad + t / t_max * (w - 2.0 * pad);
    let y = |v: f64, max: f64| h - pad - v / max * (h - 2.0 * pad);
    let line = |f: &dyn Fn(&Sample) -> (f64, f64)| {
        samples
            .iter()
            .map(|s| {
                let (px, py) = f(s);
                format!("{px:.1},{py:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<line x1="{r}" y1="{pad}" x2="{r}" y2="{b}" stroke="black"/>
<text x="{cx}" y="{lx}" text-anchor="middle">minutes (dashed: server restarts)</text>
<text x="{pad}" y="30" fill="steelblue">RSS MB (0–{rss_max:.0})</text>
<text x="{r}" y="30" fill="darkorange" text-anchor="end">open fds (0–{fd_max:.0})</text>
"#,
        b = h - pad,
        r = w - pad,
        cx = w / 2.0,
        lx = h - 15.0,
    );
    for m in 0..=(samples.last().map_or(0, |s| s.0) / 60) {
        let px = x(m as f64 * 60.0);
        let _ = writeln!(
            out,
            r#"<text x="{px:.1}" y="{}" text-anchor="middle">{m}</text>"#,
            h - pad + 15.0
        );
    }
    for r in restarts {
        let px = x(*r as f64);
        let _ = writeln!(
            out,
            r#"<line x1="{px:.1}" y1="{pad}" x2="{px:.1}" y2="{}" stroke="gray" stroke-dasharray="4"/>"#,
            h - pad
        );
    }
    let rss = line(&|s| (x(s.0 as f64), y(s.1 as f64 / 1024.0, rss_max)));
    let fds = line(&|s| (x(s.0 as f64), y(s.2 as f64, fd_max)));
    let _ = writeln!(
        out,
        r#"<polyline points="{rss}" fill="none" stroke="steelblue" stroke-width="2"/>"#
    );
    let _ = writeln!(
        out,
        r#"<polyline points="{fds}" fill="none" stroke="darkorange" stroke-width="2"/>"#
    );
    out.push_str("</svg>\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute benchmark: run scripts/soak.sh"]
async fn soak() {
    let secs: u64 = process_lookup("SOAK_SECS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let every: u64 = process_lookup("SOAK_RESTART_EVERY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let out_dir = process_lookup("SOAK_OUT").unwrap_or_else(|| "docs/soak".to_owned());
    let prometheus = poolkit::monitor::install().expect("install the Prometheus recorder");

    let pg = tokio::task::spawn_blocking(PrivatePg::start).await.unwrap();
    let mut redis_server = PrivateRedis::start(&[]);
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_port = http_listener.local_addr().unwrap().port();
    let http_seen = Arc::new(HttpSeen::default());
    let mut http_task = http_server(http_listener, http_seen.clone());

    let mut pg_config = poolkit::postgres::Config::new(pg.url());
    pg_config.pool.name = "soak_pg".into();
    pg_config.pool.prefix = "SOAK_PG".into();
    pg_config.pool.pool_size = 8;
    pg_config.pool.acquire_timeout = Duration::from_secs(2);
    pg_config.application_name = "poolkit_soak".into();
    let pg_pool = poolkit::postgres::Pool::new(pg_config).await.unwrap();
    let mut redis_config = poolkit::redis::Config::new(redis_server.url());
    redis_config.pool.name = "soak_redis".into();
    redis_config.pool.prefix = "SOAK_REDIS".into();
    redis_config.pool.pool_size = 4;
    redis_config.pool.acquire_timeout = Duration::from_secs(2);
    redis_config.command_timeout = Duration::from_secs(2);
    let redis_pool = poolkit::redis::Pool::new(redis_config).await.unwrap();
    let mut http_config = poolkit::http::Config::new("soak_http");
    http_config.pool.pool_size = 8;
    http_config.timeout = Some(Duration::from_secs(2));
    http_config.base_url = Some(format!("http://127.0.0.1:{http_port}"));
    let http_pool = poolkit::http::Pool::new(http_config).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut load = JoinSet::new();
    for t in 0..16u64 {
        let (stop, counts) = (stop.clone(), counts.clone());
        let (pg_pool, redis_pool, http_pool) =
            (pg_pool.clone(), redis_pool.clone(), http_pool.clone());
        load.spawn(async move {
            let mut i = 0u64;
            while !stop.load(SeqCst) {
                match (t + i) % 3 {
                    0 => {
                        let r = async {
                            let c = pg_pool.get().await?;
                            c.simple_query("SELECT 1").await?;
                            Ok::<_, poolkit::postgres::Error>(())
                        }
                        .await;
                        count(&counts, 0, &r);
                    }
                    1 => {
                        let key = format!("soak{t}");
                        let r = redis_pool
                            .query::<()>(redis::cmd("SET").arg(&key).arg(i))
                            .await;
                        count(&counts, 1, &r);
                    }
                    _ => {
                        let r = http_pool.get("/").send().await;
                        count(&counts, 2, &r);
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        });
    }

    let begin = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut restarts = Vec::new();
    let mut next_restart = every;
    let mut rendered = 0;
    let total = |c: &Counts| c.ok.iter().map(|a| a.load(SeqCst)).sum::<u64>();
    while begin.elapsed().as_secs() < secs {
        let t = begin.elapsed().as_secs();
        samples.push((t, rss_kb(), open_fds(), total(&counts)));
        rendered = prometheus.render().len();
        if t >= next_restart && t + 20 < secs {
            restarts.push(t);
            next_restart += every;
            tokio::task::block_in_place(|| pg.down());
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::block_in_place(|| pg.up());
            tokio::task::block_in_place(|| redis_server.stop());
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::block_in_place(|| redis_server.up());
            http_task.abort();
            let _ = (&mut http_task).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let listener = TcpListener::bind(("127.0.0.1", http_port)).await.unwrap();
            http_task = http_server(listener, http_seen.clone());
            println!("soak: restarted PostgreSQL, Redis and the HTTP server at {t} s");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    samples.push((
        begin.elapsed().as_secs(),
        rss_kb(),
        open_fds(),
        total(&counts),
    ));
    stop.store(true, SeqCst);
    while let Some(r) = load.join_next().await {
        r.expect("a load task panicked");
    }

    let (pg_open, redis_open, http_open) = (
        pg_pool.stats().open,
        redis_pool.stats().open,
        http_pool.stats().open,
    );
    pg_pool.drain(Duration::from_secs(5)).await;
    redis_pool.close();
    http_pool.close();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poolkit_soak'",
            &[],
        )
        .await
        .unwrap();
    let pg_left: i64 = row.get(0);
    let clients = redis_server.cli(None, &["CLIENT", "LIST"]);
    let redis_left = clients
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .count();
    let http_left = http_seen.open.load(SeqCst);

    let warm = samples
        .iter()
        .find(|s| s.0 >= 60)
        .copied()
        .unwrap_or(samples[0]);
    let last = *samples.last().unwrap();
    let mut csv = String::from("seconds,rss_kb,fds,requests_ok\n");
    for s in &samples {
        let _ = writeln!(csv, "{},{},{},{}", s.0, s.1, s.2, s.3);
    }
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(format!("{out_dir}/samples.csv"), csv).unwrap();
    std::fs::write(format!("{out_dir}/rss_fds.svg"), svg(&samples, &restarts)).unwrap();
    let c = &counts;
    println!(
        "SOAK {secs} s, restarts at {restarts:?} s: ok pg {} redis {} http {}; errors pg {} redis {} http {}; RSS {} kB at 60 s -> {} kB at the end (max {} kB); fds {} at 60 s -> {} at the end (max {}); /metrics {rendered} bytes; open before close pg {pg_open} redis {redis_open} http {http_open}; left after close: pg_stat_activity {pg_left}, CLIENT LIST {redis_left}, HTTP server {http_left} (accepted {} in all)",
        c.ok[0].load(SeqCst),
        c.ok[1].load(SeqCst),
        c.ok[2].load(SeqCst),
        c.err[0].load(SeqCst),
        c.err[1].load(SeqCst),
        c.err[2].load(SeqCst),
        warm.1,
        last.1,
        samples.iter().map(|s| s.1).max().unwrap(),
        warm.2,
        last.2,
        samples.iter().map(|s| s.2).max().unwrap(),
        http_seen.accepted.load(SeqCst),
    );
    assert_eq!(
        (pg_left, redis_left, http_left),
        (0, 0, 0),
        "leaked connections"
    );
}
