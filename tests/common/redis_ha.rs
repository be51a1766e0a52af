//! Private Redis servers on any loopback address (so one name can move between two
//! servers on the same port), and a Redis Sentinel watching them. Killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port_on};

/// A redis-server on `host`:`port`, working in a directory of its own (a replica writes
/// the RDB of its full resync there, not into the test's working directory).
pub struct RedisNode {
    pub host: String,
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl RedisNode {
    pub fn start(host: &str, port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(|| free_port_on(host));
        let dir = TempDir::new("redis-node");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                host,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/services.sh installs it)");
        let node = Self {
            host: host.to_owned(),
            port,
            child,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while node.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < end,
                "redis-server on {host}:{port} did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        node
    }

    /// Runs `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Makes this server a replica of `master` and waits until the link is up.
    pub fn replicate(&self, master: &RedisNode) {
        self.cli(&["REPLICAOF", &master.host, &master.port.to_string()]);
        let end = Instant::now() + Duration::from_secs(15);
        while !self
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(
                Instant::now() < end,
                "the replica did not catch up with its master"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ROLE`'s first word: `master` or `slave`.
    pub fn role(&self) -> String {
        self.cli(&["ROLE"])
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-sentinel` watching `master` as `mymaster` (quorum 1).
pub struct RedisSentinel {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl RedisSentinel {
    pub fn start(master: &RedisNode, down_after: Duration) -> Self {
        let dir = TempDir::new("sentinel");
        let port = free_port_on("127.0.0.1");
        let conf = dir.0.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster {} {} 1\n\
                 sentinel down-after-milliseconds mymaster {}\nsentinel failover-timeout mymaster 10000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.0.display(),
                master.host,
                master.port,
                down_after.as_millis()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-sentinel must be installed (scripts/services.d/failover.sh installs it)",
            );
        let s = Self {
            port,
            child,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while s.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < end, "redis-sentinel did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        self.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }

    /// Waits until the sentinel knows `count` healthy replicas of the master.
    pub fn wait_for_replicas(&self, count: usize) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cli(&["SENTINEL", "replicas", "mymaster"]);
            let good = out.matches("master-link-status\nok").count();
            let flags_ok = !out.contains("s_down") && !out.contains("disconnected");
            if good >= count && flags_ok {
                return;
            }
            assert!(
                Instant::now() < end,
                "the sentinel did not see the replica: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
