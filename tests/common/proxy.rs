//! A TCP proxy that can freeze the connections passing through it: bytes are read and
//! dropped in both directions and nothing is closed, as when the peer vanished without a
//! FIN (a dead VM, a network partition, a NAT that forgot the flow). Runs in the test's
//! runtime; its connections end when the runtime does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy: its port, and a switch per connection.
pub struct FreezingProxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    pub accepted: Arc<AtomicU64>,
    /// While set, connections accepted are frozen from the start (a partition).
    cut: Arc<AtomicBool>,
}

impl FreezingProxy {
    /// Listens on 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let (list, count) = (conns.clone(), accepted.clone());
        let cut = Arc::new(AtomicBool::new(false));
        let cut_new = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, SeqCst);
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(cut_new.load(SeqCst)));
                list.lock().unwrap().push(frozen.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, frozen.clone()));
                tokio::spawn(pump(sr, cw, frozen));
            }
        });
        Self {
            port,
            conns,
            accepted,
            cut,
        }
    }

    /// A partition: every connection, open now or opened later, is frozen until [`heal`].
    ///
    /// [`heal`]: FreezingProxy::heal
    pub fn partition(&self) {
        self.cut.store(true, SeqCst);
        self.freeze_all();
    }

    /// Ends a partition for connections opened from now on.
    pub fn heal(&self) {
        self.cut.store(false, SeqCst);
    }

    /// Freezes every connection open now; returns how many.
    pub fn freeze_all(&self) -> usize {
        let conns = self.conns.lock().unwrap();
        for c in conns.iter() {
            c.store(true, SeqCst);
        }
        conns.len()
    }
}

/// Copies `from` to `to` until either side closes; once frozen, reads and drops.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.load(SeqCst) {
            // Swallowed; and the other side never hears of it.
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if frozen.load(SeqCst) {
        // A frozen connection is never closed towards the other side.
        std::future::pending::<()>().await;
    }
}

/// The sockets of this process connected to `port` (by inode, from `/proc/self/fd` and
/// `/proc/net/tcp`), with their keep-alive timer: `Some(seconds until the next probe)` when
/// the kernel runs one (SO_KEEPALIVE on, idle), `None` otherwise.
pub fn keepalive_timers(port: u16) -> Vec<Option<f64>> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut out = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "01" || !inodes.contains(f[9]) {
                continue;
            }
            let remote_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port != Some(port) {
                continue;
            }
            let (tr, when) = f[5].split_once(':').unwrap_or(("0", "0"));
            let ticks = u64::from_str_radix(when, 16).unwrap_or(0);
            #[allow(clippy::cast_precision_loss)]
            out.push((tr == "02").then(|| ticks as f64 / 100.0));
        }
    }
    out
}
