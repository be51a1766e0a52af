//! The pool over a real three-master Redis Cluster started by the test.
#![cfg(feature = "cluster")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use poolkit_redis::{ClusterPool, Config, redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_three_masters_and_survive_a_node_restart() {
    let dir = std::env::temp_dir().join(format!("poolkit-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut nodes: Vec<PrivateRedis> = (0..3)
        .map(|i| {
            let conf = dir.join(format!("nodes-{i}.conf"));
            PrivateRedis::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().expect("utf-8"),
                "--dir",
                dir.to_str().expect("utf-8"),
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
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ok = |n: &PrivateRedis| {
        n.cli(None, &["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
    };
    let end = Instant::now() + Duration::from_secs(15);
    while !nodes.iter().all(ok) {
        assert!(Instant::now() < end, "cluster did not reach state ok");
        std::thread::sleep(Duration::from_millis(100));
    }

    let seeds = nodes
        .iter()
        .map(PrivateRedis::url)
        .collect::<Vec<_>>()
        .join(",");
    let lookup = |k: &str| match k {
        "RCLUSTER_CLUSTER_NODES" => Some(seeds.clone()),
        "RCLUSTER_POOL_TIMEOUT" => Some("5s".to_owned()),
        "RCLUSTER_TIMEOUT" => Some("1s".to_owned()),
        _ => None,
    };
    let pool = ClusterPool::new(Config::from_lookup("RCLUSTER", &lookup).expect("config"))
        .await
        .expect("cluster pool");
    for i in 0..300 {
        pool.query::<()>(redis::cmd("SET").arg(format!("key:{i}")).arg(i))
            .await
            .expect("SET");
    }
    // The keys really are spread over all three masters.
    for n in &nodes {
        let count: u32 = n.cli(None, &["DBSIZE"]).trim().parse().expect("DBSIZE");
        assert!(count > 30, "a master holds only {count} of 300 keys");
    }
    for i in 0..300 {
        let v: i64 = pool
            .query(redis::cmd("GET").arg(format!("key:{i}")))
            .await
            .expect("GET");
        assert_eq!(v, i);
    }
    // redis-rs's own calls on the cluster pool, keys routed by slot; every call timed.
    {
        use redis::AsyncCommands;
        let mut con = pool.clone();
        let () = con.set("port:a", 1).await.expect("SET via AsyncCommands");
        let n: i64 = con.incr("port:a", 41).await.expect("INCR");
        assert_eq!(n, 42);
        let v: i64 = con.get("key:7").await.expect("GET");
        assert_eq!(v, 7);
        let q = pool.stats().query;
        assert!(q.count >= 603 && q.p95 > 0.0, "{q:?}");
    }

    // Restart one master (it rejoins with its nodes.conf; keys are not persisted).
    nodes[1].stop();
    let mut failed = 0;
    for i in 0..30 {
        if pool
            .query::<Option<i64>>(redis::cmd("GET").arg(format!("key:{i}")))
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "keys of the stopped master fail while it is down"
    );
    nodes[1].up();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all_ok = true;
        for i in 0..300 {
            if pool
                .query::<()>(redis::cmd("SET").arg(format!("key:{i}")).arg(i))
                .await
                .is_err()
            {
                all_ok = false;
                break;
            }
        }
        if all_ok {
            break;
        }
        assert!(
            Instant::now() < end,
            "the cluster pool did not recover after the node restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = pool.stats();
    assert!(s.errors_total() >= 1, "node errors are counted: {s:?}");
    assert_eq!(s.used, 0);

    // The in-flight cap is enforced (first come, first served), and commands cancelled
    // mid-wait or mid-flight give their place and their `used` count back.
    let capped = |k: &str| match k {
        "RCAP_MAX_IN_FLIGHT" => Some("2".to_owned()),
        other => lookup(&other.replace("RCAP_", "RCLUSTER_")),
    };
    let pool = ClusterPool::new(Config::from_lookup("RCAP", &capped).expect("config"))
        .await
        .expect("capped cluster pool");
    let sampler = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let (mut max_used, mut saw_pending) = (0, false);
            for _ in 0..400 {
                let s = pool.stats();
                max_used = max_used.max(s.used);
                saw_pending |= s.pending > 0;
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            (max_used, saw_pending)
        })
    };
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let cmd = redis::cmd("GET").arg(format!("key:{}", i % 300)).clone();
            if i % 3 == 0 {
                // Cancelled at a random point.
                let cut = Duration::from_micros(50 + (i * 7919) % 2_000);
                let _ = tokio::time::timeout(cut, pool.query::<Option<i64>>(&cmd)).await;
            } else {
                pool.query::<Option<i64>>(&cmd)
                    .await
                    .expect("GET under the cap");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (max_used, saw_pending) = sampler.await.expect("sampler");
    assert!(max_used <= 2, "in flight above the cap: {max_used}");
    assert!(saw_pending, "400 callers on a cap of 2 queue");
    let s = pool.stats();
    assert_eq!(
        (s.used, s.pending),
        (0, 0),
        "no place lost to cancellation: {s:?}"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
