//! The fleet's lease store on Redis Sentinel and on Redis Cluster, each failing over under
//! a fleet of members (real pool engines on in-memory connections, the real lease script):
//! the sum of every member's open connections, sampled every 10 ms, never exceeds the
//! budget; after the failover the store settles (nobody raises, nobody new joins for one
//! lease) and the members hold the whole budget again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::*;
use poolkit::postgres::{FleetBudget, FleetConfig, FleetMember};
use poolkit_core::engine::{Engine, ManageConnection};
use poolkit_core::{Backend, PoolConfig};

const BUDGET: u32 = 30;
const MEMBERS: usize = 6;
const WANT: u32 = 10;
const TTL: Duration = Duration::from_secs(2);

/// In-memory connections, counted while they exist.
#[derive(Clone)]
struct Mem(Arc<AtomicI64>);
struct MemConn(Arc<AtomicI64>);
impl Drop for MemConn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}
#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}
impl ManageConnection for Mem {
    type Connection = MemConn;
    type Error = Never;
    async fn connect(&self) -> Result<MemConn, Never> {
        self.0.fetch_add(1, SeqCst);
        Ok(MemConn(Arc::clone(&self.0)))
    }
    async fn is_valid(&self, _: &mut MemConn) -> Result<(), Never> {
        Ok(())
    }
    fn has_broken(&self, _: &mut MemConn) -> bool {
        false
    }
}

struct Fleet {
    open: Arc<AtomicI64>,
    members: Vec<(FleetMember, Engine<Mem>)>,
    peak: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    url: String,
    key: String,
}

impl Fleet {
    async fn start(url: &str) -> Self {
        let open = Arc::new(AtomicI64::new(0));
        let (peak, stop) = (
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        {
            let (open, peak, stop) = (open.clone(), peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    peak.fetch_max(open.load(SeqCst), SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        let mut f = Self {
            open,
            members: Vec::new(),
            peak,
            stop,
            url: url.to_owned(),
            key: format!("poolkit:test:fleet-ha:{}", std::process::id()),
        };
        for _ in 0..MEMBERS {
            f.join().await;
        }
        f
    }

    async fn join(&mut self) {
        let mut fc = FleetConfig::new(FleetBudget::Fixed(BUDGET), &self.url, &self.key);
        fc.ttl = TTL;
        let (member, grant) = FleetMember::join(fc, "ha", BUDGET, WANT)
            .await
            .expect("join the fleet");
        let mut config = PoolConfig::new("ha", Backend::Postgres);
        config.pool_size = WANT;
        config.min_idle = WANT;
        let engine = Engine::build_capped(Mem(self.open.clone()), config, Some(grant))
            .await
            .expect("engine");
        member.start(engine.clone());
        self.members.push((member, engine));
    }

    fn shares(&self) -> u32 {
        self.members.iter().map(|(m, _)| m.status().share).sum()
    }

    async fn until(&self, within: Duration, what: &str, ok: impl Fn(&Self) -> bool) -> Duration {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < within,
                "{what} within {within:?}: {:?}",
                self.members
                    .iter()
                    .map(|(m, _)| m.status())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    fn peak(&self) -> i64 {
        self.peak.load(SeqCst)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

/// Runs the failover (`fail`) under the fleet and checks the budget and the settling.
async fn through_failover(url: &str, fail: impl FnOnce()) {
    let mut fleet = Fleet::start(url).await;
    fleet
        .until(TTL * 3, "the members share the budget", |f| {
            f.shares() == BUDGET && f.open.load(SeqCst) == i64::from(BUDGET)
        })
        .await;
    fail();
    let took = fleet
        .until(TTL * 10, "every member renews after the failover", |f| {
            f.members.iter().all(|(m, _)| m.status().redis_ok)
                && f.members.iter().any(|(m, _)| m.status().settling)
        })
        .await;
    eprintln!("the members renew, the store settling, {took:?} after the failover");
    // Joining while the store settles: nothing until it ends.
    fleet.join().await;
    assert_eq!(fleet.members[MEMBERS].0.status().share, 0);
    let took = fleet
        .until(TTL * 5, "the fleet holds the whole budget again", |f| {
            f.shares() == BUDGET
                && f.members.iter().all(|(m, _)| !m.status().settling)
                && f.members[MEMBERS].0.status().share > 0
        })
        .await;
    eprintln!("the whole budget in use again {took:?} later");
    let peak = fleet.peak();
    eprintln!("peak {peak} of {BUDGET}");
    assert!(
        peak <= i64::from(BUDGET),
        "the fleet held {peak}, above {BUDGET}"
    );
    for (_, e) in &fleet.members {
        e.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_the_budget() {
    let master = RedisNode::start("127.0.0.1", None);
    let replica = RedisNode::start("127.0.0.1", None);
    replica.replicate(&master);
    let sentinel = RedisSentinel::start(&master, Duration::from_millis(500));
    sentinel.wait_for_replicas(1);
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port);
    let old = master.port;
    through_failover(&url, move || {
        // The master dies without a goodbye; the sentinel promotes the replica.
        drop(master);
    })
    .await;
    assert_ne!(
        sentinel.master_port(),
        Some(old),
        "the sentinel failed over"
    );
    assert_eq!(replica.role(), "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_keeps_the_budget() {
    let dir = TempDir::new("fleet-cluster");
    let nodes: Vec<PrivateRedis> = (0..6)
        .map(|i| {
            let conf = dir.0.join(format!("nodes-{i}.conf"));
            PrivateRedis::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().expect("utf-8"),
                "--dir",
                dir.0.to_str().expect("utf-8"),
                "--cluster-node-timeout",
                "2000",
            ])
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let end = Instant::now() + Duration::from_secs(30);
    let settled = |n: &PrivateRedis| {
        n.cli(None, &["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
            && (n
                .cli(None, &["INFO", "replication"])
                .contains("role:master")
                || n.cli(None, &["INFO", "replication"])
                    .contains("master_link_status:up"))
    };
    while !nodes.iter().all(settled) {
        assert!(Instant::now() < end, "cluster did not settle");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seeds = nodes
        .iter()
        .map(PrivateRedis::url)
        .collect::<Vec<_>>()
        .join(",");
    // The replica of the master that owns the fleet's slot.
    let key = format!("{{poolkit:test:fleet-ha:{}}}:alive", std::process::id());
    let slot: u32 = nodes[0]
        .cli(None, &["CLUSTER", "KEYSLOT", &key])
        .trim()
        .parse()
        .expect("slot");
    let master = nodes
        .iter()
        .find(|m| owns(m, slot))
        .expect("the slot's master");
    let replica = nodes
        .iter()
        .find(|n| {
            n.cli(None, &["INFO", "replication"])
                .contains(&format!("master_port:{}", master.port))
        })
        .expect("a replica of the slot's master");
    through_failover(&seeds, || {
        let answer = replica.cli(None, &["CLUSTER", "FAILOVER"]);
        assert!(answer.contains("OK"), "CLUSTER FAILOVER: {answer}");
    })
    .await;
    assert!(
        replica.cli(None, &["ROLE"]).starts_with("master"),
        "the replica took over"
    );
}

/// Whether node `m` is a master serving `slot` (its own line of `CLUSTER NODES`).
fn owns(m: &PrivateRedis, slot: u32) -> bool {
    m.cli(None, &["CLUSTER", "NODES"])
        .lines()
        .filter(|l| l.contains("myself") && l.contains("master"))
        .flat_map(|l| {
            l.split_whitespace()
                .skip(8)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .any(|r| match r.split_once('-') {
            Some((a, b)) => {
                (a.parse().unwrap_or(u32::MAX)..=b.parse().unwrap_or(0)).contains(&slot)
            }
            None => r.parse() == Ok(slot),
        })
}
