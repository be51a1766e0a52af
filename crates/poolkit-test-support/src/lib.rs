//! Ports for the servers tests start as child processes (nginx, PostgreSQL, PgBouncer,
//! redis-server, prometheus), and for addresses where nothing may listen.
//!
//! Binding port 0 and letting go of it finds a port in the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768–60999 by default). Between that release and the
//! child's own bind, any `bind(0)` or outgoing `connect()` on the machine may be handed the
//! same port, and the child cannot start. nginx shows it worst: it listens on its first port,
//! retries the taken one for about 2.5 s, exits, and resets the connections its first port had
//! accepted. That was the fresh-clone CI failure of poolctl's HTTP test ("Connection reset by
//! peer" in the first check), reproduced by starting the same nginx with its second port
//! already bound.
//!
//! These ports come from outside that range (just below it), which the kernel never hands out
//! on its own. Each one is checked free by binding it on every host asked for, and one process
//! never gets the same port twice.
//!
//! A package of its own, a dev-dependency of every crate whose tests start servers, so that
//! there is one copy and cargo rebuilds the tests when it changes. It also holds the one
//! [`PrivateRedis`] (a `redis-server` a test owns) that the root tests and poolkit-redis's
//! share.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

mod redis;
pub use redis::PrivateRedis;

/// How many ports outside the ephemeral range this draws from.
const SPAN: u32 = 8192;

/// The kernel's ephemeral range, `(first, last)` (`net.ipv4.ip_local_port_range`).
#[must_use]
pub(crate) fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(str::parse::<u32>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// The ports to draw from: the `SPAN` ports just below the ephemeral range, or above it when
/// there is no room below (a range that starts near 1024).
fn pool() -> (u32, u32) {
    let (first, last) = ephemeral_range();
    if first >= 1024 + SPAN {
        (first - SPAN, first)
    } else {
        assert!(
            last + 1 + SPAN <= 65536,
            "net.ipv4.ip_local_port_range ({first} {last}) leaves no {SPAN} ports outside it for test servers"
        );
        (last + 1, last + 1 + SPAN)
    }
}

/// A port free on `127.0.0.1` that the kernel will not hand to anyone else (see the module
/// doc), for a child process to bind.
#[must_use]
pub fn child_port() -> u16 {
    child_port_on(&["127.0.0.1"])
}

/// A port free on every one of `hosts` (loopback addresses), as [`child_port`].
///
/// # Panics
/// When every port it draws from is taken, or the ephemeral range leaves none outside it.
#[must_use]
pub fn child_port_on(hosts: &[&str]) -> u16 {
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let (low, high) = pool();
    // Test binaries running at once start at different places (their pid); the threads of
    // one take turns.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(low + start.wrapping_add(n) % SPAN).expect("a port number");
        if hosts.iter().all(|h| TcpListener::bind((*h, port)).is_ok()) {
            return port;
        }
    }
    panic!("no port free on {hosts:?} in {low}..{high}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_for_child_servers_lie_outside_the_ephemeral_range_and_never_repeat() {
        let (first, last) = ephemeral_range();
        let taken: Vec<u16> = (0..64).map(|_| child_port()).collect();
        assert!(
            taken
                .iter()
                .all(|&p| !(first..=last).contains(&u32::from(p))),
            "{taken:?} against the ephemeral range {first}–{last}"
        );
        let mut unique = taken.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), taken.len(), "{taken:?}");
        let two = child_port_on(&["127.0.0.1", "127.0.0.2"]);
        assert!(std::net::TcpListener::bind(("127.0.0.2", two)).is_ok());
    }
}
