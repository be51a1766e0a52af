//! A `redis-server` a test owns: on a port from [`crate::child_port`], with its log kept in
//! a file so that a server that does not start says why.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` this test started, on its own port; killed on drop. Its log is kept
/// in a temporary file, removed on drop unless the test is failing.
#[derive(Debug)]
pub struct PrivateRedis {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` with `extra` arguments (such as `--requirepass X`, or
    /// `--cluster-enabled yes`: a cluster node also gets a bus port outside the ephemeral
    /// range) and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not installed, or does not listen within 10 s (the panic
    /// carries the end of its log).
    #[must_use]
    pub fn start(extra: &[&str]) -> Self {
        let port = crate::child_port();
        let log =
            std::env::temp_dir().join(format!("poolkit-redis-{}-{port}.log", std::process::id()));
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            &log.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(redis_bus_port_args(extra));
        let mut s = Self {
            port,
            args,
            log,
            child: None,
        };
        s.up();
        s
    }

    /// `redis://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port with the same arguments, and waits until
    /// it accepts connections.
    ///
    /// # Panics
    /// When it is already running, or does not listen within 10 s.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "the private redis-server is running");
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/services.sh installs it)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > end {
                panic!(
                    "private redis-server on port {} did not start; the end of its log ({}):\n{}",
                    self.port,
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients, like a crash or an OOM kill) and
    /// waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `redis-cli` against this server, with `auth` as the password if given, and
    /// returns what it printed.
    ///
    /// # Panics
    /// When `redis-cli` cannot run.
    pub fn cli(&self, auth: Option<&str>, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("-p").arg(self.port.to_string());
        if let Some(a) = auth {
            cmd.arg("--no-auth-warning").arg("-a").arg(a);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last `lines` lines of the server's log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "private redis-server on port {}: its log is kept at {}",
                self.port,
                self.log.display()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The arguments a `redis-server` started with `extra` needs besides its port: for a
/// cluster node (`--cluster-enabled`) without a `--cluster-port` of its own, a bus port
/// from [`crate::child_port`]. By default the bus port is the port + 10,000, which puts it
/// back inside the ephemeral range, where another socket may hold it and the node then
/// cannot start (fleet_store_ha's cluster test once had a node on 25858 that never
/// listened).
#[must_use]
fn redis_bus_port_args(extra: &[&str]) -> Vec<String> {
    if extra.contains(&"--cluster-enabled") && !extra.contains(&"--cluster-port") {
        vec!["--cluster-port".to_owned(), crate::child_port().to_string()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_node_gets_a_bus_port_outside_the_ephemeral_range() {
        let (first, last) = crate::ephemeral_range();
        let args = redis_bus_port_args(&["--cluster-enabled", "yes"]);
        assert_eq!(args[0], "--cluster-port");
        let bus: u32 = args[1].parse().expect("a port");
        assert!(!(first..=last).contains(&bus), "{bus}");
        assert!(redis_bus_port_args(&["--requirepass", "x"]).is_empty());
        assert!(
            redis_bus_port_args(&["--cluster-enabled", "yes", "--cluster-port", "7"]).is_empty()
        );
    }
}
