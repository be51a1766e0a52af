//! Helpers shared by the fault and bad-input suite: the shared servers' URLs (failing with
//! the variable's name when unreachable), free ports, the secret marker, and private
//! servers a test owns so it may stop, kill and restart them: a PostgreSQL cluster, a
//! PgBouncer, a redis-server. Every private server listens on 127.0.0.1 only and is
//! stopped when its guard drops.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolkit_core::env::process_lookup;

mod pg_ha;
mod proxy;
mod redis_ha;
pub use pg_ha::*;
pub use proxy::*;
pub use redis_ha::*;

/// Stands for every password and API key in the suite; must never be printed anywhere.
pub const MARKER: &str = "PKMARKER_9f1c2e7b";

/// `DATABASE_URL`, defaulting to the local test database.
pub fn database_url() -> String {
    process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `REDIS_URL`, defaulting to the local server.
pub fn redis_url() -> String {
    process_lookup("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// The message a test fails with when the shared PostgreSQL cannot be reached.
pub fn pg_unreachable(e: &dyn std::fmt::Display) -> String {
    format!(
        "cannot reach PostgreSQL at DATABASE_URL={} ({e}); start it with scripts/services.sh",
        poolkit_core::redact_url(&database_url())
    )
}

pub use poolkit_test_support::{child_port, child_port_on};

/// A free TCP port on 127.0.0.1 for a private server to bind, or where nothing listens:
/// from outside the kernel's ephemeral range, so no other socket is handed it in the
/// meantime (see `poolkit_test_support`).
pub fn free_port() -> u16 {
    child_port()
}

/// A temporary directory owned by `postgres`, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "poolkit-fault-{what}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The uid and gid of the `postgres` user (PostgreSQL and PgBouncer refuse to run as root).
pub fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a `postgres` user (install PostgreSQL with scripts/services.sh)");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().expect("uid"), f[3].parse().expect("gid"))
}

/// A command that runs as `postgres`.
fn as_postgres(program: &Path) -> Command {
    let (uid, gid) = postgres_ids();
    let mut cmd = Command::new(program);
    cmd.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
    cmd
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/usr/lib/postgresql/<newest>/bin`.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (run scripts/services.sh)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("initdb under /usr/lib/postgresql/*/bin")
}

/// A private PostgreSQL cluster on a free port with trust auth, owned by the test.
pub struct PrivatePg {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    max_connections: u32,
}

impl PrivatePg {
    /// initdb and start; blocking (call from `spawn_blocking` in async tests).
    pub fn start() -> Self {
        Self::start_with_max(60)
    }

    /// initdb and start with this `max_connections`; blocking.
    pub fn start_with_max(max_connections: u32) -> Self {
        let dir = TempDir::new("pg");
        let bin = pg_bin();
        let mut init = as_postgres(&bin.join("initdb"));
        init.arg("-D")
            .arg(dir.0.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        run_ok(init, "initdb");
        let pg = Self {
            port: free_port(),
            dir,
            bin,
            max_connections,
        };
        pg.up();
        pg
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB -c max_connections={}",
            self.port,
            self.dir.0.display(),
            self.max_connections
        );
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.0.join("data"))
            .arg("-l")
            .arg(self.dir.0.join("log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"]);
        run_ok(cmd, "pg_ctl start");
    }

    /// Stops the server (`fast`: sessions are terminated) and waits until it has exited.
    pub fn down(&self) {
        self.stop("fast");
    }

    /// Stops the server as a crash does (`immediate`: sessions get no goodbye, their
    /// sockets just close) and waits until it has exited.
    #[allow(dead_code)] // not every test binary crashes its server
    pub fn crash(&self) {
        self.stop("immediate");
    }

    fn stop(&self, mode: &str) {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-m", mode, "-w", "-t", "30", "stop"]);
        run_ok(cmd, "pg_ctl stop");
    }

    /// The URL, with [`MARKER`] as the password (trust auth ignores it).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{MARKER}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PrivatePg {
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

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_listening(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} on port {port} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A private PgBouncer (transaction mode) on a free port in front of the shared
/// PostgreSQL's `test` database (user `postgres`, trust). Its process is this test's child.
pub struct PrivatePgBouncer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivatePgBouncer {
    pub fn start() -> Self {
        let dir = TempDir::new("pgbouncer");
        let port = free_port();
        let ini = format!(
            "[databases]\ntest = host=127.0.0.1 port=5432 dbname=test user=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {dir}/users.txt\n\
             pool_mode = transaction\ndefault_pool_size = 20\nmax_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\n",
            dir = dir.0.display()
        );
        std::fs::write(dir.0.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        std::fs::write(dir.0.join("users.txt"), "\"postgres\" \"\"\n").expect("write users.txt");
        let mut b = Self {
            port,
            dir,
            child: None,
        };
        b.up();
        b
    }

    /// Starts PgBouncer (again, on the same port) and waits until it listens.
    pub fn up(&mut self) {
        let child = as_postgres(Path::new("pgbouncer"))
            .arg(self.dir.0.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer must be installed (scripts/services.sh installs it)");
        self.child = Some(child);
        wait_listening(self.port, "private pgbouncer");
    }

    /// Kills PgBouncer (SIGKILL: every client and server connection drops) and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The URL, with [`MARKER`] as the password (trust auth ignores it).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{MARKER}@127.0.0.1:{}/test?pgbouncer=true",
            self.port
        )
    }
}

impl Drop for PrivatePgBouncer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A redis-server this test owns (its log kept for a failing test).
pub use poolkit_test_support::PrivateRedis;

/// A `tracing` writer into a shared buffer, to check what the logs say.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A small deterministic random source for choosing cancellation points (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
