//! Helpers shared by the poolctl tests: the real binary, with a clean environment, and
//! the addresses of the real servers (failing, never skipping, when one is absent).

#![allow(dead_code, unreachable_pub)]

use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

/// A marker password: it must never appear in any output.
pub const MARKER: &str = "poolctl_marker_s3cret";

/// `DATABASE_URL` from the environment, or the local default.
pub fn database_url() -> String {
    poolkit_core::env::process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `REDIS_URL` from the environment, or the local default.
pub fn redis_url() -> String {
    poolkit_core::env::process_lookup("REDIS_URL")
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

fn reachable(var: &str, target: &str) {
    let addr = target.parse().ok().or_else(|| {
        std::net::ToSocketAddrs::to_socket_addrs(target)
            .ok()?
            .next()
    });
    let ok = addr.is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok());
    assert!(
        ok,
        "nothing answers at {target}: start the server or point {var} at one"
    );
}

/// The database URL with the marker password in it (the local server trusts `postgres`).
pub fn database_url_with_marker() -> String {
    let url = database_url();
    let config = poolkit_postgres::Config::new(url.clone());
    reachable("DATABASE_URL", &config.target());
    match url.split_once("://") {
        Some((scheme, rest))
            if !rest.split('@').next().unwrap_or("").contains(':') && rest.contains('@') =>
        {
            let (user, host) = rest.split_once('@').unwrap();
            format!("{scheme}://{user}:{MARKER}@{host}")
        }
        _ => url,
    }
}

/// The Redis URL, checked to answer.
pub fn redis_url_checked() -> String {
    let url = redis_url();
    let config = poolkit_redis::Config::new(url.clone());
    reachable("REDIS_URL", &config.target());
    url
}

/// A 127.0.0.1 port nothing listens on: port 1 (tcpmux), never handed out as an
/// ephemeral port, so no test or server started in parallel can take it meanwhile.
pub fn closed_port() -> u16 {
    assert!(
        TcpStream::connect_timeout(&"127.0.0.1:1".parse().unwrap(), Duration::from_secs(1))
            .is_err(),
        "something listens on 127.0.0.1:1; these tests need it closed"
    );
    1
}

/// The poolctl binary with none of the pool variables of this process.
pub fn poolctl(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poolctl"));
    cmd.args(args);
    for var in [
        "DATABASE_URL",
        "DATABASE_URL_TRANSACTION",
        "DATABASE_URL_SESSION",
        "DATABASE_URL_DIRECT",
        "MAX_POOL_SIZE",
        "POOL_WARMUP_SIZE",
        "DATABASE_POOL_SIZE",
        "DATABASE_POOL_MAXSIZE",
        "DATABASE_POOL_TIMEOUT",
        "DATABASE_POOLER",
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_POOL_SIZE",
        "POOLKIT_MONITOR_TOKEN",
        "DATABASE_MAX_CONNECTIONS",
        "SUPAVISOR_POOL_SIZE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs it; returns (exit code, stdout, stderr), and checks that no output holds the marker.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = poolctl(args, env).output().expect("run poolctl");
    let out = String::from_utf8_lossy(&stdout).into_owned();
    let err = String::from_utf8_lossy(&stderr).into_owned();
    assert!(
        !out.contains(MARKER) && !err.contains(MARKER),
        "the password leaked:\n{out}\n{err}"
    );
    (status.code().expect("exit code"), out, err)
}

/// Parses stdout as JSON.
pub fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}
