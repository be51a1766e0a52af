//! `poolctl fleet simulate`: a fleet of instances sharing one `P_FLEET_BUDGET`, each a real
//! pool engine on in-memory connections with the real lease script in a real Redis, spread
//! over a few processes (this binary started again as members). The sum of every
//! instance's open connections is sampled every 100 ms through:
//!
//! 1. the fleet starting;
//! 2. a rolling update: as many new instances start, and the old ones leave over
//!    `--rolling`;
//! 3. `--kill` instances killed at once (no goodbye: their leases expire);
//! 4. `--partition` instances cut off from Redis (their traffic to it is dropped while the
//!    others still reach it), then healed.
//!
//! It reports the highest total against the budget, the lease script's cost in Redis per
//! renewal, how long a new instance waits for its fair share, how long a dead instance's
//! share takes to return, and how long a cut-off instance takes to shed to its floor.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use poolkit_core::engine::{Engine, ManageConnection};
use poolkit_core::{Backend, PoolConfig};
use poolkit_postgres::{FleetBudget, FleetConfig, FleetMember};
use poolkit_redis::redis;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::SimulateArgs;
use crate::error::Error;

/// The environment variable that makes this binary a member process.
const MEMBER_VAR: &str = "POOLCTL_FLEET_MEMBER";
/// How long a held connection is kept by an instance's worker, and the pause between.
const HOLD: Duration = Duration::from_millis(200);
const PAUSE: Duration = Duration::from_millis(50);

/// Connections that exist (in-memory), per process.
#[derive(Debug, Clone)]
struct Mem(Arc<AtomicI64>);

/// One in-memory connection; counted while it exists.
#[derive(Debug)]
struct MemConn(Arc<AtomicI64>);

impl Drop for MemConn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Never happens; the engine needs an error type.
#[derive(Debug, thiserror::Error)]
#[error("in-memory connection error")]
struct MemError;

impl ManageConnection for Mem {
    type Connection = MemConn;
    type Error = MemError;

    async fn connect(&self) -> Result<MemConn, MemError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(MemConn(Arc::clone(&self.0)))
    }

    async fn is_valid(&self, _: &mut MemConn) -> Result<(), MemError> {
        Ok(())
    }

    fn has_broken(&self, _: &mut MemConn) -> bool {
        false
    }
}

/// The unix time in ms.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------- member process

/// One simulated instance.
struct Instance {
    engine: Engine<Mem>,
    member: FleetMember,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    reached: bool,
    partitioned: bool,
}

/// What a member process needs from the environment.
struct MemberEnv {
    redis: String,
    key: String,
    budget: u32,
    want: u32,
    ttl: Duration,
    floor: u32,
}

fn member_env() -> Result<MemberEnv, Error> {
    let var = |k: &str| {
        poolkit_core::env::process_lookup(&format!("{MEMBER_VAR}_{k}"))
            .ok_or_else(|| Error::Usage(format!("{MEMBER_VAR}_{k} is set by the parent")))
    };
    let num = |k: &str| -> Result<u32, Error> {
        var(k)?
            .parse()
            .map_err(|_| Error::Usage(format!("{MEMBER_VAR}_{k}: a number")))
    };
    Ok(MemberEnv {
        redis: var("REDIS")?,
        key: var("KEY")?,
        budget: num("BUDGET")?,
        want: num("WANT")?,
        ttl: Duration::from_millis(u64::from(num("TTL_MS")?)),
        floor: num("FLOOR")?,
    })
}

/// A TCP proxy to Redis whose traffic can be dropped (a partition: nothing is closed,
/// nothing gets through, new connections included).
async fn partition_proxy(upstream: String, cut: Arc<AtomicBool>) -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Failed(format!("cannot bind the partition proxy: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::Failed(e.to_string()))?
        .port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, Arc::clone(&cut)));
            tokio::spawn(pump(sr, cw, Arc::clone(&cut)));
        }
    });
    Ok(port)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Runs as a member process: reads commands on stdin, prints samples on stdout.
pub(crate) async fn member() -> Result<(), Error> {
    let env = member_env()?;
    let open = Arc::new(AtomicI64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let host = env
        .redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy_port = partition_proxy(host, Arc::clone(&cut)).await?;
    let instances: Arc<tokio::sync::Mutex<HashMap<u32, Instance>>> = Arc::default();
    let partition_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    // Samples, aligned to 100 ms slots of the wall clock.
    {
        let (instances, open, partition_at) = (
            Arc::clone(&instances),
            Arc::clone(&open),
            Arc::clone(&partition_at),
        );
        tokio::spawn(async move {
            let mut shed_reported = false;
            loop {
                let now = unix_ms();
                let next = (now / 100 + 1) * 100;
                tokio::time::sleep(Duration::from_millis(next - now)).await;
                let mut list = instances.lock().await;
                let (mut caps, mut live) = (0u64, 0u32);
                let mut events = Vec::new();
                let mut part_open = 0u64;
                let mut part_n = 0u32;
                let mut floor = 0u32;
                for (idx, i) in list.iter_mut() {
                    let s = i.member.status();
                    caps += u64::from(i.engine.cap_value().unwrap_or(0));
                    live += 1;
                    floor = s.floor;
                    if !i.reached && s.fair_share > 0 && s.share >= s.fair_share {
                        i.reached = true;
                        events.push(format!("fair {idx} {}", i.started.elapsed().as_millis()));
                    }
                    if i.partitioned {
                        part_n += 1;
                        part_open += u64::from(i.engine.open_or_connecting());
                    }
                }
                drop(list);
                let at = *partition_at.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(at) = at {
                    if !shed_reported && part_n > 0 && part_open <= u64::from(part_n * floor) {
                        shed_reported = true;
                        events.push(format!("shed {}", at.elapsed().as_millis()));
                    }
                } else {
                    shed_reported = false;
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "s {} {} {caps} {live}",
                    next / 100,
                    open.load(Ordering::SeqCst)
                );
                for e in events {
                    let _ = writeln!(out, "{e}");
                }
                let _ = out.flush();
            }
        });
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["start", idx, part] => {
                let idx: u32 = idx.parse().unwrap_or(0);
                let partitionable = *part == "1";
                let url = if partitionable {
                    format!("redis://127.0.0.1:{proxy_port}")
                } else {
                    env.redis.clone()
                };
                let (instances, open) = (Arc::clone(&instances), Arc::clone(&open));
                let mut fc = FleetConfig::new(FleetBudget::Fixed(env.budget), &url, &env.key);
                fc.ttl = env.ttl;
                fc.floor = env.floor;
                let (want, budget) = (env.want, env.budget);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let Ok((member, grant)) = FleetMember::join(fc, "sim", budget, want).await
                    else {
                        println!("error {idx} join");
                        return;
                    };
                    let mut config = PoolConfig::new("sim", Backend::Postgres);
                    config.pool_size = want;
                    config.min_idle = want;
                    config.acquire_timeout = Duration::from_secs(600);
                    let Ok(engine) = Engine::build_capped(Mem(open), config, Some(grant)).await
                    else {
                        println!("error {idx} engine");
                        return;
                    };
                    let mut tasks = vec![member.start(engine.clone())];
                    let e = engine.clone();
                    tasks.push(tokio::spawn(async move {
                        loop {
                            if let Ok(c) = e.get().await {
                                tokio::time::sleep(HOLD).await;
                                drop(c);
                            }
                            tokio::time::sleep(PAUSE).await;
                        }
                    }));
                    instances.lock().await.insert(
                        idx,
                        Instance {
                            engine,
                            member,
                            tasks,
                            started,
                            reached: false,
                            partitioned: partitionable,
                        },
                    );
                });
            }
            ["leave", idx] | ["kill", idx] => {
                let idx: u32 = idx.parse().unwrap_or(0);
                let leave = f[0] == "leave";
                if let Some(i) = instances.lock().await.remove(&idx) {
                    let mut tasks = i.tasks.into_iter();
                    let renewer = tasks.next();
                    for t in tasks {
                        t.abort();
                    }
                    if leave {
                        // A clean shutdown: the engine closes and the member leaves.
                        i.engine.close();
                    } else if let Some(r) = &renewer {
                        r.abort();
                    }
                    i.engine.close();
                    drop(i.member);
                }
            }
            ["partition"] => {
                *partition_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                cut.store(true, Ordering::SeqCst);
            }
            ["heal"] => {
                *partition_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                cut.store(false, Ordering::SeqCst);
            }
            ["quit"] => break,
            _ => {}
        }
    }
    Ok(())
}

/// Whether this process is a member started by `poolctl fleet simulate`.
pub(crate) fn is_member() -> bool {
    poolkit_core::env::process_lookup(MEMBER_VAR).is_some()
}

/// A member process's `main`: one thread, its instances and their engines.
pub(crate) fn member_main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolctl fleet member: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(member()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poolctl fleet member: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- the parent

/// One 100 ms sample of the whole fleet.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the simulation started.
    pub(crate) t: f64,
    /// Connections open in every instance.
    pub(crate) open: i64,
    /// The sum of the instances' caps (their grants).
    pub(crate) granted: u64,
    /// Instances running.
    pub(crate) instances: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    reports: u32,
    open: i64,
    caps: u64,
    live: u32,
}

/// What the member processes report.
#[derive(Debug, Default)]
struct Reports {
    slots: BTreeMap<u64, Slot>,
    /// (instance, ms from its start to its fair share).
    fair: Vec<(u32, u64)>,
    /// ms from the partition until the cut-off instances were at their floor.
    shed: Option<u64>,
    errors: Vec<String>,
}

/// One phase's cost in Redis.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseCost {
    /// The phase.
    pub(crate) phase: String,
    /// Instances (most during the phase).
    pub(crate) instances: u32,
    /// Renewals (script runs).
    pub(crate) renewals: u64,
    /// Mean time in the script per renewal, µs (Redis's commandstats).
    pub(crate) script_us: f64,
    /// Redis CPU (user + sys) per renewal, µs.
    pub(crate) cpu_us: f64,
    /// The highest total during the phase.
    pub(crate) peak: i64,
}

/// The simulation's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    /// Instances (before the rolling update doubles them).
    pub(crate) instances: u32,
    /// The budget.
    pub(crate) budget: u32,
    /// The highest sum of open connections in any 100 ms sample.
    pub(crate) peak: i64,
    /// Samples taken.
    pub(crate) samples: usize,
    /// Samples above the budget.
    pub(crate) above_budget: usize,
    /// New instances in the rolling update: ms to their fair share (median, p95, max).
    pub(crate) new_share_ms: [u64; 3],
    /// ms from the kill until the survivors' grants took the dead instances' share
    /// (all but their reserved floors).
    pub(crate) dead_share_ms: Option<u64>,
    /// ms from the partition until the cut-off instances were down to their floor.
    pub(crate) shed_ms: Option<u64>,
    /// The lease by the cut-off instances' clock, less the drift margin: `shed_ms` must be below.
    pub(crate) shed_deadline_ms: u64,
    /// ms from the partition until the others held the room the cut-off ones gave up.
    pub(crate) partition_share_ms: Option<u64>,
    /// Redis's cost per phase.
    pub(crate) phases: Vec<PhaseCost>,
    /// The samples.
    #[serde(skip)]
    pub(crate) series: Vec<Sample>,
}

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

async fn redis_counters(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64, f64) {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let (mut calls, mut usec) = (0u64, 0u64);
    for line in stats.lines() {
        if let Some(rest) = line
            .strip_prefix("cmdstat_evalsha:")
            .or_else(|| line.strip_prefix("cmdstat_eval:"))
        {
            for kv in rest.split(',') {
                match kv.split_once('=') {
                    Some(("calls", v)) => calls += v.parse::<u64>().unwrap_or(0),
                    Some(("usec", v)) => usec += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    let mut secs = 0.0;
    for line in cpu.lines() {
        if let Some((k, v)) = line.trim().split_once(':')
            && (k == "used_cpu_sys" || k == "used_cpu_user")
        {
            secs += v.parse::<f64>().unwrap_or(0.0);
        }
    }
    (calls, usec, secs)
}

struct Sim {
    children: Vec<Child>,
    reports: Arc<std::sync::Mutex<Reports>>,
    start_slot: u64,
    processes: u32,
}

impl Sim {
    async fn send(&mut self, process: u32, line: &str) {
        if let Some(c) = self.children.get_mut(process as usize) {
            let _ = c.stdin.write_all(format!("{line}\n").as_bytes()).await;
        }
    }

    fn process_of(&self, idx: u32) -> u32 {
        idx % self.processes
    }

    async fn start(&mut self, idx: u32, partitionable: bool) {
        let p = self.process_of(idx);
        self.send(p, &format!("start {idx} {}", u8::from(partitionable)))
            .await;
    }

    async fn stop(&mut self, idx: u32, how: &str) {
        let p = self.process_of(idx);
        self.send(p, &format!("{how} {idx}")).await;
    }

    /// Complete samples so far (every process reported the slot).
    fn samples(&self) -> Vec<Sample> {
        let r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        r.slots
            .iter()
            .filter(|(_, s)| s.reports == self.processes)
            .map(|(slot, s)| Sample {
                #[allow(clippy::cast_precision_loss)]
                t: (slot.saturating_sub(self.start_slot)) as f64 / 10.0,
                open: s.open,
                granted: s.caps,
                instances: s.live,
            })
            .collect()
    }

    fn last(&self) -> Sample {
        self.samples().last().copied().unwrap_or_default()
    }

    /// Waits until `ok` holds for the latest sample, at most `within`; returns the ms it took.
    async fn until(&self, within: Duration, ok: impl Fn(&Sample) -> bool) -> Option<u64> {
        let start = Instant::now();
        let mut seen = 0usize;
        while start.elapsed() < within {
            let s = self.samples();
            for x in &s[seen.min(s.len())..] {
                if ok(x) {
                    return Some(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
                }
            }
            seen = s.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// Runs the simulation.
#[allow(clippy::too_many_lines)]
pub(crate) async fn run(args: &SimulateArgs, progress: bool) -> Result<Outcome, Error> {
    let n = args.instances;
    let budget = args.budget.unwrap_or(n.saturating_mul(3));
    let redis_url = args
        .redis
        .clone()
        .or_else(|| poolkit_core::env::process_lookup("REDIS_URL"))
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let key = format!("poolctl:simulate:{}:{}", std::process::id(), unix_ms());
    let client = redis::Client::open(redis_url.as_str())
        .map_err(|e| Error::Usage(format!("--redis: {e}")))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| Error::Failed(format!("Redis at --redis: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| Error::Failed(e.to_string()))?;
    let reports: Arc<std::sync::Mutex<Reports>> = Arc::default();
    let mut children = Vec::new();
    for _ in 0..args.processes {
        let mut proc = tokio::process::Command::new(&exe)
            .env(MEMBER_VAR, "1")
            .env(format!("{MEMBER_VAR}_REDIS"), &redis_url)
            .env(format!("{MEMBER_VAR}_KEY"), &key)
            .env(format!("{MEMBER_VAR}_BUDGET"), budget.to_string())
            .env(format!("{MEMBER_VAR}_WANT"), args.want.to_string())
            .env(
                format!("{MEMBER_VAR}_TTL_MS"),
                args.ttl.as_millis().to_string(),
            )
            .env(format!("{MEMBER_VAR}_FLOOR"), args.floor.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Failed(format!("cannot start a member process: {e}")))?;
        let stdin = proc
            .stdin
            .take()
            .ok_or_else(|| Error::Failed("stdin".into()))?;
        let stdout = proc
            .stdout
            .take()
            .ok_or_else(|| Error::Failed("stdout".into()))?;
        let reports = Arc::clone(&reports);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let f: Vec<&str> = line.split_whitespace().collect();
                let mut r = reports.lock().unwrap_or_else(|p| p.into_inner());
                match f.as_slice() {
                    ["s", slot, open, caps, live] => {
                        let s = r.slots.entry(slot.parse().unwrap_or(0)).or_default();
                        s.reports += 1;
                        s.open += open.parse::<i64>().unwrap_or(0);
                        s.caps += caps.parse::<u64>().unwrap_or(0);
                        s.live += live.parse::<u32>().unwrap_or(0);
                    }
                    ["fair", idx, ms] => {
                        let pair = (idx.parse().unwrap_or(0), ms.parse().unwrap_or(0));
                        r.fair.push(pair);
                    }
                    ["shed", ms] => r.shed = ms.parse().ok(),
                    _ => r.errors.push(line.clone()),
                }
            }
        });
        children.push(Child { proc, stdin });
    }
    let mut sim = Sim {
        children,
        reports: Arc::clone(&reports),
        start_slot: unix_ms() / 100 + 1,
        processes: args.processes,
    };
    let say = |what: &str| {
        if progress {
            eprintln!("poolctl fleet simulate: {what}");
        }
    };
    let ttl = args.ttl;
    let mut phases = Vec::new();
    let mut mark = (redis_counters(&mut conn).await, sim.samples().len());
    macro_rules! phase {
        ($name:expr, $instances:expr) => {{
            let now = redis_counters(&mut conn).await;
            let samples = sim.samples();
            let peak = samples[mark.1.min(samples.len())..]
                .iter()
                .map(|s| s.open)
                .max()
                .unwrap_or(0);
            let calls = now.0.saturating_sub(mark.0.0);
            #[allow(clippy::cast_precision_loss)]
            let per = |x: f64| if calls == 0 { 0.0 } else { x / calls as f64 };
            #[allow(clippy::cast_precision_loss)]
            phases.push(PhaseCost {
                phase: $name.to_owned(),
                instances: $instances,
                renewals: calls,
                script_us: per(now.1.saturating_sub(mark.0.1) as f64),
                cpu_us: per((now.2 - mark.0.2) * 1e6),
                peak,
            });
            #[allow(unused_assignments)]
            {
                mark = (now, samples.len());
            }
        }};
    }

    // 1. The fleet starts (staggered over 2 s).
    say(&format!("{n} instances start, budget {budget}"));
    for idx in 0..n {
        sim.start(idx, false).await;
        tokio::time::sleep(Duration::from_secs(2) / n).await;
    }
    let full = |want: u32, live: u32, reserved: u32| {
        u64::from(
            budget
                .saturating_sub(reserved)
                .min(want.saturating_mul(live)),
        )
    };
    let want = args.want;
    sim.until(ttl * 4, |s| {
        s.instances == n && s.granted >= full(want, n, 0)
    })
    .await;
    phase!("start", n);
    tokio::time::sleep(ttl).await;
    phase!("steady", n);

    // 2. A rolling update: n new instances, the old ones leaving over `rolling`.
    say(&format!(
        "rolling update: {n} new instances, the old ones leave over {:?}",
        args.rolling
    ));
    let part = args.partition.min(n);
    let mut partitioned = 0u32;
    let ramp = args.rolling / 10;
    for idx in n..2 * n {
        let p = sim.process_of(idx) == 0 && partitioned < part;
        partitioned += u32::from(p);
        sim.start(idx, p).await;
        tokio::time::sleep(ramp / n).await;
    }
    let rolling_started = Instant::now();
    for idx in 0..n {
        sim.stop(idx, "leave").await;
        tokio::time::sleep(args.rolling / n).await;
    }
    let _ = rolling_started;
    sim.until(ttl * 3, |s| {
        s.instances == n && s.granted >= full(want, n, 0)
    })
    .await;
    phase!("rolling update", 2 * n);

    // 3. Killed at once.
    let kill = args.kill.min(n.saturating_sub(part + 1));
    say(&format!("{kill} instances killed at once"));
    let victims: Vec<u32> = (0..n)
        .rev()
        .map(|i| n + i)
        .filter(|idx| !(sim.process_of(*idx) == 0 && *idx < n + part * args.processes))
        .take(kill as usize)
        .collect();
    for idx in &victims {
        sim.stop(*idx, "kill").await;
    }
    let live = n - kill;
    let dead_share_ms = sim
        .until(ttl * 3, |s| {
            s.instances == live && s.granted >= full(want, live, kill * args.floor)
        })
        .await;
    tokio::time::sleep(ttl / 2).await;
    phase!("kill", n);

    // 4. Cut off from Redis.
    say(&format!("{partitioned} instances cut off from Redis"));
    let before = sim.last();
    sim.send(0, "partition").await;
    let partition_share_ms = sim
        .until(ttl * 3, |s| {
            s.granted >= full(want, live, kill * args.floor) && s.granted >= before.granted && {
                let r = reports.lock().unwrap_or_else(|p| p.into_inner());
                r.shed.is_some()
            }
        })
        .await;
    tokio::time::sleep(ttl).await;
    phase!("partition", live);
    sim.send(0, "heal").await;
    tokio::time::sleep(ttl).await;
    phase!("healed", live);

    for p in 0..args.processes {
        sim.send(p, "quit").await;
    }
    for c in &mut sim.children {
        let _ = tokio::time::timeout(Duration::from_secs(5), c.proc.wait()).await;
        let _ = c.proc.start_kill();
    }
    let _: Result<(), _> = redis::cmd("DEL")
        .arg(poolkit_postgres_keys(&key))
        .query_async(&mut conn)
        .await;
    let series = sim.samples();
    let r = reports.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = r.errors.first() {
        return Err(Error::Failed(format!(
            "a member process reported: {e} ({} such lines)",
            r.errors.len()
        )));
    }
    let mut fair: Vec<u64> = r
        .fair
        .iter()
        .filter(|(idx, _)| *idx >= n)
        .map(|(_, ms)| *ms)
        .collect();
    fair.sort_unstable();
    let q = |p: f64| -> u64 {
        if fair.is_empty() {
            return 0;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((fair.len() - 1) as f64 * p).round() as usize;
        fair[i]
    };
    let lease = ttl - ttl / 4;
    Ok(Outcome {
        instances: n,
        budget,
        peak: series.iter().map(|s| s.open).max().unwrap_or(0),
        samples: series.len(),
        above_budget: series.iter().filter(|s| s.open > i64::from(budget)).count(),
        new_share_ms: [q(0.5), q(0.95), q(1.0)],
        dead_share_ms,
        shed_ms: r.shed,
        shed_deadline_ms: u64::try_from((lease - lease / 10).as_millis()).unwrap_or(u64::MAX),
        partition_share_ms,
        phases,
        series,
    })
}

/// The fleet's keys in Redis (as poolkit-postgres names them).
fn poolkit_postgres_keys(key: &str) -> Vec<String> {
    [
        "alive", "held", "wants", "shares", "meta", "floors", "since",
    ]
    .iter()
    .map(|k| format!("{{{key}}}:{k}"))
    .collect()
}

/// Draws the total against the budget over time.
fn chart(path: &Path, o: &Outcome) -> Result<(), Error> {
    use plotters::prelude::*;
    let fail = |e: &dyn std::fmt::Display| {
        Error::Failed(format!("cannot write the chart {}: {e}", path.display()))
    };
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let t_max = o.series.last().map_or(1.0, |s| s.t).max(1.0);
    #[allow(clippy::cast_precision_loss)]
    let y_max = (o.peak.max(i64::from(o.budget)) as f64 * 1.15).max(1.0);
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} instances (×2 in the rolling update), budget {}: highest total {}",
                o.instances, o.budget, o.peak
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| fail(&e))?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("connections")
        .draw()
        .map_err(|e| fail(&e))?;
    #[allow(clippy::cast_precision_loss)]
    c.draw_series(LineSeries::new(
        o.series.iter().map(|s| (s.t, s.open as f64)),
        &BLUE,
    ))
    .map_err(|e| fail(&e))?
    .label("open connections, all instances")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(
        [(0.0, f64::from(o.budget)), (t_max, f64::from(o.budget))],
        &RED,
    ))
    .map_err(|e| fail(&e))?
    .label("budget")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// `poolctl fleet simulate`.
pub(crate) async fn command(args: &SimulateArgs) -> Result<(), Error> {
    let o = run(args, !args.json).await?;
    if let Some(path) = &args.chart {
        chart(path, &o)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&o).map_err(|e| Error::Failed(e.to_string()))?
        );
    } else {
        print!("{}", report(&o));
    }
    if o.above_budget > 0 {
        return Err(Error::Failed(format!(
            "the fleet held {} connections, above its budget of {}, in {} of {} samples",
            o.peak, o.budget, o.above_budget, o.samples
        )));
    }
    Ok(())
}

/// The text report.
pub(crate) fn report(o: &Outcome) -> String {
    let ms =
        |v: Option<u64>| v.map_or_else(|| "not within 3 TTLs".to_owned(), |v| format!("{v} ms"));
    let mut s = format!(
        "{} instances (then {} in the rolling update), budget {}\n\
         highest total of open connections: {} in {} samples every 100 ms ({} above the budget)\n\
         a new instance's fair share: median {} ms, p95 {} ms, max {} ms after it started\n\
         a dead instance's share back in use: {} after the kill\n\
         cut-off instances down to their floor: {} after the partition (their lease, less the drift margin: {} ms)\n\
         the others took the room: {} after the partition\n\n\
         | phase | instances | renewals | script µs / renewal | Redis CPU µs / renewal | highest total |\n\
         |---|---:|---:|---:|---:|---:|\n",
        o.instances,
        2 * o.instances,
        o.budget,
        o.peak,
        o.samples,
        o.above_budget,
        o.new_share_ms[0],
        o.new_share_ms[1],
        o.new_share_ms[2],
        ms(o.dead_share_ms),
        ms(o.shed_ms),
        o.shed_deadline_ms,
        ms(o.partition_share_ms),
    );
    for p in &o.phases {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {} |\n",
            p.phase, p.instances, p.renewals, p.script_us, p.cpu_us, p.peak
        ));
    }
    s
}
