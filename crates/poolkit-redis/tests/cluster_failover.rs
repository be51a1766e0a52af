//! A Redis Cluster node demoted mid-failover (redis-rs #2085: writes kept hitting the old
//! master): a three-master cluster with a replica each, 200 tasks writing their own key,
//! and `CLUSTER FAILOVER` on one replica. The demoted master answers MOVED or READONLY;
//! the cluster connection refreshes its slot map and sends the write to the new master
//! (redis-rs retries both: a redirected or refused write did not run). Every write is
//! acknowledged or fails with a typed error, writes go on within a second, and the keys end
//! on the new master with their last acknowledged value.
#![cfg(feature = "cluster")]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use poolkit_redis::PoolError;
use poolkit_redis::{ClusterPool, Config, Error, redis};

const TASKS: u64 = 200;

/// The nodes' directory, removed when the test ends (also when it fails).
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_demoted_master() {
    let guard =
        Dir(std::env::temp_dir().join(format!("poolkit-cluster-fo-{}", std::process::id())));
    let dir = guard.0.clone();
    std::fs::create_dir_all(&dir).expect("temp dir");
    let nodes: Vec<PrivateRedis> = (0..6)
        .map(|i| {
            let conf = dir.join(format!("nodes-{i}.conf"));
            PrivateRedis::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().expect("utf-8"),
                "--dir",
                dir.to_str().expect("utf-8"),
                "--cluster-node-timeout",
                "2000",
            ])
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
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
            && n.cli(None, &["INFO", "replication"])
                .contains("role:master")
            || n.cli(None, &["INFO", "replication"])
                .contains("master_link_status:up")
    };
    while !nodes.iter().all(settled) {
        assert!(Instant::now() < end, "cluster did not settle");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A replica, and the master it would take over from.
    let replica = nodes
        .iter()
        .find(|n| n.cli(None, &["ROLE"]).starts_with("slave"))
        .expect("a replica");

    let seeds = nodes
        .iter()
        .map(PrivateRedis::url)
        .collect::<Vec<_>>()
        .join(",");
    let lookup = |k: &str| match k {
        "RCFO_CLUSTER_NODES" => Some(seeds.clone()),
        "RCFO_POOL_TIMEOUT" => Some("5s".to_owned()),
        "RCFO_TIMEOUT" => Some("2s".to_owned()),
        _ => None,
    };
    let pool = ClusterPool::new(Config::from_lookup("RCFO", &lookup).expect("config"))
        .await
        .expect("cluster pool");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let last: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let times: Arc<Mutex<Vec<u64>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let begin = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (pool, stop, ok, last, times, failed) = (
                pool.clone(),
                stop.clone(),
                ok.clone(),
                last.clone(),
                times.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(SeqCst) {
                    i += 1;
                    let cmd = redis::cmd("SET").arg(format!("cfo:{t}")).arg(i).clone();
                    match pool.query::<()>(&cmd).await {
                        Ok(()) => {
                            ok.fetch_add(1, SeqCst);
                            last.lock().unwrap().insert(t, i);
                            times
                                .lock()
                                .unwrap()
                                .push(u64::try_from(begin.elapsed().as_millis()).unwrap());
                        }
                        Err(e) => {
                            let typed = matches!(
                                e,
                                Error::Pool(PoolError::PrimaryMoved { .. })
                                    | Error::Backend(_)
                                    | Error::Pool(PoolError::Timeout { .. })
                            );
                            failed
                                .lock()
                                .unwrap()
                                .push(format!("{}{e}", if typed { "" } else { "UNTYPED " }));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let failover_ms = u64::try_from(begin.elapsed().as_millis()).unwrap();
    let answer = replica.cli(None, &["CLUSTER", "FAILOVER"]);
    assert!(answer.contains("OK"), "CLUSTER FAILOVER: {answer}");
    let end = Instant::now() + Duration::from_secs(15);
    while !replica.cli(None, &["ROLE"]).starts_with("master") {
        assert!(Instant::now() < end, "the replica did not take over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let promoted_ms = u64::try_from(begin.elapsed().as_millis()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    let failed = failed.lock().unwrap().clone();
    let mut times = times.lock().unwrap().clone();
    times.sort_unstable();
    let (gap, gap_from) = times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or((0, 0));
    // Every key holds its last acknowledged value, wherever its slot lives now.
    let last = last.lock().unwrap().clone();
    // A write that timed out may still be applied later, after newer ones: count keys left
    // on an older value apart from keys on a newer (unacknowledged) one.
    let (mut older, mut newer) = (0, 0);
    for (t, i) in &last {
        let v: Option<u64> = pool
            .query(redis::cmd("GET").arg(format!("cfo:{t}")))
            .await
            .expect("GET");
        match v {
            Some(v) if v < *i => older += 1,
            Some(v) if v > *i => newer += 1,
            Some(_) => {}
            None => older += 1,
        }
    }
    let on_new_master: u64 = replica.cli(None, &["DBSIZE"]).trim().parse().unwrap_or(0);
    println!(
        "FIGURES cluster_failover: {} writes ok, {} failed ({:?}); CLUSTER FAILOVER at {failover_ms} ms, the replica was master at {promoted_ms} ms; no write succeeded for {gap} ms from {gap_from} ms; of {} keys, {older} on an older value than their last acknowledged write and {newer} on a newer one; {on_new_master} keys on the new master; cluster connection rebuilt {} times; errors counted {:?}",
        ok.load(SeqCst),
        failed.len(),
        &failed[..failed.len().min(2)],
        last.len(),
        pool.rebuilds(),
        pool.stats().errors,
    );
    assert!(
        failed.iter().all(|e| !e.starts_with("UNTYPED")),
        "{failed:?}"
    );
    assert!(gap < 1_000, "writes stopped for {gap} ms");

    assert!(on_new_master > 0, "the new master serves its slots");
    drop(nodes);
    drop(guard);
}
