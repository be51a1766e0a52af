//! The command line, declared with clap's derive API.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Check, size and load-test poolkit pools from the command line.
///
/// Reads the same environment as the application (`DATABASE_URL`, `DATABASE_POOL_SIZE`,
/// `REDIS_URL`, …). Exit codes: 0 ok, 1 a check failed, 2 bad flags, 3 bad environment
/// variable, 4 a server could not be reached.
#[derive(Debug, Parser)]
#[command(name = "poolctl", version, about, long_about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
    /// More log output on stderr (none: errors only; -v: info; -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Connect to every configured pool's server and check config, facts and budget.
    Check(CheckArgs),
    /// Recommend pool sizes from expected load (Little's law) and the server's limits.
    Size(SizeArgs),
    /// Load-test a backend with N concurrent users and print throughput and latency.
    Bench(BenchArgs),
    /// A fleet sharing one connection budget (`P_FLEET_BUDGET`).
    #[command(subcommand)]
    Fleet(FleetCommand),
}

/// `poolctl fleet …`.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetCommand {
    /// Simulate a fleet of N instances sharing one budget: real pool engines on in-memory
    /// connections, the real lease script in Redis, through a start, a rolling update,
    /// instances killed and instances cut off from Redis; print the highest total against
    /// the budget.
    Simulate(SimulateArgs),
}

/// `poolctl fleet simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Instances in the fleet (a rolling update doubles them for a while).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub(crate) instances: u32,
    /// The fleet's budget (default: 3 × instances).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) budget: Option<u32>,
    /// Each instance's pool size (what it asks for).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) want: u32,
    /// P_FLEET_TTL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub(crate) ttl: Duration,
    /// P_FLEET_FLOOR.
    #[arg(long, default_value_t = 1)]
    pub(crate) floor: u32,
    /// Processes the instances are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) processes: u32,
    /// How long the old instances take to leave in the rolling update.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub(crate) rolling: Duration,
    /// Instances killed at once (no goodbye).
    #[arg(long, default_value_t = 50)]
    pub(crate) kill: u32,
    /// Instances cut off from Redis while the others still reach it.
    #[arg(long, default_value_t = 10)]
    pub(crate) partition: u32,
    /// The Redis holding the leases (default: REDIS_URL, else redis://127.0.0.1:6379).
    /// Use a Redis of its own to read its CPU per renewal.
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Draw the total against the budget over time into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) chart: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A backend poolctl can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackendArg {
    /// PostgreSQL (`P_URL`, default prefix `DATABASE`).
    Postgres,
    /// Redis (`P_URL` or `P_HOST`/`P_PORT`, default prefix `REDIS`).
    Redis,
    /// HTTP/1.1 and HTTP/2 APIs (`P_URL`, default prefix `HTTP`; `SUPABASE`, `PINECONE`).
    Http,
}

impl BackendArg {
    /// The env prefix used when none is given.
    pub(crate) fn default_prefix(self) -> &'static str {
        match self {
            Self::Postgres => poolkit_postgres::DEFAULT_PREFIX,
            Self::Redis => poolkit_redis::DEFAULT_PREFIX,
            Self::Http => "HTTP",
        }
    }
}

/// One pool to check: `PREFIX=BACKEND` such as `DATABASE=postgres` or `CACHE=redis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolSpec {
    /// The env prefix, upper-case.
    pub(crate) prefix: String,
    /// Its backend.
    pub(crate) backend: BackendArg,
}

fn parse_pool_spec(s: &str) -> Result<PoolSpec, String> {
    let (prefix, backend) = s
        .split_once('=')
        .ok_or_else(|| "expected PREFIX=BACKEND, such as DATABASE=postgres".to_owned())?;
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "the prefix `{prefix}` must be letters, digits and '_' (such as DATABASE)"
        ));
    }
    let backend = BackendArg::from_str(backend, true)
        .map_err(|_| format!("unknown backend `{backend}`: expected postgres, redis or http"))?;
    Ok(PoolSpec {
        prefix: prefix.to_ascii_uppercase(),
        backend,
    })
}

/// Parses a duration flag the way env vars are parsed (`30`, `500ms`, `10s`, `2m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = poolkit_core::env::parse_duration("duration", s)
        .map_err(|_| "expected a duration such as 30 (seconds), 500ms, 10s or 2m".to_owned())?;
    if d.is_zero() {
        return Err("expected a duration above zero".to_owned());
    }
    Ok(d)
}

/// One entry of `--pool-sizes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeArg {
    /// A fixed pool of this many connections.
    Fixed(u32),
    /// A self-sizing pool.
    Auto,
}

fn parse_size(s: &str) -> Result<SizeArg, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(SizeArg::Auto);
    }
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(SizeArg::Fixed(n)),
        _ => Err("expected a pool size from 1 to 10000, or auto".to_owned()),
    }
}

/// `poolctl check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Pools to check, as PREFIX=BACKEND (repeatable). Default: DATABASE=postgres when
    /// DATABASE_URL is set, REDIS=redis when REDIS_URL or REDIS_HOST is set.
    #[arg(long = "pool", value_name = "PREFIX=BACKEND", value_parser = parse_pool_spec)]
    pub(crate) pools: Vec<PoolSpec>,
    /// App instances that each open these pools (for the connection budget).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) instances: u32,
    /// PgBouncer's `default_pool_size` (the server connections it holds per database and
    /// user), when the app connects through PgBouncer: the budget then checks that pool
    /// against max_connections (`SUPAVISOR_POOL_SIZE` does the same for Supavisor).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) pgbouncer_pool_size: Option<u32>,
    /// HTTP: how long to hold an idle connection to find the server's keep-alive timeout
    /// (it closes the connection first; most servers do within 5–75 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "80s")]
    pub(crate) keepalive_wait: Duration,
    /// HTTP: also trust the CA certificates in this PEM file (a private CA, a self-signed
    /// test server); the public web roots are always trusted.
    #[arg(long, value_name = "FILE.pem")]
    pub(crate) cacert: Option<PathBuf>,
    /// Connects timed per pool for the connect-time quantiles.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) connects: u32,
    /// The pooler's `server_lifetime` (PgBouncer's default is 3600 s), compared with P_MAX_LIFETIME.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "3600s")]
    pub(crate) server_lifetime: Duration,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `poolctl size`.
#[derive(Debug, Args)]
pub(crate) struct SizeArgs {
    /// The kind of pool to size: postgres (with the server's budget), redis or http (no
    /// server budget; the keep-alive count follows the size).
    #[arg(long, value_enum, default_value_t = BackendArg::Postgres)]
    pub(crate) backend: BackendArg,
    /// Requests in flight at once across all instances (at peak).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) concurrency: Option<u64>,
    /// Requests per second across all instances (instead of --concurrency).
    #[arg(long, conflicts_with = "concurrency")]
    pub(crate) rps: Option<f64>,
    /// How long one request holds a connection.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "20ms")]
    pub(crate) hold: Duration,
    /// How long a whole request takes (default: 5 × --hold, so pool ≈ concurrency / 5).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) request_time: Option<Duration>,
    /// App instances sharing the server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) instances: u32,
    /// The server's max_connections (default: read from P_URL when set, else 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) max_connections: Option<u32>,
    /// Connections reserved for superusers (default: read with max_connections, else 3).
    #[arg(long)]
    pub(crate) reserved: Option<u32>,
    /// Env prefix of the pool the lines are printed for.
    #[arg(long, default_value = "DATABASE")]
    pub(crate) prefix: String,
    /// A running poolkit monitor (http://host:port); its live /pools stats give the demand.
    #[arg(long, value_name = "URL")]
    pub(crate) monitor: Option<String>,
    /// The database server's CPU cores, for the cores × 2 + spindles sanity line.
    #[arg(long)]
    pub(crate) cores: Option<u32>,
    /// Disks of the database server (HikariCP's "effective spindle count").
    #[arg(long, default_value_t = 1)]
    pub(crate) spindles: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `poolctl bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The backend to drive.
    #[arg(value_enum)]
    pub(crate) backend: BackendArg,
    /// Env prefix of the pool (default: DATABASE for postgres, REDIS for redis).
    #[arg(long)]
    pub(crate) prefix: Option<String>,
    /// Concurrent users.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) concurrency: u32,
    /// A step plan of concurrencies run one after another, such as 100,1000,5000,10000.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) steps: Vec<u32>,
    /// How long each run lasts.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Run the whole plan (every step, every size) this many times, interleaved, and report
    /// each size and step's median: a shared machine's speed drifts by ±10 % between runs
    /// of a few seconds, which one round cannot tell from a difference between sizes. The
    /// table then gives each row's slowest and fastest round, and each auto line whether
    /// auto's rounds and the best fixed size's overlap.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub(crate) rounds: u32,
    /// Run the sizes of each step in rotation, this long at a time, until each has run
    /// --duration (such as `-d 6s --slice 1s`: six turns of a second each). Sizes compared
    /// at one step then meet the same moments of a noisy machine instead of its
    /// neighbouring seconds. Every fixed pool of the step stays open through its turns, so
    /// the server must allow the sizes' sum at once. Without it, each size runs its whole
    /// duration at once on a fresh pool.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) slice: Option<Duration>,
    /// Pool size for the run (default: the env's P_POOL_SIZE).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) pool_size: Option<u32>,
    /// Run each of these pool sizes and print a table, such as 10,20,35,50,auto. `auto` is
    /// one self-sizing pool (P_POOL_SIZE=auto) that runs every step in turn, with the
    /// largest fixed size (or --auto-ceiling) as its ceiling.
    #[arg(long, value_delimiter = ',', conflicts_with = "pool_size", value_parser = parse_size)]
    pub(crate) pool_sizes: Vec<SizeArg>,
    /// The ceiling of the `auto` pool (default: the largest fixed size, else P_POOL_MAXSIZE).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) auto_ceiling: Option<u32>,
    /// The `auto` pool's least time between two size changes (P_POOL_AUTO_INTERVAL).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) auto_interval: Option<Duration>,
    /// Acquire timeout (default: the env's P_POOL_TIMEOUT).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) acquire_timeout: Option<Duration>,
    /// PostgreSQL: the statement each user runs. `:aid` is replaced by a row number from
    /// 1 to 100,000 spread over the operations: pgbench's select-only statement is
    /// `SELECT abalance FROM pgbench_accounts WHERE aid = :aid` (after `pgbench -i`).
    #[arg(long, default_value = "SELECT 1")]
    pub(crate) query: String,
    /// PostgreSQL: run the statement on a checked-out connection (`exclusive`: `get()`
    /// then the statement), on the pool's shared pipelined connections (`shared`:
    /// `pool.simple_query`, with P_SHARED_CONNECTIONS from the env, `auto` by default),
    /// or both side by side.
    #[arg(long, value_enum, default_value_t = PgMode::Exclusive)]
    pub(crate) mode: PgMode,
    /// HTTP: the URL each user GETs (the same run is then repeated with a plain reqwest
    /// client, side by side).
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Redis: the command mix.
    #[arg(long, value_enum, default_value_t = RedisOp::Mixed)]
    pub(crate) op: RedisOp,
    /// Draw throughput and p95 against concurrency into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) chart: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// How a PostgreSQL bench runs its statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PgMode {
    /// `get()` then the statement on that connection.
    Exclusive,
    /// The statement on the pool itself, pipelined on shared connections.
    Shared,
    /// Both, side by side at each size and step.
    Both,
}

/// What each Redis user sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RedisOp {
    /// GET of a key set before the run.
    Get,
    /// SET of a 64-byte value.
    Set,
    /// One SET then one GET, alternating.
    Mixed,
    /// GET on an exclusive connection (`Pool::exclusive`, the checkout engine: BLPOP,
    /// MULTI, pub/sub use it); the pool sizes are the exclusive pool's.
    ExclusiveGet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_specs() {
        assert_eq!(
            parse_pool_spec("cache=Redis").unwrap(),
            PoolSpec {
                prefix: "CACHE".into(),
                backend: BackendArg::Redis
            }
        );
        assert!(
            parse_pool_spec("DATABASE")
                .unwrap_err()
                .contains("PREFIX=BACKEND")
        );
        assert!(parse_pool_spec("DB=mysql").unwrap_err().contains("mysql"));
        assert!(parse_pool_spec("a-b=redis").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("500ms"));
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
