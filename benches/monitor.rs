//! What monitoring costs, in one run: checkout cost with the Prometheus recorder installed
//! vs no recorder, and the latency of each monitor endpoint with 1 and 20 pools.
//!
//! `cargo bench --bench monitor --features monitor,postgres` (env: `DATABASE_URL`,
//! `BENCH_SECONDS` per measurement, default 2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use poolkit::core::env::{parse_u32, process_lookup};
use poolkit::monitor::{Endpoint, Monitor, MonitorConfig};
use poolkit::postgres::Pool;

fn url() -> String {
    process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn build(name: &str, size: u32) -> Pool {
    Pool::builder()
        .url(url())
        .name(name)
        .pool_size(size)
        .min_idle(size)
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at DATABASE_URL ({e})"))
}

/// Checkouts per second over `secs` with `tasks` tasks looping `get` + drop (no query).
async fn checkouts(pool: &Pool, tasks: usize, secs: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + secs;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (pool, done) = (pool.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                while Instant::now() < end {
                    drop(pool.get().await.expect("checkout"));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    #[allow(clippy::cast_precision_loss)]
    let n = done.load(Ordering::Relaxed) as f64;
    n / secs.as_secs_f64()
}

/// Mean and p99 latency of `GET path` over one keep-alive connection for `secs`.
async fn endpoint(addr: SocketAddr, path: &str, secs: Duration) -> (Duration, Duration, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let driver = tokio::spawn(conn);
    let mut samples = Vec::new();
    let mut bytes = 0;
    let end = Instant::now() + secs;
    while Instant::now() < end {
        tx.ready().await.expect("connection ready");
        let t = Instant::now();
        let req = hyper::Request::get(path)
            .header("host", "bench")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = tx.send_request(req).await.expect("send");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        bytes = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len();
        samples.push(t.elapsed());
    }
    drop(tx);
    driver.await.expect("driver").expect("connection");
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(u32::MAX);
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    (mean, p99, bytes)
}

fn main() {
    let secs = Duration::from_secs(u64::from(
        process_lookup("BENCH_SECONDS")
            .map_or(Ok(2), |v| parse_u32("BENCH_SECONDS", &v, 1, 600))
            .expect("BENCH_SECONDS"),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    poolkit::monitor::install().expect("install the recorder");
    // The same pool twice: one built under the Prometheus recorder, one under no recorder
    // (its handles are no-ops), so both run in this process side by side.
    let with = rt.block_on(build("bench_prometheus", 10));
    let without = metrics::with_local_recorder(&metrics::NoopRecorder, || {
        rt.block_on(build("bench_noop", 10))
    });
    let handle = poolkit::monitor::installed().expect("handle");
    let scrape = handle.render();
    assert!(
        scrape.contains("pool=\"bench_prometheus\"") && !scrape.contains("pool=\"bench_noop\"")
    );

    println!("checkout cost (get + drop, no query), pool of 10, {secs:?} per cell, alternating:");
    println!(
        "{:>6} | {:>18} | {:>18} | {:>8}",
        "tasks", "no recorder /s", "prometheus /s", "ratio"
    );
    for tasks in [1, 16] {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..2 {
            a.push(rt.block_on(checkouts(&without, tasks, secs)));
            b.push(rt.block_on(checkouts(&with, tasks, secs)));
        }
        let (a, b) = (a.iter().sum::<f64>() / 2.0, b.iter().sum::<f64>() / 2.0);
        println!("{tasks:>6} | {a:>18.0} | {b:>18.0} | {:>8.3}", b / a);
    }

    println!("\nmonitor endpoints over one keep-alive connection ({secs:?} each):");
    println!(
        "{:>6} | {:>10} | {:>12} | {:>12} | {:>8}",
        "pools", "endpoint", "mean", "p99", "bytes"
    );
    let mut extra = Vec::new();
    for pools in [1usize, 20] {
        while extra.len() + 2 < pools {
            let name = format!("bench_extra_{}", extra.len());
            extra.push(rt.block_on(build(&name, 1)));
        }
        let mut list: Vec<Arc<dyn poolkit::core::Monitored>> =
            vec![poolkit::core::pool("bench_prometheus").expect("registered")];
        if pools > 1 {
            list.extend(
                poolkit::core::pools()
                    .into_iter()
                    .filter(|p| p.name() != "bench_prometheus")
                    .take(pools - 1),
            );
        }
        let mut config = MonitorConfig::default()
            .with_open(Endpoint::Pools, true)
            .with_open(Endpoint::Alerts, true);
        config.addr = ([127, 0, 0, 1], 0).into();
        let monitor = Monitor::builder().config(config).pools(list).build();
        let server = rt.block_on(monitor.spawn()).expect("serve");
        for path in ["/metrics", "/pools", "/health", "/alerts"] {
            let (mean, p99, bytes) = rt.block_on(endpoint(server.local_addr(), path, secs));
            println!("{pools:>6} | {path:>10} | {mean:>12.2?} | {p99:>12.2?} | {bytes:>8}");
        }
        rt.block_on(server.shutdown()).expect("shutdown");
    }
}
