//! `poolctl bench`: N concurrent users against one pool for a fixed time, each run on a
//! fresh pool, with the seed's one-line summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::{BackendArg, BenchArgs};
use crate::error::Error;
use crate::format::{ms, pct, table, thousands};
use crate::target::{HttpClient, Target, TargetSpec};

/// p50 / p95 / p99 in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Quantiles {
    /// Median.
    pub(crate) p50: f64,
    /// 95th percentile.
    pub(crate) p95: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
}

impl Quantiles {
    fn of(samples_us: &[Vec<u32>]) -> Self {
        let Ok(mut h) = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3) else {
            return Self::default();
        };
        for s in samples_us.iter().flatten() {
            h.saturating_record(u64::from(*s).max(1));
        }
        if h.is_empty() {
            return Self::default();
        }
        #[allow(clippy::cast_precision_loss)]
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1e6;
        Self {
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
        }
    }

    fn show(&self) -> String {
        format!(
            "p50 {}  p95 {}  p99 {}",
            ms(self.p50),
            ms(self.p95),
            ms(self.p99)
        )
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunResult {
    /// `postgres`, `redis` or `http`.
    pub(crate) backend: &'static str,
    /// The client driven: `poolkit`, or for HTTP `poolkit-http` and `reqwest` side by side.
    pub(crate) client: &'static str,
    /// Connections in the pool.
    pub(crate) pool_size: u32,
    /// Concurrent users.
    pub(crate) concurrency: u32,
    /// Run time (operations that finished after it are cut off).
    pub(crate) seconds: f64,
    /// Operations that succeeded.
    pub(crate) ok: u64,
    /// Failed operations by kind (`timeout`, `connect`, `query`, …).
    pub(crate) errors: BTreeMap<String, u64>,
    /// Operations that finished after the time was up (not counted either way).
    pub(crate) cut_off: u64,
    /// Successful operations per second.
    pub(crate) throughput_rps: f64,
    /// Acquire timeouts over all finished operations.
    pub(crate) timeout_ratio: f64,
    /// Whole-operation latency (acquire + run), seconds.
    pub(crate) latency: Quantiles,
    /// Time waiting for a connection, seconds.
    pub(crate) acquire_wait: Quantiles,
    /// Where the wait was measured: `client` (around each checkout) or `pool` (the
    /// pool's own histogram, for shared connections).
    pub(crate) acquire_wait_source: &'static str,
    /// Connections the pool opened (warm-up included; each run has a fresh pool).
    pub(crate) connections_opened: u64,
}

impl RunResult {
    /// Errors of all kinds.
    pub(crate) fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The seed's line: `Pool Size: 20 | Concurrency: 50 | Throughput: 4,773 RPS | P95: 969ms | Timeouts: 79.5%`.
    pub(crate) fn seed_line(&self) -> String {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rps = self.throughput_rps.round() as u64;
        format!(
            "Pool Size: {} | Concurrency: {} | Throughput: {} RPS | P95: {} | Timeouts: {}",
            self.pool_size,
            self.concurrency,
            thousands(rps),
            ms(self.latency.p95),
            pct(self.timeout_ratio)
        )
    }

    /// The seed line and the details under it (for HTTP, under the client's name).
    pub(crate) fn report(&self) -> String {
        let mut out = if self.client == "poolkit" {
            String::new()
        } else {
            format!("{}:\n", self.client)
        };
        out.push_str(&self.seed_line());
        let counted = self.client != "reqwest";
        let wait = if counted {
            format!(
                "{} ({})",
                self.acquire_wait.show(),
                self.acquire_wait_source
            )
        } else {
            self.acquire_wait_source.to_owned()
        };
        let _ = write!(
            out,
            "\n  operation     {}\n  acquire wait  {wait}\n  operations    {} ok, {} errors",
            self.latency.show(),
            thousands(self.ok),
            thousands(self.errors_total()),
        );
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {}", thousands(*n)))
                .collect();
            let _ = write!(out, " ({})", kinds.join(", "));
        }
        if self.cut_off > 0 {
            let _ = write!(out, ", {} cut off at the end", thousands(self.cut_off));
        }
        if counted {
            let _ = write!(
                out,
                "\n  connections   {} opened\n",
                thousands(self.connections_opened)
            );
        } else {
            out.push_str(
                "\n  connections   not counted (no cap: one per request in flight at most)\n",
            );
        }
        out
    }
}

/// A table of runs (for `--pool-sizes` and `--steps`).
pub(crate) fn runs_table(runs: &[RunResult]) -> String {
    let by_client = runs.iter().any(|r| r.client != "poolkit");
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rps = r.throughput_rps.round() as u64;
            let mut row = vec![
                r.pool_size.to_string(),
                r.concurrency.to_string(),
                thousands(rps),
                ms(r.latency.p50),
                ms(r.latency.p95),
                ms(r.latency.p99),
                ms(r.acquire_wait.p95),
                pct(r.timeout_ratio),
                thousands(r.errors_total()),
                thousands(r.connections_opened),
            ];
            if by_client {
                row.insert(0, r.client.to_owned());
            }
            row
        })
        .collect();
    let mut headers = vec![
        "Pool Size",
        "Concurrency",
        "RPS",
        "P50",
        "P95",
        "P99",
        "Wait P95",
        "Timeouts",
        "Errors",
        "Opened",
    ];
    if by_client {
        headers.insert(0, "Client");
    }
    table(&headers, &rows)
}

/// What one user task brings back.
#[derive(Debug, Default)]
struct TaskTally {
    latency_us: Vec<u32>,
    wait_us: Vec<u32>,
    errors: BTreeMap<&'static str, u64>,
    cut_off: u64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Runs `concurrency` users against `target` for `duration`. Users start no operation
/// after the deadline; one that finishes after it is counted as cut off, not measured.
pub(crate) async fn run(
    target: Arc<Target>,
    pool_size: u32,
    concurrency: u32,
    duration: Duration,
    grace: Duration,
    bar: &ProgressBar,
) -> Result<RunResult, Error> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let done = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(concurrency as usize);
    for user in 0..concurrency {
        let target = Arc::clone(&target);
        let done = Arc::clone(&done);
        handles.push(tokio::spawn(async move {
            let mut tally = TaskTally::default();
            let mut n = u64::from(user);
            while tokio::time::Instant::now() < deadline {
                let t0 = Instant::now();
                // Never dropped half-way: cancelling a pool operation must not be what the
                // bench measures (and leaves some pools with leaked places).
                let r = target.op(n).await;
                if tokio::time::Instant::now() > deadline {
                    tally.cut_off += 1;
                    break;
                }
                match r {
                    Ok(wait) => {
                        tally.latency_us.push(micros(t0.elapsed()));
                        if let Some(w) = wait {
                            tally.wait_us.push(micros(w));
                        }
                    }
                    Err(kind) => *tally.errors.entry(kind).or_default() += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
                n += u64::from(concurrency);
            }
            tally
        }));
    }
    let total_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    bar.set_length(total_ms);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(u64::try_from(started.elapsed().as_millis()).unwrap_or(total_ms));
        bar.set_message(format!("{} ops", thousands(done.load(Ordering::Relaxed))));
    }
    bar.set_message("finishing the operations in flight".to_owned());
    // Operations still running at the deadline are let finish (they end within the acquire
    // or command timeout); a user still busy after `grace` is stopped.
    let mut tallies = Vec::with_capacity(handles.len());
    let mut aborted = 0;
    for mut h in handles {
        match tokio::time::timeout_at(deadline + grace, &mut h).await {
            Ok(joined) => tallies
                .push(joined.map_err(|e| Error::Failed(format!("a bench user task failed: {e}")))?),
            Err(_) => {
                h.abort();
                aborted += 1;
            }
        }
    }
    let seconds = duration.as_secs_f64();
    bar.finish_and_clear();

    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in &tallies {
        for (k, n) in &t.errors {
            *errors.entry((*k).to_owned()).or_default() += n;
        }
    }
    let latency: Vec<Vec<u32>> = tallies
        .iter_mut()
        .map(|t| std::mem::take(&mut t.latency_us))
        .collect();
    let wait: Vec<Vec<u32>> = tallies
        .iter_mut()
        .map(|t| std::mem::take(&mut t.wait_us))
        .collect();
    let ok: u64 = latency.iter().map(|v| v.len() as u64).sum();
    let cut_off = tallies.iter().map(|t| t.cut_off).sum::<u64>() + aborted;
    let finished = ok + errors.values().sum::<u64>();
    let timeouts = errors.get("timeout").copied().unwrap_or(0);
    let stats = target.stats();
    let client_measured = wait.iter().any(|v| !v.is_empty());
    let keeps_stats = !matches!(*target, Target::Reqwest { .. });
    let acquire_wait = if client_measured {
        Quantiles::of(&wait)
    } else {
        Quantiles {
            p50: stats.wait.p50,
            p95: stats.wait.p95,
            p99: stats.wait.p99,
        }
    };
    #[allow(clippy::cast_precision_loss)]
    Ok(RunResult {
        backend: stats_backend(&target),
        client: target.client(),
        pool_size,
        concurrency,
        seconds,
        ok,
        errors,
        cut_off,
        throughput_rps: ok as f64 / seconds.max(1e-9),
        timeout_ratio: if finished == 0 {
            0.0
        } else {
            timeouts as f64 / finished as f64
        },
        latency: Quantiles::of(&latency),
        acquire_wait,
        acquire_wait_source: if client_measured {
            "client"
        } else if keeps_stats {
            "pool"
        } else {
            "not measured: reqwest has no pool statistics"
        },
        connections_opened: stats.created,
    })
}

fn stats_backend(t: &Target) -> &'static str {
    match t {
        Target::Postgres { .. } => "postgres",
        Target::Redis { .. } => "redis",
        Target::Http { .. } | Target::Reqwest { .. } => "http",
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal, or with `--quiet`).
fn progress(quiet: bool, label: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(1),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
    bar
}

/// The whole `bench` subcommand: every pool size × every step, then the report.
pub(crate) async fn command(args: &BenchArgs) -> Result<(), Error> {
    let spec = TargetSpec {
        backend: args.backend,
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| args.backend.default_prefix().to_owned())
            .to_ascii_uppercase(),
        acquire_timeout: args.acquire_timeout,
        query: args.query.clone(),
        op: args.op,
        url: args.url.clone(),
    };
    let clients: &[HttpClient] = if args.backend == BackendArg::Http {
        &[HttpClient::Poolkit, HttpClient::Reqwest]
    } else {
        &[HttpClient::Poolkit]
    };
    let sizes = if !args.pool_sizes.is_empty() {
        args.pool_sizes.clone()
    } else if let Some(s) = args.pool_size {
        vec![s]
    } else {
        vec![spec.env_pool_size()?]
    };
    let steps = if args.steps.is_empty() {
        vec![args.concurrency]
    } else {
        args.steps.clone()
    };
    let mut runs = Vec::new();
    for &size in &sizes {
        for &concurrency in &steps {
            for &client in clients {
                let target = Arc::new(if args.backend == BackendArg::Http {
                    spec.build_http(size, client)?
                } else {
                    spec.build(size).await?
                });
                let bar = progress(
                    args.quiet || args.json,
                    format!("{} pool {size} × {concurrency} users", target.client()),
                );
                let grace = target.acquire_timeout() + Duration::from_secs(10);
                let result = run(
                    Arc::clone(&target),
                    size,
                    concurrency,
                    args.duration,
                    grace,
                    &bar,
                )
                .await;
                target.close().await;
                let result = result?;
                if !args.json {
                    println!("{}", result.report());
                }
                runs.push(result);
            }
        }
    }
    if runs.len() > 1 && !args.json {
        println!("{}", runs_table(&runs));
    }
    if let Some(path) = &args.chart {
        crate::chart::draw(path, &runs)?;
        if !args.json {
            println!("chart written to {}", path.display());
        }
    }
    if args.json {
        let body = serde_json::json!({ "backend": args.backend, "runs": runs });
        println!("{body:#}");
    }
    Ok(())
}
