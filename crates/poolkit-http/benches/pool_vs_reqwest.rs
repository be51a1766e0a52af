//! poolkit-http vs a plain `reqwest::Client` in one run: 1000 concurrent GETs per round
//! against a local hyper server, over HTTP/1.1, h2c and HTTP/2 over TLS (ALPN). Prints
//! throughput, latency p50/p95/p99 and connections the server accepted, side by side.
//!
//! Run: `cargo bench -p poolkit-http --bench pool_vs_reqwest` (an argument `h1`, `h2c`
//! or `tls` runs that scenario only; `POOLKIT_BENCH_POOL` sets the pool size, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{Mode, Opts, serve};
use poolkit_http::{HttpVersion, Pool};

const CONCURRENCY: usize = 1000;
const ROUNDS: usize = 5;
const TRIALS: usize = 3;
fn pool_size() -> u32 {
    poolkit_core::env::process_lookup("POOLKIT_BENCH_POOL")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[derive(Clone, Copy)]
enum Client<'a> {
    Poolkit(&'a Pool),
    Reqwest(&'a reqwest::Client),
}

struct Outcome {
    per_sec: f64,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    opened: u64,
    failed: usize,
}

async fn rounds(client: Client<'_>, url: &str, server: &common::Server) -> Outcome {
    let accepted_before = server.seen.accepted.load(SeqCst);
    let mut latencies = Vec::with_capacity(CONCURRENCY * ROUNDS);
    let mut failed = 0;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let url = url.to_owned();
                let fut: std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> =
                    match client {
                        Client::Poolkit(p) => {
                            let p = p.clone();
                            Box::pin(async move {
                                p.get(&url).send().await.is_ok_and(|r| r.status() == 200)
                            })
                        }
                        Client::Reqwest(c) => {
                            let c = c.clone();
                            Box::pin(async move {
                                match c.get(&url).send().await {
                                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                                    Err(_) => false,
                                }
                            })
                        }
                    };
                tokio::spawn(async move {
                    let t = Instant::now();
                    (fut.await, t.elapsed())
                })
            })
            .collect();
        for t in tasks {
            let (ok, took) = t.await.expect("request task panicked");
            failed += usize::from(!ok);
            latencies.push(took);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let q =
        |permille: usize| latencies[(latencies.len() * permille / 1000).min(latencies.len() - 1)];
    Outcome {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: q(500),
        p95: q(950),
        p99: q(990),
        opened: server.seen.accepted.load(SeqCst) - accepted_before,
        failed,
    }
}

fn row(name: &str, o: &Outcome) {
    println!(
        "  {name:<34} {:>9.0} req/s   p50 {:>7.2} ms   p95 {:>7.2} ms   p99 {:>7.2} ms   connections opened {:>5}   failed {}",
        o.per_sec,
        o.p50.as_secs_f64() * 1e3,
        o.p95.as_secs_f64() * 1e3,
        o.p99.as_secs_f64() * 1e3,
        o.opened,
        o.failed
    );
}

async fn scenario(title: &str, mode: Mode) {
    println!(
        "{title}: {CONCURRENCY} concurrent GETs x {ROUNDS} rounds, {TRIALS} trials each, alternating"
    );
    for trial in 1..=TRIALS {
        // Fresh clients and servers per trial, so every trial includes opening
        // connections and each server counts only its own client's connections.
        let server = serve(Opts::new(mode)).await;
        let url = format!("{}/", server.url());
        let other = serve(Opts::new(mode)).await;
        let other_url = format!("{}/", other.url());
        let mut config = common::config(&format!("bench_{trial}"), &server, pool_size());
        if mode == Mode::H2c {
            config.http_version = HttpVersion::Http2;
        }
        let pool = Pool::new(config).expect("pool");
        let mut builder = reqwest::Client::builder();
        if mode == Mode::H2c {
            builder = builder.http2_prior_knowledge();
        }
        if let Some(der) = &other.cert_der {
            let cert = reqwest::Certificate::from_der(der).expect("test certificate");
            builder = builder.add_root_certificate(cert);
        }
        let plain = builder.build().expect("reqwest client");
        let a = rounds(Client::Poolkit(&pool), &url, &server).await;
        let b = rounds(Client::Reqwest(&plain), &other_url, &other).await;
        row(
            &format!("trial {trial} poolkit-http (pool {})", pool_size()),
            &a,
        );
        let s = pool.stats();
        println!(
            "  trial {trial} poolkit stats: requests new {} reused {}, closed {:?}, errors {}, retries {}",
            s.requests_new,
            s.requests_reused,
            s.closed.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
            s.errors_total(),
            pool.retries()
        );
        row(&format!("trial {trial} reqwest::Client (default)"), &b);
        println!(
            "  trial {trial} ratio poolkit/reqwest throughput: {:.2}",
            a.per_sec / b.per_sec
        );
    }
}

fn main() {
    // With poolkit-http's `reqwest` feature, reqwest has no crypto provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    runtime.block_on(async {
        if run("h1") {
            scenario("HTTP/1.1", Mode::Http1).await;
        }
        if run("h2c") {
            scenario("HTTP/2 (h2c, prior knowledge)", Mode::H2c).await;
        }
        if run("tls") {
            scenario("HTTP/2 over TLS (ALPN)", Mode::Tls).await;
        }
    });
}
