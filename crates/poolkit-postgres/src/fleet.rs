//! The fleet budget (`P_FLEET_BUDGET`): every instance of a pool holds a lease in Redis for
//! its connections, and the sum of the leases never exceeds the budget.
//!
//! Each instance renews every quarter of the TTL with one Lua script (atomic in Redis): it
//! drops instances whose lease expired, records its own `want` (its ceiling), computes
//! everyone's fair share (water-filling the budget over the wants), and grants itself at
//! most its share and at most what the others' recorded leases leave. It records
//! `max(grant, open)`, so a lease never claims less than the connections still open while
//! a cut takes effect. The engine is capped to the grant ([`Engine::cap`]): a fixed size
//! above its share waits for leases instead of exceeding the budget.
//!
//! Redis unreachable: the instance keeps its cap (it never raises it), so it opens nothing
//! beyond its last share, and health says so. After an outage (Redis may have lost the
//! leases) raises are refused for one TTL, until every live instance has recorded what it
//! holds again.
//!
//! The TTL is the promise "a dead instance's share is taken over within it": a lease is
//! recorded as living three quarters of the TTL (three renewals' worth), so it lapses at
//! most 3/4 TTL after the instance's last renewal, and the survivors, renewing every
//! quarter, see it gone within the last quarter.
//!
//! [`Engine::cap`]: poolkit_core::engine::Engine::cap

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use poolkit_core::engine::Engine;
use poolkit_core::redact_url;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use bb8::ManageConnection as _;
use poolkit_core::{Alert, Health, Severity};

use crate::config::Config;
use crate::error::Error;
use crate::fleet_config::{FleetBudget, FleetConfig};
use crate::manager::Manager;
use crate::pool::Inner;

/// The lease script. KEYS: grants (hash), alive (zset of expiry ms), wants (hash).
/// ARGV: id, want (-1: leave), open, lease lifetime ms, budget. Returns {grant, instances, total}.
const LEASE: &str = r"
local grants, alive, wants = KEYS[1], KEYS[2], KEYS[3]
local id, want, open = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, d in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now)) do
  redis.call('HDEL', grants, d); redis.call('HDEL', wants, d); redis.call('ZREM', alive, d)
end
if want < 0 then
  redis.call('HDEL', grants, id); redis.call('HDEL', wants, id); redis.call('ZREM', alive, id)
  return {0, redis.call('ZCARD', alive), 0}
end
redis.call('ZADD', alive, now + ttl, id)
redis.call('HSET', wants, id, want)
local ids = redis.call('ZRANGE', alive, 0, -1)
table.sort(ids)
local share, hungry, left = {}, {}, budget
for _, x in ipairs(ids) do share[x] = 0; table.insert(hungry, x) end
while left > 0 and #hungry > 0 do
  local each = math.floor(left / #hungry)
  local extra = left - each * #hungry
  local still, given = {}, 0
  for i, x in ipairs(hungry) do
    local give = each
    if i <= extra then give = give + 1 end
    local need = tonumber(redis.call('HGET', wants, x) or '0') - share[x]
    if give >= need then give = need else table.insert(still, x) end
    share[x] = share[x] + give
    given = given + give
  end
  left = left - given
  hungry = still
  if given == 0 then break end
end
local others = 0
for _, x in ipairs(ids) do
  if x ~= id then others = others + tonumber(redis.call('HGET', grants, x) or '0') end
end
local grant = math.max(0, math.min(share[id], budget - others))
redis.call('HSET', grants, id, math.max(grant, open))
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl * 10) end
return {grant, #ids, others + math.max(grant, open)}
";

/// How often an instance renews its lease: a quarter of the TTL. A lease is recorded for
/// the TTL less one renewal period, so a dead instance's share is seen free by the others
/// within the TTL.
fn renew_every(config: &FleetConfig) -> std::time::Duration {
    config.ttl / 4
}

/// What an instance knows about its fleet.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FleetStatus {
    /// The fleet's budget.
    pub budget: u32,
    /// This instance's share now (its engine's cap).
    pub share: u32,
    /// Live instances seen at the last renewal.
    pub instances: u32,
    /// Connections the fleet's leases cover, this instance included.
    pub leased: u32,
    /// Whether the last renewal reached Redis.
    pub redis_ok: bool,
    /// Why not, and for how long (seconds), when it did not.
    pub redis_error: Option<(String, f64)>,
}

/// One instance's membership.
pub(crate) struct Fleet {
    config: FleetConfig,
    id: String,
    budget: u32,
    want: u32,
    client: Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    status: Mutex<(FleetStatus, Option<Instant>)>,
    rejoin_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A member with a fresh id (pool name, host, pid and a random part).
    pub(crate) fn new(
        config: FleetConfig,
        pool: &str,
        budget: u32,
        want: u32,
    ) -> Result<Self, String> {
        let client = Client::open(config.redis_url.expose()).map_err(|e| {
            format!(
                "fleet Redis URL {} is invalid: {e}",
                redact_url(config.redis_url.expose())
            )
        })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(Self {
            id: format!("{pool}:{}:{nanos:08x}", std::process::id()),
            budget,
            want,
            client,
            conn: tokio::sync::Mutex::new(None),
            status: Mutex::new((
                FleetStatus {
                    budget,
                    ..FleetStatus::default()
                },
                None,
            )),
            rejoin_until: Mutex::new(None),
            config,
        })
    }

    /// The status as of the last renewal.
    pub(crate) fn status(&self) -> FleetStatus {
        let (mut s, since) = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let (Some(e), Some(since)) = (s.redis_error.as_mut(), since) {
            e.1 = since.elapsed().as_secs_f64();
        }
        s
    }

    async fn eval(&self, want: i64, open: u32) -> Result<(u32, u32, u32), redis::RedisError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(renew_every(&self.config)))
                .set_response_timeout(Some(renew_every(&self.config)));
            *guard = Some(
                self.client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?,
            );
        }
        let Some(conn) = guard.as_mut() else {
            unreachable_conn()
        };
        let k = &self.config.key;
        let lease = self.config.ttl - renew_every(&self.config);
        let ttl_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let r: Result<(u32, u32, u32), _> = redis::cmd("EVAL")
            .arg(LEASE)
            .arg(3)
            .arg(format!("{k}:grants"))
            .arg(format!("{k}:alive"))
            .arg(format!("{k}:wants"))
            .arg(&self.id)
            .arg(want)
            .arg(open)
            .arg(ttl_ms)
            .arg(self.budget)
            .query_async(conn)
            .await;
        if r.is_err() {
            *guard = None;
        }
        r
    }

    /// One renewal: ask for a share and cap the engine to it.
    /// `shared`: the pool's shared connections, which the share covers too (the
    /// engine is capped to the share less them).
    pub(crate) async fn renew(&self, engine: &Engine<Manager>, shared: u32) {
        let open = engine.open_or_connecting() + shared;
        let now = Instant::now();
        let current = engine.cap_value().map_or(0, |c| c + shared);
        match self.eval(i64::from(self.want), open).await {
            Ok((grant, instances, leased)) => {
                let rejoining = {
                    let mut r = self
                        .rejoin_until
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if r.is_some_and(|until| now >= until) {
                        *r = None;
                    }
                    r.is_some()
                };
                // After an outage raises wait one TTL, until every live instance has
                // recorded what it holds again.
                let share = if rejoining { grant.min(current) } else { grant };
                if share != current {
                    tracing::info!(pool = %engine.telemetry().config().name, from = current, to = share, instances, budget = self.budget, "fleet share changed");
                }
                engine.cap(Some(share.saturating_sub(shared)));
                let mut st = self.status.lock().unwrap_or_else(PoisonError::into_inner);
                if !st.0.redis_ok && st.1.is_some() {
                    tracing::info!(pool = %engine.telemetry().config().name, "fleet Redis reachable again");
                }
                *st = (
                    FleetStatus {
                        budget: self.budget,
                        share,
                        instances,
                        leased,
                        redis_ok: true,
                        redis_error: None,
                    },
                    None,
                );
            }
            Err(e) => {
                *self
                    .rejoin_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(now + self.config.ttl);
                let mut st = self.status.lock().unwrap_or_else(PoisonError::into_inner);
                if st.1.is_none() {
                    tracing::warn!(pool = %engine.telemetry().config().name, error = %e, share = current, "fleet Redis unreachable: keeping the connections held, opening none beyond the last share");
                    st.1 = Some(now);
                }
                st.0.redis_ok = false;
                st.0.share = current;
                st.0.redis_error = Some((e.to_string(), 0.0));
            }
        }
    }

    /// Leaves the fleet (the share returns to the others at once).
    pub(crate) async fn leave(&self) {
        if let Err(e) = self.eval(-1, 0).await {
            tracing::warn!(error = %e, "could not leave the fleet; the lease expires by itself");
        }
    }

    /// Renews every quarter of the TTL until the pool goes (leaving when it is closed).
    pub(crate) fn start(self: &Arc<Self>, pool: Weak<Inner>) {
        let fleet = Arc::downgrade(self);
        let every = renew_every(&self.config);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let (Some(fleet), Some(pool)) = (fleet.upgrade(), pool.upgrade()) else {
                    return;
                };
                if pool.engine.is_closed() {
                    fleet.leave().await;
                    return;
                }
                fleet.renew(&pool.engine, pool.shared_reserved()).await;
            }
        });
    }
}

/// Joins the fleet before the pool opens anything: reads the budget (from the server
/// for `P_FLEET_BUDGET=server`, over one connection of its own) and takes a first share.
///
/// # Errors
/// [`Error::Connect`] when the server cannot be asked; [`Error::Config`] naming
/// `P_FLEET_REDIS_URL` when Redis cannot be reached (a pool does not start without knowing
/// its share).
pub(crate) async fn join(
    config: &Config,
    fc: &FleetConfig,
    manager: &Manager,
) -> Result<(Arc<Fleet>, u32), Error> {
    let budget = match fc.budget {
        FleetBudget::Fixed(n) => n,
        FleetBudget::Server => server_budget(config, fc, manager).await?,
    };
    let want = config.pool.ceiling();
    let redis_var = format!("{}_FLEET_REDIS_URL", config.pool.prefix);
    let fleet = Fleet::new(fc.clone(), &config.pool.name, budget, want).map_err(|why| {
        Error::Config(poolkit_core::ConfigError::Invalid {
            var: redis_var.clone(),
            value: redact_url(fc.redis_url.expose()),
            expected: why,
        })
    })?;
    let (grant, instances, leased) = fleet.eval(i64::from(want), 0).await.map_err(|e| {
        Error::Config(poolkit_core::ConfigError::Invalid {
            var: redis_var.clone(),
            value: redact_url(fc.redis_url.expose()),
            expected: format!("a reachable Redis for the fleet's leases ({e})"),
        })
    })?;
    tracing::info!(pool = %config.pool.name, budget, share = grant, instances, leased, "joined the fleet");
    *fleet.status.lock().unwrap_or_else(PoisonError::into_inner) = (
        FleetStatus {
            budget,
            share: grant,
            instances,
            leased,
            redis_ok: true,
            redis_error: None,
        },
        None,
    );
    Ok((Arc::new(fleet), grant))
}

async fn server_budget(config: &Config, fc: &FleetConfig, manager: &Manager) -> Result<u32, Error> {
    let client = manager
        .connect()
        .await
        .map_err(|e| crate::pool::connect_error(config, Arc::new(e)))?;
    let mut total = 0i64;
    for (name, sign) in [
        ("max_connections", 1),
        ("superuser_reserved_connections", -1),
        ("reserved_connections", -1),
    ] {
        let row = client
            .query_one("SELECT coalesce(current_setting($1, true), '0')", &[&name])
            .await?;
        total += sign * row.get::<_, String>(0).parse::<i64>().unwrap_or(0);
    }
    let budget = total - i64::from(fc.reserve);
    u32::try_from(budget)
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| {
            Error::Config(poolkit_core::ConfigError::Invalid {
                var: format!("{}_FLEET_RESERVE", config.pool.prefix),
                value: fc.reserve.to_string(),
                expected: format!("fewer than the server's {total} usable connections"),
            })
        })
}

/// Adds the fleet to a pool's health: a warning while Redis is unreachable.
pub(crate) fn add_health(h: &mut Health, s: &FleetStatus, config: &Config) {
    h.message.push_str(&format!(
        "; fleet: share {} of {} over {} instances",
        s.share, s.budget, s.instances
    ));
    if let Some((why, secs)) = &s.redis_error {
        h.alerts.push(Alert::new(
            Severity::Warning,
            &config.pool.name,
            format!(
                "fleet Redis unreachable for {secs:.0}s ({why}): keeping the {} connections of the last share, opening none beyond it",
                s.share
            ),
            format!(
                "check the Redis at {}_FLEET_REDIS_URL; the share is renewed as soon as it answers",
                config.pool.prefix
            ),
        ));
        h.recommendations
            .push(h.alerts[h.alerts.len() - 1].recommendation.clone());
    }
}

#[allow(clippy::panic)]
fn unreachable_conn() -> ! {
    panic!("poolkit: fleet connection set above")
}
