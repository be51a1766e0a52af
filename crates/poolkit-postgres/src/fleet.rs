//! The fleet budget (`P_FLEET_BUDGET`): every instance of a pool holds a lease in Redis for
//! its connections, and the sum of the leases never exceeds the budget.
//!
//! Each instance renews every quarter of the TTL with one Lua script (atomic in Redis,
//! [`crate::fleet_store`]): it moves instances whose lease expired to their floor, records
//! its own `want` (its ceiling), reads its fair share (water-filling the budget over the
//! wants, after the floors reserved for expired leases) and grants itself at most its
//! share and at most what the others' records leave. It records `max(grant, open)`, so a
//! lease never claims less than the connections still open while a cut takes effect. The
//! engine is capped to the grant ([`Engine::cap`]): a fixed size above its share waits for
//! leases instead of exceeding the budget.
//!
//! A lease is recorded for three quarters of the TTL (three renewals). An instance that
//! cannot renew sheds by its own clock: two renewal periods after the last renewal that
//! succeeded (counted from when it was sent) it caps itself to its floor (`P_FLEET_FLOOR`),
//! so it is down to the floor before its lease expires, less a margin of a tenth of the
//! lease for clock drift. The store keeps that floor reserved for it for
//! [`FleetConfig::floor_hold`] after the lease expired, and the instance closes its last
//! connections before then. The others never count on the floor.
//!
//! A store that lost leases (a promoted replica, a restart without data) is noticed by the
//! script (a new replication id, a member it does not know): for one lease nobody raises
//! and nobody joins, until every live member has recorded what it holds again.
//!
//! [`Engine::cap`]: poolkit_core::engine::Engine::cap

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use poolkit_core::engine::{Engine, Manager as EngineManager};
use poolkit_core::redact_url;

use bb8::ManageConnection as _;
use poolkit_core::{Alert, Health, Severity};

use crate::config::Config;
use crate::error::Error;
use crate::fleet_config::{FleetBudget, FleetConfig};
use crate::fleet_store::{Ask, Conn, Renewal, Target, Terms};
use crate::manager::Manager;
use crate::pool::Inner;

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
    /// Connections the fleet's records cover, this instance and the floors reserved for
    /// instances that stopped renewing included.
    pub leased: u32,
    /// Whether the last renewal reached Redis.
    pub redis_ok: bool,
    /// Why not, and for how long (seconds), when it did not.
    pub redis_error: Option<(String, f64)>,
    /// What this instance keeps when it cannot renew (`P_FLEET_FLOOR`).
    pub floor: u32,
    /// Its fair share of the budget; `share` reaches it once the others have cut.
    pub fair_share: u32,
    /// Whether the lease store is settling after it may have lost leases (a failover, a
    /// restart): nobody raises its share until every live member recorded again.
    pub settling: bool,
    /// Whether it shed to its floor (or, after the floor's hold, to nothing) because it
    /// could not renew its lease in time.
    pub shed: bool,
}

/// When a member that cannot renew sheds, counted from when its last successful renewal
/// was sent.
#[derive(Debug, Clone, Copy)]
struct Clock {
    every: Duration,
    /// Start shedding to the floor.
    floor_from: Duration,
    /// Start closing the floor too.
    zero_from: Duration,
}

impl Clock {
    fn new(c: &FleetConfig) -> Self {
        let every = renew_every(c);
        let lease = lease(c);
        Self {
            every,
            floor_from: lease.saturating_sub(every),
            zero_from: (lease + c.floor_hold()).saturating_sub(every),
        }
    }
}

/// How often an instance renews its lease: a quarter of the TTL.
fn renew_every(config: &FleetConfig) -> Duration {
    config.ttl / 4
}

/// How long a lease is recorded for: the TTL less one renewal period, so a dead
/// instance's share is seen free by the others within the TTL.
fn lease(config: &FleetConfig) -> Duration {
    config.ttl - renew_every(config)
}

/// The shared (pipelined) connections a pool holds beside its engine, which its share
/// covers too: `fit(None)` counts them, `fit(Some(limit))` first brings them down to at most
/// `limit` (closing the shared side when `limit` is 0: statements then check out).
pub(crate) type Fit = Box<dyn Fn(Option<u32>) -> u32 + Send + Sync>;

/// What the member keeps between renewals.
#[derive(Debug, Default)]
struct MemberState {
    status: FleetStatus,
    error_since: Option<Instant>,
    /// When the last renewal that succeeded was sent.
    last_ok: Option<Instant>,
    /// The store's sequence number then.
    seq: u64,
}

/// One instance's membership.
pub(crate) struct Fleet {
    config: FleetConfig,
    id: String,
    terms: Terms,
    want: u32,
    target: Target,
    clock: Clock,
    conn: tokio::sync::Mutex<Option<Conn>>,
    state: Mutex<MemberState>,
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
    /// A member with a fresh id (pool name, pid and a random part).
    pub(crate) fn new(
        config: FleetConfig,
        pool: &str,
        budget: u32,
        want: u32,
    ) -> Result<Self, String> {
        let target =
            Target::parse(config.redis_url.expose()).map_err(|e| format!("fleet Redis URL {e}"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let every = renew_every(&config);
        Ok(Self {
            id: format!("{pool}:{}:{nanos:08x}:{seq}", std::process::id()),
            terms: Terms {
                lease: lease(&config),
                hold: config.floor_hold(),
                budget,
                floor: config.floor,
                gap: (every / 8).min(Duration::from_millis(100)),
                wait: every,
            },
            want,
            target,
            clock: Clock::new(&config),
            conn: tokio::sync::Mutex::new(None),
            state: Mutex::new(MemberState {
                status: FleetStatus {
                    budget,
                    floor: config.floor,
                    ..FleetStatus::default()
                },
                ..MemberState::default()
            }),
            config,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status as of the last renewal.
    pub(crate) fn status(&self) -> FleetStatus {
        let st = self.state();
        let mut s = st.status.clone();
        if let (Some(e), Some(since)) = (s.redis_error.as_mut(), st.error_since) {
            e.1 = since.elapsed().as_secs_f64();
        }
        s
    }

    async fn eval(&self, ask: Ask) -> Result<Renewal, redis::RedisError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.target.connect(self.clock.every).await?);
        }
        let Some(conn) = guard.as_mut() else {
            unreachable_conn()
        };
        let r = crate::fleet_store::renew(conn, &self.config.key, &self.id, &self.terms, ask).await;
        if r.is_err() {
            *guard = None;
        }
        r
    }

    /// One renewal: ask for a share and cap the engine to it. Returns the renewal when
    /// the store answered. `fit`: the pool's shared (pipelined) connections, which the
    /// share covers too (see [`Fit`]): they are fitted under the grant first, and the
    /// engine is capped to the grant less them.
    pub(crate) async fn renew<M: EngineManager>(
        &self,
        engine: &Engine<M>,
        fit: &Fit,
    ) -> Option<Renewal> {
        let shared = fit(None);
        let (member, seen) = {
            let st = self.state();
            (st.last_ok.is_some(), st.seq)
        };
        let ask = Ask {
            want: Some(self.want),
            open: engine.open_or_connecting() + shared,
            cap: engine.cap_value().map_or(0, |c| c + shared),
            member,
            seen,
        };
        let sent = Instant::now();
        let name = &engine.telemetry().config().name;
        match self.eval(ask).await {
            Ok(r) => {
                let mut st = self.state();
                if r.grant != ask.cap {
                    tracing::info!(pool = %name, from = ask.cap, to = r.grant, instances = r.instances, budget = self.terms.budget, settling = r.settling, "fleet share changed");
                }
                if st.error_since.take().is_some() {
                    tracing::info!(pool = %name, "fleet Redis reachable again");
                }
                let shared = fit(Some(r.grant));
                engine.cap(Some(r.grant.saturating_sub(shared)));
                self.answered(&mut st, &r, sent);
                Some(r)
            }
            Err(e) => {
                let mut st = self.state();
                if st.error_since.is_none() {
                    tracing::warn!(pool = %name, error = %e, share = ask.cap, "fleet Redis unreachable: opening none beyond the last share, shedding to the floor before the lease expires");
                    st.error_since = Some(sent);
                }
                st.status.redis_ok = false;
                st.status.redis_error = Some((e.to_string(), 0.0));
                drop(st);
                self.guard(engine, fit);
                None
            }
        }
    }

    /// Sheds by this instance's own clock when its lease is about to expire unrenewed.
    fn guard<M: EngineManager>(&self, engine: &Engine<M>, fit: &Fit) {
        let mut st = self.state();
        let Some(last) = st.last_ok else { return };
        let since = last.elapsed();
        let limit = if since >= self.clock.zero_from {
            0
        } else if since >= self.clock.floor_from {
            self.terms.floor
        } else {
            return;
        };
        let shared = fit(Some(limit));
        let cap = engine.cap_value().unwrap_or(u32::MAX);
        if cap.saturating_add(shared) > limit {
            tracing::warn!(pool = %engine.telemetry().config().name, from = cap.saturating_add(shared), to = limit, since_renewal = ?since, "fleet lease not renewed: shedding before it expires");
            engine.cap(Some(limit.saturating_sub(shared)));
        }
        st.status.share = st.status.share.min(limit);
        st.status.shed = true;
    }

    /// Leaves the fleet (the share returns to the others at once).
    pub(crate) async fn leave(&self) {
        let ask = Ask {
            want: None,
            open: 0,
            cap: 0,
            member: true,
            seen: 0,
        };
        if let Err(e) = self.eval(ask).await {
            tracing::warn!(error = %e, "could not leave the fleet; the lease expires by itself");
        }
    }

    /// Renews every quarter of the TTL (sooner while its grant is below its share) and
    /// watches the lease's age between renewals, until `engine` returns `None` (the pool
    /// is gone) or a closed engine: then it leaves. `fit` handles the shared (pipelined)
    /// connections the pool holds beside the engine's.
    fn run<M: EngineManager, F>(
        self: &Arc<Self>,
        engine: F,
        fit: Fit,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Option<Engine<M>> + Send + 'static,
    {
        let fleet = Arc::clone(self);
        let every = self.clock.every;
        let watch = every / 8;
        tokio::spawn(async move {
            let mut next = every;
            loop {
                let renew_at = tokio::time::Instant::now() + next;
                while tokio::time::Instant::now() < renew_at {
                    tokio::time::sleep_until(renew_at.min(tokio::time::Instant::now() + watch))
                        .await;
                    match engine() {
                        Some(engine) if !engine.is_closed() => fleet.guard(&engine, &fit),
                        _ => return fleet.leave().await,
                    }
                }
                let engine = match engine() {
                    Some(engine) if !engine.is_closed() => engine,
                    _ => return fleet.leave().await,
                };
                let renewal = {
                    let fut = fleet.renew(&engine, &fit);
                    futures_util::pin_mut!(fut);
                    loop {
                        let tick = tokio::time::sleep(watch);
                        futures_util::pin_mut!(tick);
                        match futures_util::future::select(fut.as_mut(), tick).await {
                            futures_util::future::Either::Left((r, _)) => break r,
                            futures_util::future::Either::Right(((), _)) => {
                                fleet.guard(&engine, &fit);
                            }
                        }
                    }
                };
                // Waiting for room (others still cutting) or a share not yet computed:
                // ask again soon, so a new instance gets its share in about one period.
                next = match renewal {
                    Some(r) if r.grant < r.share.min(fleet.want) || r.settling => every / 4,
                    _ => every,
                };
            }
        })
    }

    /// Renews for a pool until it goes (leaving when it is closed).
    pub(crate) fn start(self: &Arc<Self>, pool: Weak<Inner>) {
        let of_pool = pool.clone();
        self.run(
            move || pool.upgrade().map(|p| p.engine.clone()),
            Box::new(move |limit| of_pool.upgrade().map_or(0, |p| p.fit_shared(limit))),
        );
    }

    /// The first renewal.
    async fn first(&self) -> Result<Renewal, redis::RedisError> {
        let sent = Instant::now();
        let r = self
            .eval(Ask {
                want: Some(self.want),
                open: 0,
                cap: 0,
                member: false,
                seen: 0,
            })
            .await?;
        self.answered(&mut self.state(), &r, sent);
        Ok(r)
    }

    /// The store answered a renewal sent at `sent`: the lease runs from then.
    fn answered(&self, st: &mut MemberState, r: &Renewal, sent: Instant) {
        st.last_ok = Some(sent);
        st.seq = r.seq;
        st.status = FleetStatus {
            budget: self.terms.budget,
            share: r.grant,
            instances: r.instances,
            leased: r.total,
            redis_ok: true,
            redis_error: None,
            floor: self.terms.floor,
            fair_share: r.share,
            settling: r.settling,
            shed: false,
        };
    }
}

/// One instance's membership in a fleet, for any engine: what a pool with
/// `P_FLEET_BUDGET` does inside, for a simulation or another kind of connection
/// (`poolctl fleet simulate` runs a thousand of them on in-memory connections).
#[derive(Debug, Clone)]
pub struct FleetMember(Arc<Fleet>);

impl FleetMember {
    /// Joins the fleet described by `config` with `budget` connections in all, asking for
    /// `want`. Returns the member and its first grant (cap the engine to it before it
    /// opens anything).
    ///
    /// # Errors
    /// The Redis URL is invalid or Redis cannot be reached, as text.
    pub async fn join(
        config: FleetConfig,
        pool: &str,
        budget: u32,
        want: u32,
    ) -> Result<(Self, u32), String> {
        let fleet = Fleet::new(config, pool, budget, want)?;
        let r = fleet.first().await.map_err(|e| e.to_string())?;
        Ok((Self(Arc::new(fleet)), r.grant))
    }

    /// Renews and sheds for `engine` until it is closed (then it leaves the fleet). Abort
    /// the task to stop renewing without leaving (a killed instance).
    pub fn start<M: EngineManager>(&self, engine: Engine<M>) -> tokio::task::JoinHandle<()> {
        self.0.run(move || Some(engine.clone()), Box::new(|_| 0))
    }

    /// What this member knows about the fleet.
    #[must_use]
    pub fn status(&self) -> FleetStatus {
        self.0.status()
    }
}

/// Joins the fleet before the pool opens anything: reads the budget (from the server
/// for `P_FLEET_BUDGET=server`, over one connection of its own) and takes a first share.
///
/// # Errors
/// [`PoolError::Connect`] when the server cannot be asked; [`Error::Config`] naming
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
    let r = fleet.first().await.map_err(|e| {
        Error::Config(poolkit_core::ConfigError::Invalid {
            var: redis_var.clone(),
            value: redact_url(fc.redis_url.expose()),
            expected: format!("a reachable Redis for the fleet's leases ({e})"),
        })
    })?;
    let grant = r.grant;
    tracing::info!(pool = %config.pool.name, budget, share = grant, instances = r.instances, leased = r.total, "joined the fleet");
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
                "fleet Redis unreachable for {secs:.0}s ({why}): {}",
                if s.shed {
                    format!("shed to the floor of {} before the lease expired", s.share)
                } else {
                    format!(
                        "keeping the {} connections of the last share, opening none beyond it; shedding to the floor of {} before the lease expires",
                        s.share, s.floor
                    )
                }
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
