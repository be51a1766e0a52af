//! `poolctl bench`: N concurrent users against one pool for a fixed time, each run on a
//! fresh pool (with `--slice`, fresh per step and kept through its turns), with the seed's
//! one-line summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::{BackendArg, BenchArgs, PgMode, SizeArg};
use crate::error::Error;
use crate::format::{ms, pct, table, thousands};
use crate::subject::{HttpClient, Subject, SubjectSpec};

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
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RunResult {
    /// `postgres`, `redis` or `http`.
    pub(crate) backend: &'static str,
    /// The client driven: `poolkit`, or for HTTP `poolkit-http` and `reqwest` side by side.
    pub(crate) client: &'static str,
    /// Connections in the pool (for an auto-sized pool: its ceiling).
    pub(crate) pool_size: u32,
    /// Whether the pool sized itself (`--pool-sizes …,auto`).
    pub(crate) auto_sized: bool,
    /// The auto-sized pool's open limit at the end of the run (the pool size otherwise).
    pub(crate) open_limit: u32,
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
    /// The slowest round's throughput (`throughput_rps` for a single run).
    pub(crate) throughput_low_rps: f64,
    /// The fastest round's throughput (`throughput_rps` for a single run).
    pub(crate) throughput_high_rps: f64,
    /// Acquire timeouts over all finished operations.
    pub(crate) timeout_ratio: f64,
    /// Whole-operation latency (acquire + run), seconds.
    pub(crate) latency: Quantiles,
    /// Time waiting for a connection, seconds.
    pub(crate) acquire_wait: Quantiles,
    /// Where the wait was measured: `client` (around each checkout) or `pool` (the
    /// pool's own histogram, for shared connections).
    pub(crate) acquire_wait_source: &'static str,
    /// Connections the pool opened (warm-up included; each run has a fresh pool, except
    /// the auto pool, which runs every step: what it opened during this one).
    pub(crate) connections_opened: u64,
    /// Rounds this result is the median of (`--rounds`; 1 for a single run).
    pub(crate) rounds: u32,
}

impl RunResult {
    /// `20`, or `auto(7/50)` for an auto-sized pool (its open limit at the end / its ceiling).
    pub(crate) fn size_label(&self) -> String {
        if self.auto_sized {
            format!("auto({}/{})", self.open_limit, self.pool_size)
        } else {
            self.pool_size.to_string()
        }
    }

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
            self.size_label(),
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

/// The slowest and the fastest round's throughput: `61,693–69,021`.
fn rps_range(r: &RunResult) -> String {
    range_text((r.throughput_low_rps, r.throughput_high_rps))
}

/// A slowest and fastest round as text: `61,693–69,021`.
fn range_text((low, high): (f64, f64)) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = |v: f64| thousands(v.round() as u64);
    format!("{}–{}", whole(low), whole(high))
}

/// A table of runs (for `--pool-sizes` and `--steps`); with `--rounds`, a last column
/// gives each row's slowest and fastest round.
pub(crate) fn runs_table(runs: &[RunResult]) -> String {
    let by_client = runs.iter().any(|r| r.client != "poolkit");
    let rounds = runs.iter().any(|r| r.rounds > 1);
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rps = r.throughput_rps.round() as u64;
            let mut row = vec![
                r.size_label(),
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
            if rounds {
                row.push(rps_range(r));
            }
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
    if rounds {
        headers.push("RPS by round");
    }
    if by_client {
        headers.insert(0, "Client");
    }
    table(&headers, &rows)
}

/// The median of the same size and step over several rounds: the round with the median
/// throughput, with every latency and wait quantile replaced by its median over the rounds.
pub(crate) fn median_of(rounds: &[RunResult]) -> RunResult {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    let mut by_rps: Vec<&RunResult> = rounds.iter().collect();
    by_rps.sort_by(|a, b| a.throughput_rps.total_cmp(&b.throughput_rps));
    let Some(mid) = by_rps.get(by_rps.len() / 2) else {
        return RunResult::default();
    };
    let q = |f: fn(&RunResult) -> Quantiles| Quantiles {
        p50: median(rounds.iter().map(|r| f(r).p50).collect()),
        p95: median(rounds.iter().map(|r| f(r).p95).collect()),
        p99: median(rounds.iter().map(|r| f(r).p99).collect()),
    };
    RunResult {
        throughput_rps: median(rounds.iter().map(|r| r.throughput_rps).collect()),
        throughput_low_rps: rounds
            .iter()
            .map(|r| r.throughput_low_rps)
            .fold(f64::INFINITY, f64::min),
        throughput_high_rps: rounds
            .iter()
            .map(|r| r.throughput_high_rps)
            .fold(0.0, f64::max),
        latency: q(|r| r.latency),
        acquire_wait: q(|r| r.acquire_wait),
        rounds: u32::try_from(rounds.len()).unwrap_or(u32::MAX),
        ..(*mid).clone()
    }
}

/// How an auto-sized run compared with the best fixed size at the same concurrency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AutoVersusBest {
    /// Concurrent users.
    pub(crate) concurrency: u32,
    /// The fixed size with the highest throughput at this concurrency.
    pub(crate) best_size: u32,
    /// Auto's throughput over the best fixed size's.
    pub(crate) throughput_ratio: f64,
    /// Auto's acquire-wait P95 over the best fixed size's.
    pub(crate) wait_p95_ratio: f64,
    /// Auto's open limit at the end of the run.
    pub(crate) auto_open_limit: u32,
    /// With `--rounds`: whether auto's rounds and the best fixed size's overlap (auto's
    /// fastest round is at least the best size's slowest, and the other way round), that
    /// is whether the difference between the two medians is within the round-to-round
    /// spread of this machine. `None` for a single round.
    pub(crate) rounds_overlap: Option<bool>,
    /// Auto's slowest and fastest round (RPS).
    pub(crate) auto_rounds_rps: (f64, f64),
    /// The best fixed size's slowest and fastest round (RPS).
    pub(crate) best_rounds_rps: (f64, f64),
}

/// For every concurrency with both an auto-sized run and fixed sizes: auto against the
/// fixed size with the most throughput.
pub(crate) fn auto_versus_best(runs: &[RunResult]) -> Vec<AutoVersusBest> {
    runs.iter()
        .filter(|a| a.auto_sized)
        .filter_map(|a| {
            let best = runs
                .iter()
                .filter(|r| !r.auto_sized && r.concurrency == a.concurrency)
                .max_by(|x, y| x.throughput_rps.total_cmp(&y.throughput_rps))?;
            Some(AutoVersusBest {
                concurrency: a.concurrency,
                best_size: best.pool_size,
                throughput_ratio: a.throughput_rps / best.throughput_rps.max(1e-9),
                wait_p95_ratio: a.acquire_wait.p95 / best.acquire_wait.p95.max(1e-9),
                auto_open_limit: a.open_limit,
                rounds_overlap: (a.rounds > 1 && best.rounds > 1).then_some(
                    a.throughput_high_rps >= best.throughput_low_rps
                        && best.throughput_high_rps >= a.throughput_low_rps,
                ),
                auto_rounds_rps: (a.throughput_low_rps, a.throughput_high_rps),
                best_rounds_rps: (best.throughput_low_rps, best.throughput_high_rps),
            })
        })
        .collect()
}

/// One line per [`AutoVersusBest`]: `1000 users: auto (8) 1.04 × the throughput of the
/// best fixed size (10), wait P95 0.97 ×`; with `--rounds`, a second line gives both
/// sizes' slowest and fastest rounds and whether they overlap (a difference within the
/// machine's noise) or lie apart.
pub(crate) fn auto_lines(v: &[AutoVersusBest]) -> String {
    let mut out = String::new();
    for c in v {
        let _ = writeln!(
            out,
            "{} users: auto (open limit {}) {:.2} × the throughput of the best fixed size ({}), wait P95 {:.2} ×",
            thousands(u64::from(c.concurrency)),
            c.auto_open_limit,
            c.throughput_ratio,
            c.best_size,
            c.wait_p95_ratio
        );
        if let Some(overlap) = c.rounds_overlap {
            let verdict = if overlap {
                "the rounds overlap: the medians differ by less than the spread between rounds"
            } else if c.auto_rounds_rps.1 < c.best_rounds_rps.0 {
                "apart: auto's fastest round is under the best size's slowest"
            } else {
                "apart: auto's slowest round is over the best size's fastest"
            };
            let _ = writeln!(
                out,
                "  by round: auto {} RPS, {} {} RPS; {verdict}",
                range_text(c.auto_rounds_rps),
                c.best_size,
                range_text(c.best_rounds_rps)
            );
        }
    }
    out
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

/// What a run measured, before it is summed up: one run, or with `--slice` the turns of
/// one size at one step added together.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    /// Time under load (the sum of the turns).
    seconds: f64,
    /// Each user's operation latencies, microseconds.
    latency_us: Vec<Vec<u32>>,
    /// Each user's acquire waits, microseconds (empty when the client does not see them).
    wait_us: Vec<Vec<u32>>,
    /// Failed operations by kind.
    errors: BTreeMap<String, u64>,
    /// Operations that finished after the time was up.
    cut_off: u64,
}

impl Measured {
    /// Adds a later turn of the same size and step.
    fn add(&mut self, turn: Self) {
        self.seconds += turn.seconds;
        self.latency_us.extend(turn.latency_us);
        self.wait_us.extend(turn.wait_us);
        for (k, n) in turn.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.cut_off += turn.cut_off;
    }

    /// The result, with the pool's figures read from `subject` now; `opened_before` is
    /// what the pool had opened when the first turn began (the auto pool runs every step;
    /// a fixed pool is fresh per step, its warm-up counted).
    fn result(
        self,
        subject: &Subject,
        pool_size: u32,
        concurrency: u32,
        opened_before: u64,
    ) -> RunResult {
        let stats = subject.stats();
        let ok: u64 = self.latency_us.iter().map(|v| v.len() as u64).sum();
        let finished = ok + self.errors.values().sum::<u64>();
        let timeouts = self.errors.get("timeout").copied().unwrap_or(0);
        let client_measured = self.wait_us.iter().any(|v| !v.is_empty());
        let keeps_stats = !matches!(*subject, Subject::Reqwest { .. });
        let acquire_wait = if client_measured {
            Quantiles::of(&self.wait_us)
        } else {
            Quantiles {
                p50: stats.wait.p50,
                p95: stats.wait.p95,
                p99: stats.wait.p99,
            }
        };
        #[allow(clippy::cast_precision_loss)]
        let throughput = ok as f64 / self.seconds.max(1e-9);
        #[allow(clippy::cast_precision_loss)]
        RunResult {
            backend: stats_backend(subject),
            client: subject.client(),
            pool_size,
            auto_sized: stats.auto_sized,
            open_limit: stats.open_limit,
            concurrency,
            seconds: self.seconds,
            ok,
            errors: self.errors,
            cut_off: self.cut_off,
            throughput_rps: throughput,
            throughput_low_rps: throughput,
            throughput_high_rps: throughput,
            timeout_ratio: if finished == 0 {
                0.0
            } else {
                timeouts as f64 / finished as f64
            },
            latency: Quantiles::of(&self.latency_us),
            acquire_wait,
            acquire_wait_source: if client_measured {
                "client"
            } else if keeps_stats {
                "pool"
            } else {
                "not measured: reqwest has no pool statistics"
            },
            connections_opened: stats.created.saturating_sub(opened_before),
            rounds: 1,
        }
    }
}

/// Runs `concurrency` users against `subject` for `duration`. Users start no operation
/// after the deadline; one that finishes after it is counted as cut off, not measured.
pub(crate) async fn run(
    subject: Arc<Subject>,
    concurrency: u32,
    duration: Duration,
    grace: Duration,
    bar: &ProgressBar,
) -> Result<Measured, Error> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let done = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(concurrency as usize);
    for user in 0..concurrency {
        let subject = Arc::clone(&subject);
        let done = Arc::clone(&done);
        handles.push(tokio::spawn(async move {
            let mut tally = TaskTally::default();
            let mut n = u64::from(user);
            while tokio::time::Instant::now() < deadline {
                let t0 = Instant::now();
                // Never dropped half-way: cancelling a pool operation must not be what the
                // bench measures (and leaves some pools with leaked places).
                let r = subject.op(n).await;
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
    let mut measured = Measured {
        seconds: duration.as_secs_f64(),
        ..Measured::default()
    };
    for mut h in handles {
        match tokio::time::timeout_at(deadline + grace, &mut h).await {
            Ok(joined) => {
                let t =
                    joined.map_err(|e| Error::Failed(format!("a bench user task failed: {e}")))?;
                measured.latency_us.push(t.latency_us);
                measured.wait_us.push(t.wait_us);
                for (k, n) in t.errors {
                    *measured.errors.entry(k.to_owned()).or_default() += n;
                }
                measured.cut_off += t.cut_off;
            }
            Err(_) => {
                h.abort();
                measured.cut_off += 1;
            }
        }
    }
    bar.finish_and_clear();
    Ok(measured)
}

fn stats_backend(t: &Subject) -> &'static str {
    match t {
        Subject::Postgres { .. } => "postgres",
        Subject::Redis { .. } => "redis",
        Subject::Http { .. } | Subject::Reqwest { .. } => "http",
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

/// How `--duration` is cut with `--slice`: the number of turns and each turn's length
/// (the turns add up to the duration; a slice as long as the duration or longer is one
/// turn).
pub(crate) fn turns(duration: Duration, slice: Option<Duration>) -> (u32, Duration) {
    let Some(slice) = slice.filter(|s| !s.is_zero() && *s < duration) else {
        return (1, duration);
    };
    let n = duration.as_nanos().div_ceil(slice.as_nanos());
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    (n, duration / n)
}

/// One size (and, for HTTP, one client) at one step of one round: its pool and what its
/// turns measured so far.
struct Entry {
    /// Where its result goes: the size's place in `--pool-sizes`, the step's place, the client's.
    key: (usize, usize, usize),
    size: u32,
    client: HttpClient,
    /// Whether this is the auto pool (kept through every step) rather than a fixed pool
    /// built for this step.
    auto: bool,
    subject: Option<Arc<Subject>>,
    opened_before: u64,
    measured: Measured,
    /// Set after the last turn.
    result: Option<RunResult>,
}

/// The whole `bench` subcommand: every pool size × every step, then the report.
pub(crate) async fn command(args: &BenchArgs) -> Result<(), Error> {
    let spec = SubjectSpec {
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
    let clients: &[HttpClient] = match (args.backend, args.mode) {
        (BackendArg::Http, _) => &[HttpClient::Poolkit, HttpClient::Reqwest],
        (BackendArg::Postgres, PgMode::Shared) => &[HttpClient::PostgresShared],
        (BackendArg::Postgres, PgMode::Both) => &[HttpClient::Poolkit, HttpClient::PostgresShared],
        _ => &[HttpClient::Poolkit],
    };
    let sizes = if !args.pool_sizes.is_empty() {
        args.pool_sizes.clone()
    } else if let Some(s) = args.pool_size {
        vec![SizeArg::Fixed(s)]
    } else {
        vec![SizeArg::Fixed(spec.env_pool_size()?)]
    };
    let steps = if args.steps.is_empty() {
        vec![args.concurrency]
    } else {
        args.steps.clone()
    };
    let largest_fixed = sizes
        .iter()
        .filter_map(|s| match s {
            SizeArg::Fixed(n) => Some(*n),
            SizeArg::Auto => None,
        })
        .max();
    // The auto pool is one pool through every step, as load changes through a day.
    let auto = if sizes.contains(&SizeArg::Auto) {
        let exclusive_redis =
            args.backend == BackendArg::Redis && args.op == crate::cli::RedisOp::ExclusiveGet;
        if args.backend != BackendArg::Postgres && !exclusive_redis {
            return Err(Error::Failed(
                "auto sizes PostgreSQL pools and Redis exclusive pools; the Redis bench drives shared connections unless --op exclusive-get, and the HTTP bench shared ones: bench auto with postgres or redis --op exclusive-get".into(),
            ));
        }
        let ceiling = match args.auto_ceiling.or(largest_fixed) {
            Some(c) => c,
            None => spec.env_ceiling()?,
        };
        Some((
            ceiling,
            Arc::new(spec.build(ceiling, Some(args.auto_interval)).await?),
        ))
    } else {
        None
    };
    let (turns, turn) = turns(args.duration, args.slice);
    // Step by step, every size in turn, so that the runs compared at one step are close in
    // time (a shared machine's speed drifts over minutes); shown grouped by size.
    let mut runs = Vec::new();
    let mut failed = None;
    let plan: Vec<(usize, u32)> = (0..args.rounds)
        .flat_map(|_| steps.iter().copied().enumerate())
        .collect();
    for &(step, concurrency) in &plan {
        let mut entries = Vec::new();
        for (nth, &size) in sizes.iter().enumerate() {
            match (size, &auto) {
                (SizeArg::Fixed(size), _) => {
                    for (c, &client) in clients.iter().enumerate() {
                        entries.push(Entry {
                            key: (nth, step, c),
                            size,
                            client,
                            auto: false,
                            subject: None,
                            opened_before: 0,
                            measured: Measured::default(),
                            result: None,
                        });
                    }
                }
                (SizeArg::Auto, Some((ceiling, subject))) => entries.push(Entry {
                    key: (nth, step, 0),
                    size: *ceiling,
                    client: HttpClient::Poolkit,
                    auto: true,
                    opened_before: subject.stats().created,
                    subject: Some(Arc::clone(subject)),
                    measured: Measured::default(),
                    result: None,
                }),
                (SizeArg::Auto, None) => {}
            }
        }
        let outcome = step_in_turns(args, &spec, &mut entries, concurrency, turns, turn).await;
        for e in entries {
            match (e.result, e.subject) {
                (Some(r), _) => runs.push((e.key, r)),
                // A failure left this fixed pool open.
                (None, Some(subject)) if !e.auto => subject.close().await,
                (None, _) => {}
            }
        }
        if let Err(e) = outcome {
            failed = Some(e);
            break;
        }
    }
    if let Some((_, subject)) = &auto {
        subject.close().await;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    runs.sort_by_key(|(key, _)| *key);
    let every: Vec<RunResult> = runs.iter().map(|(_, r)| r.clone()).collect();
    let runs: Vec<RunResult> = runs
        .chunk_by(|a, b| a.0 == b.0)
        .map(|group| {
            let rounds: Vec<RunResult> = group.iter().map(|(_, r)| r.clone()).collect();
            median_of(&rounds)
        })
        .collect();
    let versus = auto_versus_best(&runs);
    if runs.len() > 1 && !args.json {
        println!("{}", runs_table(&runs));
        if args.rounds > 1 {
            println!(
                "each row: the median of {} interleaved rounds (--json lists every round)",
                args.rounds
            );
        }
        if turns > 1 {
            println!(
                "each round: the sizes took {turns} turns of {turn:?} each, in rotation ({:?} each in all)",
                args.duration
            );
        }
        if !versus.is_empty() {
            print!("{}", auto_lines(&versus));
        }
    }
    if let Some(path) = &args.chart {
        crate::chart::draw(path, &runs)?;
        if !args.json {
            println!("chart written to {}", path.display());
        }
    }
    if args.json {
        let mut body = serde_json::json!({ "backend": args.backend, "runs": runs, "auto_versus_best": versus });
        if args.rounds > 1 {
            body["rounds"] = args.rounds.into();
            body["every_round"] = serde_json::to_value(&every)
                .map_err(|e| Error::Failed(format!("the bench's JSON: {e}")))?;
        }
        if turns > 1 {
            body["turns"] = turns.into();
            body["turn_seconds"] = turn.as_secs_f64().into();
        }
        println!("{body:#}");
    }
    Ok(())
}

/// Runs one step: every size in rotation, `turns` turns of `turn` each. A fixed pool is
/// built at its first turn and stays open until its last, so that with `--slice` every
/// size meets its later turns warm, as the auto pool does; after its last turn its result
/// is taken (and printed unless `--json`) and the fixed pool closed.
async fn step_in_turns(
    args: &BenchArgs,
    spec: &SubjectSpec,
    entries: &mut [Entry],
    concurrency: u32,
    turns: u32,
    turn: Duration,
) -> Result<(), Error> {
    for nth_turn in 1..=turns {
        for e in entries.iter_mut() {
            let subject = match &e.subject {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(if args.backend == BackendArg::Http {
                        spec.build_http(e.size, e.client)?
                    } else {
                        spec.build_for(e.size, None, e.client == HttpClient::PostgresShared)
                            .await?
                    });
                    e.subject = Some(Arc::clone(&s));
                    s
                }
            };
            let label = if e.auto {
                format!("pool auto (ceiling {}) × {concurrency} users", e.size)
            } else {
                format!("{} pool {} × {concurrency} users", subject.client(), e.size)
            };
            let bar = progress(args.quiet || args.json, label);
            let grace = subject.acquire_timeout() + Duration::from_secs(10);
            let m = run(Arc::clone(&subject), concurrency, turn, grace, &bar).await?;
            e.measured.add(m);
            if nth_turn == turns {
                let r = std::mem::take(&mut e.measured).result(
                    &subject,
                    e.size,
                    concurrency,
                    e.opened_before,
                );
                if !args.json {
                    println!("{}", r.report());
                }
                e.result = Some(r);
                if !e.auto {
                    // Closed at once: with one turn (no --slice) the server then needs
                    // room for one fixed pool at a time.
                    subject.close().await;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(size: u32, auto: bool, concurrency: u32, rps: f64, wait_p95: f64) -> RunResult {
        let q = Quantiles {
            p50: wait_p95 / 2.0,
            p95: wait_p95,
            p99: wait_p95,
        };
        RunResult {
            backend: "postgres",
            client: "poolkit",
            pool_size: size,
            auto_sized: auto,
            open_limit: if auto { 7 } else { size },
            concurrency,
            seconds: 10.0,
            ok: 1,
            errors: BTreeMap::new(),
            cut_off: 0,
            throughput_rps: rps,
            throughput_low_rps: rps,
            throughput_high_rps: rps,
            timeout_ratio: 0.0,
            latency: q,
            acquire_wait: q,
            acquire_wait_source: "client",
            connections_opened: 0,
            rounds: 1,
        }
    }

    #[test]
    fn a_slice_cuts_the_duration_into_equal_turns() {
        let s = Duration::from_secs;
        assert_eq!(turns(s(12), None), (1, s(12)));
        assert_eq!(turns(s(12), Some(s(1))), (12, s(1)));
        // Turns of equal length that add up to the duration, none longer than the slice.
        assert_eq!(turns(s(10), Some(s(3))), (4, Duration::from_millis(2500)));
        // A slice as long as the run or longer is one turn.
        assert_eq!(turns(s(2), Some(s(2))), (1, s(2)));
        assert_eq!(turns(s(2), Some(s(5))), (1, s(2)));
    }

    #[test]
    fn turns_add_up_to_one_run() {
        let turn = |ms: Vec<u32>, errors: &[(&str, u64)], cut_off| Measured {
            seconds: 1.0,
            latency_us: vec![ms.clone()],
            wait_us: vec![ms],
            errors: errors.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
            cut_off,
        };
        let mut m = turn(vec![100, 200], &[("timeout", 1)], 2);
        m.add(turn(vec![300], &[("timeout", 2), ("query", 1)], 1));
        m.add(turn(vec![], &[], 0));
        assert!((m.seconds - 3.0).abs() < 1e-12);
        let ops: usize = m.latency_us.iter().map(Vec::len).sum();
        assert_eq!(ops, 3);
        assert_eq!(m.wait_us.len(), 3, "each turn's users are kept apart");
        assert_eq!(m.errors.get("timeout"), Some(&3));
        assert_eq!(m.errors.get("query"), Some(&1));
        assert_eq!(m.cut_off, 3);
    }

    #[test]
    fn rounds_give_their_median() {
        let rounds = [
            run(5, false, 100, 900.0, 0.003),
            run(5, false, 100, 1200.0, 0.001),
            run(5, false, 100, 1000.0, 0.002),
        ];
        let m = median_of(&rounds);
        assert!((m.throughput_rps - 1000.0).abs() < 1e-9);
        assert!((m.acquire_wait.p95 - 0.002).abs() < 1e-12);
        assert_eq!(m.rounds, 3);
        assert_eq!(
            (m.throughput_low_rps, m.throughput_high_rps),
            (900.0, 1200.0)
        );
        let table = runs_table(std::slice::from_ref(&m));
        assert!(table.contains("900–1,200"), "{table}");
        let two = median_of(&rounds[..2]);
        assert!((two.throughput_rps - 1050.0).abs() < 1e-9);
    }

    #[test]
    fn auto_is_compared_with_the_fastest_fixed_size_at_each_step() {
        let runs = [
            run(5, false, 100, 900.0, 0.002),
            run(10, false, 100, 1000.0, 0.004),
            run(5, false, 1000, 500.0, 0.02),
            run(50, true, 100, 950.0, 0.005),
            run(50, true, 1000, 600.0, 0.01),
        ];
        let v = auto_versus_best(&runs);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].concurrency, v[0].best_size), (100, 10));
        assert!((v[0].throughput_ratio - 0.95).abs() < 1e-9);
        assert!((v[0].wait_p95_ratio - 1.25).abs() < 1e-9);
        assert_eq!((v[1].best_size, v[1].auto_open_limit), (5, 7));
        let text = auto_lines(&v);
        assert!(
            text.contains("1,000 users: auto (open limit 7) 1.20 × the throughput of the best fixed size (5), wait P95 0.50 ×"),
            "{text}"
        );
    }

    #[test]
    fn rounds_tell_a_real_difference_from_the_spread_between_rounds() {
        let rounds =
            |size, auto, rps: [f64; 3]| median_of(&rps.map(|r| run(size, auto, 100, r, 0.002)));
        // Auto's median is 0.92 × the best's, but its rounds reach into the best's.
        let noisy = auto_versus_best(&[
            rounds(10, false, [61_000.0, 68_000.0, 69_000.0]),
            rounds(20, true, [58_000.0, 62_500.0, 63_000.0]),
        ]);
        assert_eq!(noisy[0].rounds_overlap, Some(true));
        let text = auto_lines(&noisy);
        assert!(
            text.contains(
                "by round: auto 58,000–63,000 RPS, 10 61,000–69,000 RPS; the rounds overlap"
            ),
            "{text}"
        );
        // Every round of auto under every round of the best: a real difference.
        let apart = auto_versus_best(&[
            rounds(10, false, [66_000.0, 68_000.0, 69_000.0]),
            rounds(20, true, [58_000.0, 60_000.0, 63_000.0]),
        ]);
        assert_eq!(apart[0].rounds_overlap, Some(false));
        assert!(
            auto_lines(&apart)
                .contains("apart: auto's fastest round is under the best size's slowest"),
            "{}",
            auto_lines(&apart)
        );
        // One round: nothing to say about the spread.
        let single = auto_versus_best(&[
            run(10, false, 100, 69_000.0, 0.002),
            run(20, true, 100, 60_000.0, 0.002),
        ]);
        assert_eq!(single[0].rounds_overlap, None);
        assert!(!auto_lines(&single).contains("by round"));
    }
}
