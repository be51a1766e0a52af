//! `poolctl size`: pool sizes from expected load (Little's law), checked against the
//! server's `max_connections`, with the env lines to paste.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cli::SizeArgs;
use crate::error::Error;
use crate::monitor;

// Headroom over the average busy connections (pool ≈ 80 % used on average): the one
// rule health and alerts use too.
use poolkit_core::advice::HEADROOM;
/// Burst ceiling over the steady size.
const BURST: f64 = 1.5;
/// Overhead kept free on the server (admin, migrations, monitoring): 20 %.
const OVERHEAD: f64 = 1.2;

/// The demand and the limits a plan is made from.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SizeInput {
    /// Connections busy on average, all instances together.
    pub(crate) busy_total: f64,
    /// How `busy_total` was found, for the reasoning.
    pub(crate) basis: String,
    /// App instances.
    pub(crate) instances: u32,
    /// The server's `max_connections`.
    pub(crate) max_connections: u32,
    /// Reserved connections.
    pub(crate) reserved: u32,
    /// Server cores, and whether they were given (else this machine's).
    pub(crate) cores: u32,
    /// Disks.
    pub(crate) spindles: u32,
}

/// The recommendation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SizePlan {
    /// The inputs.
    pub(crate) input: SizeInput,
    /// Busy connections per instance.
    pub(crate) busy_per_instance: f64,
    /// `P_POOL_SIZE`.
    pub(crate) pool_size: u32,
    /// `P_POOL_MAXSIZE`.
    pub(crate) max_size: u32,
    /// Connections all instances may hold directly (max_connections − reserved, less 20 %).
    pub(crate) server_allowance: u32,
    /// Whether every instance at its ceiling fits the allowance.
    pub(crate) fits_direct: bool,
    /// PgBouncer `default_pool_size` for this database/user.
    pub(crate) pgbouncer_default_pool_size: u32,
    /// PgBouncer `max_client_conn` for all instances at their ceiling.
    pub(crate) pgbouncer_max_client_conn: u32,
    /// HikariCP's cores × 2 + spindles.
    pub(crate) hikari: u32,
    /// The reasoning, one step a line.
    pub(crate) reasoning: Vec<String>,
    /// Lines to paste into the env.
    pub(crate) env: Vec<String>,
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ceil_u32(x: f64) -> u32 {
    x.ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The plan for `input`, with env lines for `prefix`.
pub(crate) fn plan(input: SizeInput, prefix: &str) -> SizePlan {
    let instances = input.instances.max(1);
    let per = input.busy_total / f64::from(instances);
    let pool_size = poolkit_core::advice::wanted(per).max(2);
    let mut max_size = ceil_u32(f64::from(pool_size) * BURST).max(pool_size + 1);
    let usable = input.max_connections.saturating_sub(input.reserved);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let allowance = (f64::from(usable) / OVERHEAD).floor() as u32;
    let per_limit = allowance / instances;
    let total = |n: u32| u64::from(instances) * u64::from(n);
    let mut reasoning = vec![
        format!(
            "demand: {} → {:.1} connections busy on average across all instances",
            input.basis, input.busy_total
        ),
        format!(
            "per instance: {:.1} / {instances} instances = {per:.1} busy; × {HEADROOM} headroom → pool size {pool_size}; × {BURST} for bursts → ceiling {max_size}",
            input.busy_total
        ),
        format!(
            "server: max_connections {} − {} reserved = {usable}, less 20 % overhead = {allowance} for all instances ({per_limit} each)",
            input.max_connections, input.reserved
        ),
    ];
    let mut fits_direct = total(max_size) <= u64::from(allowance);
    if !fits_direct && total(pool_size) <= u64::from(allowance) && per_limit > pool_size {
        max_size = per_limit;
        fits_direct = true;
        reasoning.push(format!(
            "the burst ceiling is capped at {per_limit} so {instances} × {per_limit} stays within {allowance}"
        ));
    }
    let pgbouncer = ceil_u32(input.busy_total * HEADROOM).clamp(1, allowance.max(1));
    let max_client = u32::try_from(total(max_size)).unwrap_or(u32::MAX);
    if fits_direct {
        reasoning.push(format!(
            "fits: {instances} × {max_size} = {} ≤ {allowance}",
            total(max_size)
        ));
    } else {
        reasoning.push(format!(
            "does NOT fit directly: {instances} × {max_size} = {} > {allowance}; put PgBouncer (transaction mode) in front: \
             default_pool_size {pgbouncer} server connections serve max_client_conn {max_client} app connections",
            total(max_size)
        ));
    }
    let hikari = input.cores.saturating_mul(2).saturating_add(input.spindles);
    reasoning.push(format!(
        "sanity (HikariCP): cores × 2 + spindles = {} × 2 + {} = {hikari} connections keep the server busy; {:.1} busy in total is {}",
        input.cores,
        input.spindles,
        input.busy_total,
        if input.busy_total > f64::from(hikari) * 2.0 {
            "well above it: more server connections add queueing, not throughput; shorten hold times or scale the server"
        } else {
            "in line with it"
        }
    ));
    let mut env = vec![
        format!("{prefix}_POOL_SIZE={pool_size}"),
        format!("{prefix}_POOL_MAXSIZE={max_size}"),
    ];
    env.push(format!(
        "# pgbouncer.ini: default_pool_size = {pgbouncer}, max_client_conn = {max_client}"
    ));
    SizePlan {
        busy_per_instance: per,
        pool_size,
        max_size,
        server_allowance: allowance,
        fits_direct,
        pgbouncer_default_pool_size: pgbouncer,
        pgbouncer_max_client_conn: max_client,
        hikari,
        reasoning,
        env,
        input,
    }
}

/// The recommendation for an HTTP pool: no server budget, the keep-alive count follows the
/// steady size.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HttpSizePlan {
    /// Requests in flight on average, all instances together.
    pub(crate) busy_total: f64,
    /// App instances.
    pub(crate) instances: u32,
    /// In flight per instance.
    pub(crate) busy_per_instance: f64,
    /// `P_POOL_SIZE`.
    pub(crate) pool_size: u32,
    /// `P_POOL_MAXSIZE`.
    pub(crate) max_size: u32,
    /// `P_MAX_KEEPALIVE`.
    pub(crate) max_keepalive: u32,
    /// The reasoning, one step a line.
    pub(crate) reasoning: Vec<String>,
    /// Lines to paste into the env.
    pub(crate) env: Vec<String>,
}

/// The HTTP plan: Little's law per instance with the same headroom and burst factors, and
/// `P_MAX_KEEPALIVE` equal to the steady size (more idle sockets than the steady load uses
/// only wait to be closed by the server's keep-alive timeout).
pub(crate) fn http_plan(
    busy_total: f64,
    basis: &str,
    instances: u32,
    prefix: &str,
) -> HttpSizePlan {
    let instances = instances.max(1);
    let per = busy_total / f64::from(instances);
    let pool_size = poolkit_core::advice::wanted(per).max(2);
    let max_size = ceil_u32(f64::from(pool_size) * BURST).max(pool_size + 1);
    let reasoning = vec![
        format!(
            "demand: {basis} → {busy_total:.1} requests in flight on average across all instances"
        ),
        format!(
            "per instance: {busy_total:.1} / {instances} instances = {per:.1} in flight; × {HEADROOM} headroom → pool size {pool_size}; × {BURST} for bursts → ceiling {max_size}"
        ),
        format!(
            "keep-alive: keep {pool_size} idle connections (the steady size); connections above it close when idle, and {prefix}_IDLE_TIMEOUT must stay below the server's keep-alive timeout (poolctl check measures it)"
        ),
    ];
    HttpSizePlan {
        busy_total,
        instances,
        busy_per_instance: per,
        pool_size,
        max_size,
        max_keepalive: pool_size,
        reasoning,
        env: vec![
            format!("{prefix}_POOL_SIZE={pool_size}"),
            format!("{prefix}_POOL_MAXSIZE={max_size}"),
            format!("{prefix}_MAX_KEEPALIVE={pool_size}"),
        ],
    }
}

/// Reads `max_connections` and the reserve from the server at `P_URL`.
async fn server_limits(prefix: &str) -> Result<(u32, u32), Error> {
    let mut config =
        poolkit_postgres::Config::from_lookup(prefix, &poolkit_core::env::process_lookup)?;
    config.pool.min_idle = 0;
    config.pool.pool_size = 1;
    config.pool.max_size = None;
    let pool = poolkit_postgres::Pool::new(config)
        .await
        .map_err(|e| Error::postgres(prefix, e))?;
    let budget = pool
        .budget(1)
        .await
        .map_err(|e| Error::postgres(prefix, e))?;
    pool.drain(Duration::from_secs(2)).await;
    Ok((
        u32::try_from(budget.max_connections).unwrap_or(0),
        u32::try_from(budget.reserved).unwrap_or(0),
    ))
}

/// The env lines with the variable names the environment uses: `MAX_POOL_SIZE=` where
/// that is what sets the `DATABASE` pool size, not `DATABASE_POOL_SIZE=`.
fn env_names(lines: Vec<String>, prefix: &str) -> Vec<String> {
    env_names_in(lines, prefix, &poolkit_core::env::process_lookup)
}

fn env_names_in(
    lines: Vec<String>,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    use poolkit_core::{Knob, PoolConfig};
    let Ok(config) = PoolConfig::from_lookup(
        prefix,
        PoolConfig::new("size", poolkit_core::Backend::Postgres),
        lookup,
    ) else {
        return lines;
    };
    lines
        .into_iter()
        .map(|line| {
            for knob in [Knob::PoolSize, Knob::MaxSize] {
                let plain = format!("{prefix}_{}=", knob.suffix());
                if let Some(value) = line.strip_prefix(&plain) {
                    return format!("{}={value}", config.var(knob));
                }
            }
            line
        })
        .collect()
}

/// The whole `size` subcommand.
pub(crate) async fn command(args: &SizeArgs) -> Result<(), Error> {
    let prefix = args.prefix.to_ascii_uppercase();
    let (busy_total, basis) = if let Some(url) = &args.monitor {
        let live = monitor::fetch(url).await?;
        let name = prefix.to_ascii_lowercase();
        let d = live.iter().find(|d| d.pool == name).ok_or_else(|| {
            let names: Vec<&str> = live.iter().map(|d| d.pool.as_str()).collect();
            Error::Usage(format!(
                "the monitor at {url} has no pool `{name}` (it has: {}); pick one with --prefix",
                names.join(", ")
            ))
        })?;
        // Little's law counts the connections in use; callers waiting count too only
        // when the queue did not keep up (timeouts), as in the monitor's own advice.
        let busy = if d.timeouts > 0 {
            d.used + d.pending
        } else {
            d.used
        };
        #[allow(clippy::cast_precision_loss)]
        let total = busy as f64 * f64::from(args.instances);
        (
            total,
            format!(
                "live from {url}: pool `{}` has {} in use + {} waiting of {} (p95 wait {}, {} timeouts so far), × {} instances",
                d.pool,
                d.used,
                d.pending,
                d.max_size,
                crate::format::ms(d.wait_p95),
                d.timeouts,
                args.instances
            ),
        )
    } else if let Some(rps) = args.rps {
        if !(rps.is_finite() && rps > 0.0) {
            return Err(Error::Usage(format!(
                "--rps {rps}: expected a number of requests per second above 0"
            )));
        }
        (
            rps * args.hold.as_secs_f64(),
            format!("Little's law: {rps} requests/s × {:?} held", args.hold),
        )
    } else if let Some(c) = args.concurrency {
        let request = args.request_time.unwrap_or(args.hold * 5);
        if request < args.hold {
            return Err(Error::Usage(format!(
                "--request-time {request:?} is shorter than --hold {:?}: a request cannot hold a connection longer than it lasts",
                args.hold
            )));
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = c as f64 / request.as_secs_f64();
        (
            rate * args.hold.as_secs_f64(),
            format!(
                "Little's law: {c} concurrent requests / {request:?} each = {rate:.0} requests/s × {:?} held",
                args.hold
            ),
        )
    } else {
        return Err(Error::Usage(
            "give the expected load: --concurrency N (with --hold), --rps N, or --monitor URL"
                .into(),
        ));
    };
    if args.backend == crate::cli::BackendArg::Http {
        let plan = http_plan(busy_total, &basis, args.instances, &prefix);
        if args.json {
            println!("{:#}", serde_json::json!(plan));
            return Ok(());
        }
        let mut out = String::new();
        for r in &plan.reasoning {
            let _ = writeln!(out, "- {r}");
        }
        out.push_str("\npaste:\n");
        for l in &plan.env {
            let _ = writeln!(out, "{l}");
        }
        print!("{out}");
        return Ok(());
    }
    let url_set =
        poolkit_core::env::process_lookup(&format!("{prefix}_URL")).is_some_and(|u| !u.is_empty());
    let (max_connections, reserved) = match (args.max_connections, args.reserved) {
        (Some(m), Some(r)) => (m, r),
        (m, r) if url_set => {
            let (sm, sr) = server_limits(&prefix).await?;
            (m.unwrap_or(sm), r.unwrap_or(sr))
        }
        (m, r) => (m.unwrap_or(100), r.unwrap_or(3)),
    };
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
    });
    let plan = plan(
        SizeInput {
            busy_total,
            basis,
            instances: args.instances,
            max_connections,
            reserved,
            cores,
            spindles: args.spindles,
        },
        &prefix,
    );
    let mut plan = plan;
    plan.env = env_names(plan.env, &prefix);
    if args.json {
        println!("{:#}", serde_json::json!(plan));
        return Ok(());
    }
    let mut out = String::new();
    for r in &plan.reasoning {
        let _ = writeln!(out, "- {r}");
    }
    if args.cores.is_none() {
        let _ = writeln!(
            out,
            "  (cores are this machine's; pass --cores for the database server's)"
        );
    }
    out.push_str("\npaste:\n");
    for l in &plan.env {
        let _ = writeln!(out, "{l}");
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(busy: f64, instances: u32, max: u32) -> SizeInput {
        SizeInput {
            busy_total: busy,
            basis: "test".into(),
            instances,
            max_connections: max,
            reserved: 3,
            cores: 4,
            spindles: 1,
        }
    }

    #[test]
    fn seed_rule_and_budget() {
        // 1000 concurrent requests, each holding a connection a fifth of its time: 200 busy.
        let p = plan(input(200.0, 10, 500), "DATABASE");
        assert_eq!((p.pool_size, p.max_size), (25, 38));
        assert_eq!(p.server_allowance, 414);
        assert!(p.fits_direct);
        assert_eq!(p.env[0], "DATABASE_POOL_SIZE=25");
        assert_eq!(p.env[1], "DATABASE_POOL_MAXSIZE=38");
        // 10 instances × 38 > 80 % of 100: cap the ceiling or go through PgBouncer.
        let p = plan(input(200.0, 10, 100), "DATABASE");
        assert!(!p.fits_direct, "{:?}", p.reasoning);
        assert_eq!(p.pgbouncer_default_pool_size, 80);
        assert!(p.reasoning.iter().any(|r| r.contains("PgBouncer")));
        let p = plan(input(60.0, 2, 100), "DATABASE");
        assert_eq!((p.pool_size, p.max_size), (38, 40));
        assert!(
            p.reasoning.iter().any(|r| r.contains("capped")),
            "{:?}",
            p.reasoning
        );
        assert_eq!(plan(input(0.1, 1, 100), "X").pool_size, 2);
    }

    #[test]
    fn http_sizes_follow_littles_law_without_a_server_budget() {
        let p = http_plan(200.0, "test", 10, "SUPABASE");
        assert_eq!((p.pool_size, p.max_size, p.max_keepalive), (25, 38, 25));
        assert_eq!(
            p.env,
            [
                "SUPABASE_POOL_SIZE=25",
                "SUPABASE_POOL_MAXSIZE=38",
                "SUPABASE_MAX_KEEPALIVE=25"
            ]
        );
    }

    #[test]
    fn env_lines_use_the_variable_the_env_uses() {
        let lines = vec![
            "DATABASE_POOL_SIZE=25".to_owned(),
            "DATABASE_POOL_MAXSIZE=38".to_owned(),
        ];
        let env = |k: &str| (k == "MAX_POOL_SIZE").then(|| "20".to_owned());
        assert_eq!(
            env_names_in(lines.clone(), "DATABASE", &env),
            ["MAX_POOL_SIZE=25", "DATABASE_POOL_MAXSIZE=38"]
        );
        assert_eq!(env_names_in(lines.clone(), "DATABASE", &|_| None), lines);
    }
}
