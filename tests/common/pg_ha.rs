//! Private PostgreSQL clusters for failover and rotation tests: a primary, a streaming
//! replica made with `pg_basebackup -R` (on another port, or on the same port of another
//! loopback address so one name can move between them), promotion with `pg_ctl promote`,
//! and custom `pg_hba.conf` (password logins). Every server is stopped when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, as_postgres, free_port, pg_bin, run_ok};

/// `pg_hba.conf` with password logins over TCP for every role but `postgres` (trusted, for
/// the test's own admin connections and replication). `md5`, with passwords stored as md5
/// (`SET password_encryption = 'md5'` before setting one): a SCRAM login runs 4,096 rounds
/// of PBKDF2 on the client, which in an unoptimised test build takes a large share of a
/// second, and the rotation tests open hundreds of connections.
pub const HBA_PASSWORDS: &str = "local all all trust\n\
host all postgres 127.0.0.0/8 trust\n\
host replication all 127.0.0.0/8 trust\n\
host all all 127.0.0.0/8 md5\n";

/// `pg_hba.conf` trusting every loopback address (the servers of a test listen on
/// 127.0.0.1 and 127.0.0.2).
pub const HBA_TRUST: &str = "local all all trust\n\
host all all 127.0.0.0/8 trust\n\
host replication all 127.0.0.0/8 trust\n";

/// One private cluster.
pub struct Cluster {
    /// The address it listens on (`127.0.0.1`, `127.0.0.2`, …).
    pub host: String,
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
}

impl Cluster {
    /// initdb (trust, or the given `pg_hba.conf`) and start on `host`:`port` (`None`: a
    /// free port); blocking.
    pub fn primary(host: &str, port: Option<u16>, hba: Option<&str>) -> Self {
        let dir = TempDir::new("ha");
        let bin = pg_bin();
        let mut init = as_postgres(&bin.join("initdb"));
        init.arg("-D")
            .arg(dir.0.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        run_ok(init, "initdb");
        if let Some(hba) = hba {
            let path = dir.0.join("data/pg_hba.conf");
            std::fs::write(&path, hba).expect("write pg_hba.conf");
        }
        let c = Self {
            host: host.to_owned(),
            port: port.unwrap_or_else(|| free_port_on(host)),
            dir,
            bin,
        };
        c.start();
        c
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`), started on `host`:`port`
    /// (`None`: a free port); blocking. Returns once it is in recovery and streaming.
    pub fn replica_of(primary: &Cluster, host: &str, port: Option<u16>) -> Self {
        let dir = TempDir::new("ha-replica");
        let bin = pg_bin();
        let mut base = as_postgres(&bin.join("pg_basebackup"));
        base.arg("-h")
            .arg(&primary.host)
            .arg("-p")
            .arg(primary.port.to_string())
            .args(["-U", "postgres", "-R", "-X", "stream", "--no-sync", "-D"])
            .arg(dir.0.join("data"));
        run_ok(base, "pg_basebackup");
        let c = Self {
            host: host.to_owned(),
            port: port.unwrap_or_else(|| free_port_on(host)),
            dir,
            bin,
        };
        c.start();
        let end = Instant::now() + Duration::from_secs(30);
        while primary.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            != "1"
        {
            assert!(Instant::now() < end, "the replica did not start streaming");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(c.sql("SELECT pg_is_in_recovery()"), "t");
        c
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses={} -c fsync=off -c shared_buffers=16MB -c max_connections=80 -c wal_level=replica -c max_wal_senders=4",
            self.port,
            self.dir.0.display(),
            self.host
        );
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.0.join("data"))
            .arg("-l")
            .arg(self.dir.0.join("log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"]);
        run_ok(cmd, "pg_ctl start");
    }

    /// Stops the server (`fast`: every session gets 57P01; a primary sends its standbys
    /// all of its WAL first) and waits until it has exited.
    pub fn stop_fast(&self) {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        run_ok(cmd, "pg_ctl stop");
    }

    /// `pg_ctl promote`, waiting until the server accepts writes.
    pub fn promote(&self) {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-w", "-t", "30", "promote"]);
        run_ok(cmd, "pg_ctl promote");
    }

    /// Runs `sql` as `postgres` over the Unix socket; returns the unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.dir.0)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-X",
                "-w",
                "-qAt",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql -c {sql:?} on port {}: {}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = cmd.status();
    }
}

/// A port free on `host` for a private server (see `poolkit_test_support`).
pub fn free_port_on(host: &str) -> u16 {
    super::child_port_on(&[host])
}

/// A port free on both `127.0.0.1` and `127.0.0.2`, for two servers one name can move
/// between.
pub fn port_free_on_two() -> u16 {
    super::child_port_on(&["127.0.0.1", "127.0.0.2"])
}
