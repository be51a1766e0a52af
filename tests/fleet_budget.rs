//! The fleet budget across real processes: 5 instances of one pool (this binary, started
//! again as members) share a budget of 60 on a private PostgreSQL (max_connections 100)
//! with leases in a private Redis. `pg_stat_activity` is sampled every 100 ms: the count
//! never exceeds 60. Two members are killed with SIGKILL and the others take their share
//! (all but the dead members' floors) within the lease TTL; a sixth joins and gets a share;
//! the sixth is cut off from Redis (its traffic dropped, the others still reach it) and
//! sheds to its floor before its lease expires while the others take the rest; Redis is
//! stopped and every member sheds to its floor, and each one's health says Redis is
//! unreachable.
//!
//! `harness = false`: `main` is the test, or a member when `FLEET_MEMBER` is set.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FreezingProxy, PrivatePg, PrivateRedis};
use poolkit::postgres::{Config, Pool, tokio_postgres};
use poolkit_core::env::process_lookup;

const BUDGET: u32 = 60;
/// `P_FLEET_FLOOR` (the default).
const FLOOR: u32 = 1;
const TTL: Duration = Duration::from_secs(2);
const APP: &str = "poolkit_fleet_member";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(id) = process_lookup("FLEET_MEMBER") {
        rt.block_on(member(&id));
    } else {
        rt.block_on(fleet());
        // This binary has its own harness (it runs itself as the members); it ends with
        // libtest's summary line, which scripts/test.sh counts.
        println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
    }
}

/// A member: a fixed pool of 30 (above any share) under load, printing its state every
/// 100 ms as `status <share> <open> <redis_ok> <health_says_unreachable>`.
async fn member(id: &str) {
    let var = |k: &str| process_lookup(k).unwrap_or_else(|| panic!("{k} is set by the test"));
    let vars = vec![
        ("M_URL".to_owned(), var("FLEET_PG_URL")),
        ("M_POOL_SIZE".to_owned(), "30".to_owned()),
        ("M_POOL_MIN_IDLE".to_owned(), "0".to_owned()),
        ("M_POOL_TIMEOUT".to_owned(), "30s".to_owned()),
        ("M_APPLICATION_NAME".to_owned(), APP.to_owned()),
        ("M_FLEET_BUDGET".to_owned(), BUDGET.to_string()),
        (
            "M_FLEET_REDIS_URL".to_owned(),
            process_lookup(&format!("FLEET_REDIS_URL_{id}"))
                .unwrap_or_else(|| var("FLEET_REDIS_URL")),
        ),
        ("M_FLEET_TTL".to_owned(), format!("{}ms", TTL.as_millis())),
        ("M_FLEET_KEY".to_owned(), var("FLEET_KEY")),
    ];
    let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let config = Config::from_lookup("M", &lookup).expect("member config");
    let pool = Pool::new(config).await.expect("member pool");
    // Half the load checks out, half runs statements on the pool (pipelined over the shared
    // connections, which the share covers too).
    for i in 0..40 {
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                if i % 2 == 0 {
                    if let Ok(conn) = pool.get().await {
                        let _ = conn.simple_query("SELECT pg_sleep(0.02)").await;
                    }
                } else if pool.simple_query("SELECT pg_sleep(0.02)").await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let f = pool.fleet().expect("fleet status");
        let unreachable = pool
            .health()
            .alerts
            .iter()
            .any(|a| a.message.contains("fleet Redis unreachable"));
        println!(
            "status {id} {} {} {} {unreachable}",
            f.share,
            pool.stats().open,
            f.redis_ok
        );
    }
}

/// The last status line of each member.
#[derive(Clone, Copy, Debug, Default)]
struct Status {
    share: u32,
    open: u64,
    redis_ok: bool,
    unreachable: bool,
    seen: bool,
}

struct Members {
    children: Vec<(usize, Child)>,
    status: Arc<Mutex<Vec<Status>>>,
    env: Vec<(String, String)>,
}

impl Members {
    fn spawn(&mut self, id: usize) {
        self.spawn_with(id, &[]);
    }

    fn spawn_with(&mut self, id: usize, extra: &[(String, String)]) {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .env("FLEET_MEMBER", id.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a member");
        let out = child.stdout.take().expect("stdout");
        let status = Arc::clone(&self.status);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() == 6 && f[0] == "status" {
                    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                    s[id] = Status {
                        share: f[2].parse().unwrap_or(0),
                        open: f[3].parse().unwrap_or(0),
                        redis_ok: f[4] == "true",
                        unreachable: f[5] == "true",
                        seen: true,
                    };
                }
            }
        });
        self.children.push((id, child));
    }

    fn kill(&mut self, id: usize) {
        if let Some(i) = self.children.iter().position(|(c, _)| *c == id) {
            let (_, mut child) = self.children.remove(i);
            child.kill().expect("SIGKILL a member");
            let _ = child.wait();
        }
    }

    fn get(&self) -> Vec<Status> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `ok` holds for the statuses, at most `within`; returns how long it took.
    async fn until(
        &self,
        within: Duration,
        what: &str,
        ok: impl Fn(&[Status]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let s = self.get();
            if ok(&s) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{what} within {within:?}: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn fleet() {
    let pg = tokio::task::spawn_blocking(|| PrivatePg::start_with_max(100))
        .await
        .expect("private PostgreSQL");
    let mut redis = PrivateRedis::start(&[]);
    let (admin, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection to the private PostgreSQL");
    tokio::spawn(conn);
    // Sample pg_stat_activity every 100 ms for the whole run.
    let (peak, stop) = (
        Arc::new(AtomicI64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut samples = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[&APP],
                    )
                    .await
                    .expect("pg_stat_activity")
                    .get(0);
                peak.fetch_max(n, Ordering::Relaxed);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let mut members = Members {
        children: Vec::new(),
        status: Arc::new(Mutex::new(vec![Status::default(); 6])),
        env: vec![
            ("FLEET_PG_URL".into(), pg.url()),
            ("FLEET_REDIS_URL".into(), redis.url()),
            (
                "FLEET_KEY".into(),
                format!("poolkit:test:fleet:{}", std::process::id()),
            ),
        ],
    };
    for id in 0..5 {
        members.spawn(id);
    }
    let live =
        |ids: &'static [usize]| move |s: &[Status]| ids.iter().map(|&i| s[i].share).sum::<u32>();
    // Five members wanting 30 each: 12 apiece, the whole budget in use.
    let took = members
        .until(TTL * 3, "five members share the budget", |s| {
            (0..5).all(|i| s[i].seen) && live(&[0, 1, 2, 3, 4])(s) == BUDGET
        })
        .await;
    eprintln!("five members at 12 each after {took:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        peak.load(Ordering::Relaxed) > 40,
        "the budget is used: {}",
        peak.load(Ordering::Relaxed)
    );

    // Two die without a goodbye: the three others take their share within the TTL, all
    // but the floors kept for the dead (they could be alive and cut off from Redis).
    members.kill(3);
    members.kill(4);
    // The members report every 100 ms and are read every 50 ms: allow that on top.
    let took = members
        .until(
            TTL + Duration::from_millis(200),
            "the survivors take the dead members' share",
            |s| live(&[0, 1, 2])(s) == BUDGET - 2 * FLOOR,
        )
        .await;
    eprintln!("survivors at 20/19/19 {took:?} after the kills (TTL {TTL:?})");

    // A sixth joins (through a proxy that can cut it off from Redis) and gets a fair share
    // within one TTL.
    let upstream = format!("127.0.0.1:{}", redis.port).parse().expect("addr");
    let proxy = FreezingProxy::start(upstream).await;
    members.spawn_with(
        5,
        &[(
            "FLEET_REDIS_URL_5".to_owned(),
            format!("redis://127.0.0.1:{}", proxy.port),
        )],
    );
    let took = members
        .until(TTL * 2, "a new member gets a share", |s| {
            s[5].seen && s[5].share >= 10 && live(&[0, 1, 2, 5])(s) <= BUDGET
        })
        .await;
    eprintln!(
        "the sixth member has {} after {took:?}",
        members.get()[5].share
    );
    members
        .until(TTL * 2, "four members at 15/15/14/14", |s| {
            [0, 1, 2, 5].iter().all(|&i| s[i].share >= 14)
                && live(&[0, 1, 2, 5])(s) == BUDGET - 2 * FLOOR
        })
        .await;

    // The sixth is cut off from Redis while the others still reach it: it sheds to its
    // floor before its lease expires by its own clock (3/4 TTL after its last renewal, a
    // renewal every TTL/4: within a TTL of the cut), and the others take the rest.
    proxy.partition();
    let cut = Instant::now();
    let took = members
        .until(TTL, "the cut-off member sheds to its floor", |s| {
            s[5].open <= u64::from(FLOOR) && s[5].share <= FLOOR
        })
        .await;
    eprintln!("the cut-off member at its floor {took:?} after the cut");
    let took = members
        .until(TTL * 2, "the others take the cut-off member's room", |s| {
            live(&[0, 1, 2])(s) == BUDGET - 3 * FLOOR
        })
        .await;
    eprintln!(
        "the others hold {} {took:?} after the cut ({:?} since)",
        BUDGET - 3 * FLOOR,
        cut.elapsed()
    );

    // Redis stops: nobody goes beyond the share it had, each sheds to its floor within a
    // TTL, and health says why.
    let before = members.get();
    redis.stop();
    members
        .until(TTL * 2, "every member reports Redis unreachable", |s| {
            [0, 1, 2]
                .iter()
                .all(|&i| !s[i].redis_ok && s[i].unreachable)
        })
        .await;
    members
        .until(TTL, "every member sheds to its floor", |s| {
            [0, 1, 2, 5].iter().all(|&i| s[i].open <= u64::from(FLOOR))
        })
        .await;
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        let s = members.get();
        for i in [0, 1, 2, 5] {
            assert!(
                s[i].share <= before[i].share,
                "member {i} raised its share without Redis: {s:?}"
            );
            assert!(
                s[i].open <= u64::from(before[i].share),
                "member {i} above its share: {s:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("{samples} samples of pg_stat_activity, peak {peak}");
    assert!(samples > 50, "sampled every 100 ms: {samples}");
    assert!(
        peak <= i64::from(BUDGET),
        "the fleet held {peak} connections, above the budget {BUDGET}"
    );
    drop(members);
}
