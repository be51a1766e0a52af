//! A shared socket whose connection ends while commands are being sent on it: every
//! command fails or succeeds within the pool's bounds, none waits for the command
//! timeout.
//!
//! The race (docs/redis.md, "A command stranded on a dead socket"): redis-rs hands each
//! command to its connection task through a bounded tokio channel. When the task ends
//! (the server closed the socket), it drops the channel's receiver, which drains what is
//! queued. A command whose sender took its channel permit just before that drain and
//! stores its message just after is never drained: the message, with the `oneshot`
//! sender its caller waits on, stays in the channel until the last handle of the
//! connection goes, and the caller holds one. It waited for the command timeout (30 s by
//! default) where the pool promises its acquire timeout.
//!
//! The window is a few instructions inside tokio's `Sender::send`, so it cannot be hit on
//! purpose from outside; this test makes it likely instead: a proxy between the pool and
//! a private redis-server cuts every connection many times while 200 tasks send
//! commands, and any command that outlives a cut by more than the bound fails the test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use poolkit_redis::redis;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to a private redis-server that can cut every connection through it at once
/// (the server side stays up, so the pool reconnects through the proxy at once).
struct Proxy {
    port: u16,
    links: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let links = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let links = Arc::clone(&links);
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    let link = tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    links.lock().expect("links").push(link);
                }
            })
        };
        Self {
            port,
            links,
            accept,
        }
    }

    /// Closes every connection through the proxy (the pool sees its sockets end).
    fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_socket_that_ends_never_wait_for_the_command_timeout() {
    let server = PrivateRedis::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let mut config = poolkit_redis::Config::new(format!("redis://127.0.0.1:{}", proxy.port));
    config.pool.name = "t_dead_socket".into();
    config.pool.prefix = "T_DEAD_SOCKET".into();
    config.pool.pool_size = 2;
    config.max_in_flight = 512;
    config.pool.acquire_timeout = Duration::from_millis(800);
    // Long enough that a stranded command is told apart from a slow one at a glance.
    config.command_timeout = Duration::from_secs(10);
    let pool = poolkit_redis::Pool::new(config).await.expect("pool");
    pool.query::<()>(redis::cmd("SET").arg("k").arg("v"))
        .await
        .expect("SET");

    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(AtomicU64::new(0));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (pool, stop, slowest) = (pool.clone(), Arc::clone(&stop), Arc::clone(&slowest));
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = pool.query::<String>(redis::cmd("GET").arg("k")).await;
                let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                slowest.fetch_max(took, Ordering::Relaxed);
                match r {
                    Ok(v) => {
                        assert_eq!(v, "v");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        assert!(
                            e.is_connect()
                                || e.is_timeout()
                                || matches!(e, poolkit_redis::Error::Backend(_)),
                            "{e}"
                        );
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // 100 cuts, 30 ms apart: each ends both sockets while commands are being sent.
    let mut cuts = 0;
    while cuts < 100 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        if pool.stats().open > 0 {
            proxy.cut();
            cuts += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let all_done = async {
        for t in tasks {
            t.await.expect("task");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all_done)
        .await
        .expect("every task ends");
    let slowest = Duration::from_micros(slowest.load(Ordering::Relaxed));
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} ok, {failed} failed, slowest {slowest:?}, {cuts} cuts");
    assert!(ok > 1000, "{ok} ok, {failed} failed");
    assert!(
        slowest < Duration::from_secs(2),
        "a command took {slowest:?} ({ok} ok, {failed} failed over {cuts} cuts): it was stranded on a socket that had ended"
    );
}

/// A socket whose connection ends while no command uses it is found dead by its own
/// probe and reopened: the first command after the cut goes to a live socket. (Before the
/// probe, only a command that failed on a dead socket retired it; one stranded there had
/// nothing to end its wait but the command timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_whose_connection_ended_is_reopened_before_anyone_uses_it() {
    let server = PrivateRedis::start(&[]);
    let proxy = Proxy::start(server.port).await;
    let mut config = poolkit_redis::Config::new(format!("redis://127.0.0.1:{}", proxy.port));
    config.pool.name = "t_idle_dead".into();
    config.pool.prefix = "T_IDLE_DEAD".into();
    config.pool.pool_size = 2;
    config.pool.acquire_timeout = Duration::from_millis(800);
    let pool = poolkit_redis::Pool::new(config).await.expect("pool");
    until_open(&pool, 2).await;
    proxy.cut();
    let started = Instant::now();
    let reopened = async {
        while pool.reconnects() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), reopened)
        .await
        .expect("both sockets found dead and reopened without a command");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let s = pool.stats();
    assert_eq!(
        (s.closed_by("broken"), s.errors_by("request")),
        (2, 0),
        "{s:?}"
    );
    let v: Option<String> = pool
        .query(redis::cmd("GET").arg("nothing"))
        .await
        .expect("the first command after the cut is served");
    assert_eq!(v, None);
}
