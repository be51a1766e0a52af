//! Helpers shared by the PostgreSQL integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use poolkit_core::env::process_lookup;
use poolkit_postgres::{Pool, tokio_postgres};
use poolkit_test_support as ports;

/// `DATABASE_URL`, defaulting to the local test database.
pub fn database_url() -> String {
    process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A direct (unpooled) client; panics with a message naming DATABASE_URL when the server
/// cannot be reached, so a missing server fails the test instead of skipping it.
pub async fn admin() -> tokio_postgres::Client {
    let url = database_url();
    let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "cannot reach PostgreSQL at DATABASE_URL={} ({}); start it with scripts/services.sh",
            poolkit_core::redact_url(&url),
            poolkit_postgres::chain(&e)
        ),
    };
    tokio::spawn(conn);
    client
}

/// A unique application_name, so a test can find its own backends in pg_stat_activity.
pub fn app_name(test: &str) -> String {
    format!("poolkit_test_{test}_{}", std::process::id())
}

/// A pool builder on the test database with a unique name and application_name.
pub fn builder(test: &str) -> poolkit_postgres::Builder {
    Pool::builder()
        .url(database_url())
        .name(&format!("t_{test}"))
        .application_name(&app_name(test))
        .acquire_timeout(Duration::from_secs(10))
}

/// Backends of this test, from pg_stat_activity.
pub async fn backends(admin: &tokio_postgres::Client, test: &str) -> i64 {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app_name(test)],
        )
        .await
        .expect("pg_stat_activity");
    row.get(0)
}

/// Terminates every backend of this test; returns how many.
pub async fn terminate(admin: &tokio_postgres::Client, test: &str) -> i64 {
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app_name(test)],
        )
        .await
        .expect("pg_terminate_backend");
    i64::try_from(rows.len()).unwrap_or(i64::MAX)
}

/// Polls `f` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PostgreSQL cluster a test owns (initdb into a temp dir, its own port), so it can be
/// stopped and started without disturbing the shared server. Removed on drop.
pub struct PrivateCluster {
    pub dir: std::path::PathBuf,
    pub port: u16,
    bin: std::path::PathBuf,
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateCluster {
    /// initdb + start, with `extra_conf` appended to postgresql.conf; `prepare` runs on the
    /// data directory before the first start (to place certificates, say).
    pub fn start(name: &str, extra_conf: &str, prepare: impl FnOnce(&std::path::Path)) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (scripts/services.sh installs them)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .max()
            .expect("a PostgreSQL version");
        // A port no other socket is handed before the server binds it.
        let port = ports::child_port();
        let dir =
            std::env::temp_dir().join(format!("poolkit-{name}-{}-{port}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).expect("dir");
        run(std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir));
        run(std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        prepare(&data);
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{extra_conf}\n",
            dir.display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).expect("conf");
        let c = Self { dir, port, bin };
        c.up();
        c
    }

    /// Starts the cluster (again) and waits until it accepts connections.
    pub fn up(&self) {
        run(std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-w", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("start"));
    }

    /// Stops the cluster at once (clients see their connections cut).
    pub fn down(&self) {
        run(std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop"));
    }

    /// A URL to this cluster's `postgres` database.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
