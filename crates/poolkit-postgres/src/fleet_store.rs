//! Where a fleet's leases live: one Redis, Redis Sentinel (the master the sentinels name at
//! each connect) or Redis Cluster (every key of a fleet in one hash slot, `{key}:…`), and
//! the lease script that runs there.
//!
//! The script's cost per renewal does not grow with the fleet in the steady state: a
//! renewal is a few O(log N) sorted-set and O(1) hash operations, with the fleet's total
//! kept as a running sum. The fair shares are recomputed (O(N log N)) only when the
//! fleet changed (a member joined, left, expired or changed what it wants), and at most
//! once per `gap`, so during a rolling update the recomputation is shared by every
//! renewal of that interval.

use std::time::Duration;

use poolkit_core::redact_url;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{AsyncConnectionConfig, Client, Cmd, RedisError, RedisFuture, Value};

/// The lease script.
///
/// KEYS: alive (zset: id → lease expiry, ms), held (hash: id → connections counted for
/// it), wants (hash: id → ceiling), shares (hash: id → fair share), meta (hash: `sum`,
/// `dirty`, `at`, `settle`, `replid`, `seq`), floors (zset: id → end of its floor's
/// reservation, ms), since (hash: id → when a new instance was first seen, ms).
///
/// ARGV: id, want (-1: leave), open, current cap, member (1: it renewed before), lease
/// ms, floor hold ms, budget, floor, recompute gap ms, the store's sequence number the
/// member saw last, how long a new instance waits (ms).
///
/// Returns {grant, instances, total held, share, settling (0/1), sequence number}.
pub(crate) const LEASE: &str = r"
local alive, held, wants, shares, meta, floors, since = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, want, open = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cur, member, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local hold, budget, floor, gap = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local seen, wait = tonumber(ARGV[11]), tonumber(ARGV[12])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
local m = redis.call('HMGET', meta, 'sum', 'dirty', 'at', 'settle', 'replid', 'seq')
local sum, dirty, at = tonumber(m[1] or '0'), m[2] == '1', tonumber(m[3] or '0')
local settle, seq = tonumber(m[4] or '0'), tonumber(m[6] or '0')
-- A store that is not the one that wrote the leases (a promoted replica), or one that went
-- back in time (a member saw a later sequence number: a restart from an older snapshot,
-- writes lost in a failover) may have lost leases: nobody raises for one lease, until
-- every live member has recorded what it holds again.
if (m[5] and m[5] ~= replid) or (member == 1 and seen > seq) then settle = now + lease end
seq = seq + 1
-- Leases that expired keep their floor reserved until the hold ends.
for _, d in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now, 'LIMIT', 0, 1000)) do
  local h = tonumber(redis.call('HGET', held, d) or '0')
  local keep = math.min(h, floor)
  sum = sum - h + keep
  redis.call('ZREM', alive, d); redis.call('HDEL', wants, d); redis.call('HDEL', shares, d)
  redis.call('HDEL', since, d)
  if keep > 0 then
    redis.call('HSET', held, d, keep); redis.call('ZADD', floors, now + hold, d)
  else
    redis.call('HDEL', held, d)
  end
  dirty = true
end
for _, d in ipairs(redis.call('ZRANGEBYSCORE', floors, '-inf', now, 'LIMIT', 0, 1000)) do
  sum = sum - tonumber(redis.call('HGET', held, d) or '0')
  redis.call('HDEL', held, d); redis.call('ZREM', floors, d)
  dirty = true
end
local h0 = tonumber(redis.call('HGET', held, id) or '0')
local function save(g, share)
  redis.call('HSET', meta, 'sum', sum, 'dirty', dirty and '1' or '0', 'at', at,
    'settle', settle, 'replid', replid, 'seq', seq)
  local keep = math.max(lease * 10, hold + lease)
  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, keep) end
  local settling = 0
  if now < settle then settling = 1 end
  return {g, redis.call('ZCARD', alive), sum, share, settling, seq}
end
if want < 0 then
  sum = sum - h0
  redis.call('HDEL', held, id); redis.call('HDEL', wants, id); redis.call('HDEL', shares, id)
  redis.call('ZREM', alive, id); redis.call('ZREM', floors, id); redis.call('HDEL', since, id)
  dirty = true
  return save(0, 0)
end
local was = redis.call('ZSCORE', alive, id)
local floored = redis.call('ZREM', floors, id)
if not was then
  dirty = true
  -- A member the store does not know (and did not expire): the store lost its lease.
  if member == 1 and floored == 0 then settle = now + lease end
end
redis.call('ZADD', alive, now + lease, id)
if tonumber(redis.call('HGET', wants, id) or '-1') ~= want then
  redis.call('HSET', wants, id, want); dirty = true
end
if dirty and now >= at + gap then
  -- Water-filling over the wants, after the floors reserved for expired leases.
  local reserved = 0
  for _, d in ipairs(redis.call('ZRANGE', floors, 0, -1)) do
    reserved = reserved + tonumber(redis.call('HGET', held, d) or '0')
  end
  local flat = redis.call('HGETALL', wants)
  local list = {}
  for i = 1, #flat, 2 do list[#list + 1] = {flat[i], tonumber(flat[i + 1])} end
  table.sort(list, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
  local left, n, i = math.max(0, budget - reserved), #list, 1
  redis.call('DEL', shares)
  local batch = {}
  local function put(x, v)
    batch[#batch + 1] = x; batch[#batch + 1] = v
    if #batch >= 1000 then redis.call('HSET', shares, unpack(batch)); batch = {} end
  end
  while i <= n and list[i][2] * (n - i + 1) <= left do
    put(list[i][1], list[i][2]); left = left - list[i][2]; i = i + 1
  end
  local rest = n - i + 1
  if rest > 0 then
    local each = math.floor(left / rest)
    local extra = left - each * rest
    for j = i, n do
      if j - i < extra then put(list[j][1], each + 1) else put(list[j][1], each) end
    end
  end
  if #batch > 0 then redis.call('HSET', shares, unpack(batch)) end
  -- The running sum, recounted.
  local all = redis.call('HVALS', held)
  sum = 0
  for _, v in ipairs(all) do sum = sum + tonumber(v) end
  at, dirty = now, false
end
local share = tonumber(redis.call('HGET', shares, id) or '-1')
if share < 0 then share = math.min(floor, want) end
local grant = math.max(0, math.min(share, budget - (sum - h0)))
-- A new instance waits one renewal period before its first grant: every live member
-- renews within it, so a store that lost leases is noticed (and settles) before anyone
-- new counts on the room they seem to leave.
local first = tonumber(redis.call('HGET', since, id) or '0')
if first == 0 and member == 0 then first = now; redis.call('HSET', since, id, now) end
if first > 0 then
  if now < first + wait then grant = 0 else redis.call('HDEL', since, id) end
end
if now < settle then grant = math.min(grant, math.max(cur, 0)) end
local rec = math.max(grant, open)
sum = sum - h0 + rec
redis.call('HSET', held, id, rec)
return save(grant, share)
";

/// What one renewal returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewal {
    /// The connections this instance may hold now.
    pub(crate) grant: u32,
    /// Live instances.
    pub(crate) instances: u32,
    /// Connections the fleet's records cover (floors reserved for expired leases too).
    pub(crate) total: u32,
    /// This instance's fair share (it may wait for room before the grant reaches it).
    pub(crate) share: u32,
    /// Whether the store is settling after a loss (nobody raises).
    pub(crate) settling: bool,
    /// The store's sequence number after this renewal.
    pub(crate) seq: u64,
}

/// What a renewal sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    /// Its ceiling; `None` to leave.
    pub(crate) want: Option<u32>,
    /// Connections open or being opened.
    pub(crate) open: u32,
    /// Its cap now.
    pub(crate) cap: u32,
    /// Whether it renewed before.
    pub(crate) member: bool,
    /// The store's sequence number at its last renewal (0: none).
    pub(crate) seen: u64,
}

/// How to reach the store.
pub(crate) enum Target {
    /// One server.
    Single(Client),
    /// The master the sentinels name at each connect.
    Sentinel {
        sentinel: tokio::sync::Mutex<Sentinel>,
        master: String,
        node: SentinelNodeConnectionInfo,
    },
    /// A Redis Cluster.
    Cluster(redis::cluster::ClusterClient),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Single",
            Self::Sentinel { .. } => "Sentinel",
            Self::Cluster(_) => "Cluster",
        })
    }
}

/// An open connection to the store.
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl Target {
    /// Parses `P_FLEET_REDIS_URL`: `redis://…`, `redis+sentinel://h:p,h:p/master[/db]`, or a
    /// comma list of cluster seeds.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let bad = |e: &dyn std::fmt::Display| format!("{} is invalid: {e}", redact_url(url));
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (auth, rest) = match rest.rfind('@') {
                Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
                None => (None, rest),
            };
            let (hosts, path) = rest.split_once('/').ok_or_else(|| {
                bad(&"redis+sentinel://[user:password@]host:26379[,host:26379…]/master[/db]")
            })?;
            let mut segs = path.split('/').filter(|s| !s.is_empty());
            let master = segs
                .next()
                .ok_or_else(|| bad(&"no master name"))?
                .to_owned();
            let db: i64 = segs.next().unwrap_or("0").parse().map_err(|e| bad(&e))?;
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|h| format!("redis://{}", h.trim()))
                .collect();
            let sentinel = Sentinel::build(nodes).map_err(|e| bad(&e))?;
            let mut info = redis::RedisConnectionInfo::default().set_db(db);
            if let Some(auth) = auth {
                let (user, pass) = auth.split_once(':').unwrap_or(("", auth));
                if !user.is_empty() {
                    info = info.set_username(user);
                }
                if !pass.is_empty() {
                    info = info.set_password(pass);
                }
            }
            return Ok(Self::Sentinel {
                sentinel: tokio::sync::Mutex::new(sentinel),
                master,
                node: SentinelNodeConnectionInfo::default().set_redis_connection_info(info),
            });
        }
        if url.contains(',') {
            let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
            return redis::cluster::ClusterClientBuilder::new(seeds)
                .build()
                .map(Self::Cluster)
                .map_err(|e| bad(&e));
        }
        Client::open(url).map(Self::Single).map_err(|e| bad(&e))
    }

    /// Opens a connection, bounded by `timeout` for the connect and each reply.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Conn, RedisError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        match self {
            Self::Single(c) => Ok(Conn::Single(
                c.get_multiplexed_async_connection_with_config(&cfg).await?,
            )),
            Self::Sentinel {
                sentinel,
                master,
                node,
            } => {
                let client = tokio::time::timeout(timeout, async {
                    sentinel
                        .lock()
                        .await
                        .async_master_for(master, Some(node))
                        .await
                })
                .await
                .map_err(|_| {
                    RedisError::from((
                        redis::ErrorKind::Io,
                        "no Sentinel named the fleet's master in time",
                    ))
                })??;
                Ok(Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
            Self::Cluster(c) => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(Conn::Cluster(
                    c.get_async_connection_with_config(cfg).await?,
                ))
            }
        }
    }
}

/// The fleet's keys, in one hash slot.
pub(crate) fn keys(key: &str) -> [String; 7] {
    [
        "alive", "held", "wants", "shares", "meta", "floors", "since",
    ]
    .map(|k| format!("{{{key}}}:{k}"))
}

/// Lease parameters that do not change between renewals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    pub(crate) lease: Duration,
    pub(crate) hold: Duration,
    pub(crate) budget: u32,
    pub(crate) floor: u32,
    pub(crate) gap: Duration,
    /// How long a new instance waits for its first grant (one renewal period).
    pub(crate) wait: Duration,
}

/// Runs the lease script once.
pub(crate) async fn renew(
    conn: &mut Conn,
    key: &str,
    id: &str,
    terms: &Terms,
    ask: Ask,
) -> Result<Renewal, RedisError> {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(LEASE));
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut inv = SCRIPT.prepare_invoke();
    for k in keys(key) {
        inv.key(k);
    }
    inv.arg(id)
        .arg(ask.want.map_or(-1, i64::from))
        .arg(ask.open)
        .arg(ask.cap)
        .arg(u8::from(ask.member))
        .arg(ms(terms.lease))
        .arg(ms(terms.hold))
        .arg(terms.budget)
        .arg(terms.floor)
        .arg(ms(terms.gap))
        .arg(ask.seen)
        .arg(ms(terms.wait));
    let (grant, instances, total, share, settling, seq): (i64, u32, i64, i64, u8, u64) =
        inv.invoke_async(conn).await?;
    let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok(Renewal {
        grant: clamp(grant),
        instances,
        total: clamp(total),
        share: clamp(share),
        settling: settling == 1,
        seq,
    })
}
