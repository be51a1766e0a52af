//! HTTP/2 servers that end connections under load, against poolkit's own h2c server (built
//! on the `h2` crate, so it can refuse streams and go away exactly when told):
//! - a graceful `GOAWAY` after every N streams of a connection;
//! - `REFUSED_STREAM` for every stream past N on a connection;
//! - a connection dropped with requests in flight.
//!
//! A refused stream goes out once more on another connection, whatever its method; an
//! idempotent request cut by a `GOAWAY` or a broken connection too; a non-idempotent one
//! fails with `Error::Interrupted` (hyper may have sent it: see `failure.rs`); no POST is
//! ever processed twice. The nginx side is in `nginx.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolkit_http::{Config, Error, HttpVersion, Pool};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the server does to each connection after `after` streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Sends a graceful `GOAWAY` (NO_ERROR) at stream `after`, finishes what it accepted.
    GoAway,
    /// Resets every stream past `after` with `REFUSED_STREAM` (and never goes away: the
    /// client has to move on by itself).
    Refuse,
    /// Reads stream `after` and drops the connection with every stream unanswered.
    Drop,
}

#[derive(Default)]
struct Seen {
    accepted: AtomicU64,
    goaways: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    /// Request id (`x-id`) to how many times a handler processed it.
    processed: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} GOAWAYs, {} refused streams, {} drops, {} ids processed",
            self.accepted.load(SeqCst),
            self.goaways.load(SeqCst),
            self.refused.load(SeqCst),
            self.dropped.load(SeqCst),
            self.processed.lock().unwrap().len()
        )
    }
}

struct H2Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Drop for H2Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn h2_server(fault: Fault, after: u64) -> H2Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen2.accepted.fetch_add(1, SeqCst);
            tokio::spawn(connection(tcp, fault, after, seen2.clone()));
        }
    });
    H2Server { addr, seen, task }
}

async fn connection(tcp: tokio::net::TcpStream, fault: Fault, after: u64, seen: Arc<Seen>) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    let mut streams = 0;
    let mut handlers = tokio::task::JoinSet::new();
    while let Some(accepted) = conn.accept().await {
        let Ok((request, mut respond)) = accepted else {
            break;
        };
        streams += 1;
        if fault == Fault::Refuse && streams > after {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            seen.refused.fetch_add(1, SeqCst);
            continue;
        }
        if fault == Fault::GoAway && streams == after {
            conn.graceful_shutdown();
            seen.goaways.fetch_add(1, SeqCst);
        }
        let id = request
            .headers()
            .get("x-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut body = request.into_body();
        if fault == Fault::Drop && streams == after {
            // Hang up on this request and every other stream in flight. (Its body is not
            // awaited here: only `accept` drives the connection.)
            seen.dropped.fetch_add(1, SeqCst);
            handlers.abort_all();
            return;
        }
        let seen = seen.clone();
        handlers.spawn(async move {
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            *seen
                .processed
                .lock()
                .unwrap()
                .entry(id.clone())
                .or_default() += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
            // The id in a header and no body: the whole response is one HEADERS frame, so
            // a drop never cuts a response already started (that is `Error::Backend`).
            let response = http::Response::builder()
                .header("x-id", id)
                .body(())
                .unwrap();
            let _ = respond.send_response(response, true);
        });
    }
}

fn pool(name: &str, server: &H2Server, size: u32) -> Pool {
    let mut c = Config::new(name);
    c.pool.pool_size = size;
    c.http_version = HttpVersion::Http2;
    c.base_url = Some(format!("http://{}", server.addr));
    c.timeout = Some(Duration::from_secs(10));
    Pool::new(c).unwrap()
}

/// The outcome of one mixed load: GETs and POSTs, each with a unique `x-id`.
#[derive(Debug, Default)]
struct Outcome {
    ok: u64,
    failed_get: Vec<String>,
    interrupted_post: Vec<String>,
    other_post: Vec<String>,
}

/// `tasks` tasks send `per_task` requests each, alternating GET and POST.
async fn load(pool: &Pool, tasks: u64, per_task: u64) -> Outcome {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut out = Outcome::default();
                for i in 0..per_task {
                    let id = format!("{t}-{i}");
                    let post = i % 2 == 1;
                    let req = if post {
                        pool.post("/").body(id.clone())
                    } else {
                        pool.get("/")
                    };
                    match req.header("x-id", &id).send().await {
                        Ok(r) => {
                            let echoed = r.headers().get("x-id").and_then(|v| v.to_str().ok());
                            assert_eq!(echoed, Some(id.as_str()), "a reply for another request");
                            out.ok += 1;
                        }
                        Err(e) if !post => out.failed_get.push(format!("{id}: {e}")),
                        Err(e @ Error::Interrupted { .. }) => {
                            assert!(e.to_string().contains("POST request was in flight"));
                            out.interrupted_post.push(id);
                        }
                        Err(e) => out.other_post.push(format!("{id}: {e:?}")),
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Outcome::default();
    for h in handles {
        let out = h.await.expect("load task panicked");
        all.ok += out.ok;
        all.failed_get.extend(out.failed_get);
        all.interrupted_post.extend(out.interrupted_post);
        all.other_post.extend(out.other_post);
    }
    all
}

fn assert_settled(pool: &Pool) {
    let s = pool.stats();
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
}

/// Ids processed more than once (only POSTs when `posts_only`).
fn processed_twice(seen: &Seen, posts_only: bool) -> Vec<String> {
    let processed = seen.processed.lock().unwrap();
    let is_post = |id: &str| {
        id.rsplit('-')
            .next()
            .and_then(|i| i.parse::<u64>().ok())
            .is_some_and(|i| i % 2 == 1)
    };
    processed
        .iter()
        .filter(|(id, n)| **n > 1 && (!posts_only || is_post(id)))
        .map(|(id, _)| id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_goaway_and_refused_streams_lose_no_request() {
    // A refusing connection serves 1,000 streams first, so that a retry, which goes to the
    // next connection, is not refused again.
    for (fault, after) in [(Fault::GoAway, 50), (Fault::Refuse, 1000)] {
        let server = h2_server(fault, after).await;
        let pool = pool(&format!("h2_{fault:?}").to_lowercase(), &server, 16);
        let start = Instant::now();
        let out = load(&pool, 32, 125).await; // 4,000 requests: 2,000 GET + 2,000 POST
        let took = start.elapsed();
        let seen = &server.seen;
        println!(
            "FIGURES h2 {fault:?} after {after} streams: {} ok of 4000 in {took:.2?}, {} GET failed, {} POST Interrupted; {} connections, {} GOAWAYs, {} refused streams, {} retries",
            out.ok,
            out.failed_get.len(),
            out.interrupted_post.len(),
            seen.accepted.load(SeqCst),
            seen.goaways.load(SeqCst),
            seen.refused.load(SeqCst),
            pool.retries()
        );
        assert!(out.failed_get.is_empty(), "{fault:?}: {:?}", out.failed_get);
        assert!(out.other_post.is_empty(), "typed: {:?}", out.other_post);
        if fault == Fault::Refuse {
            // A refused stream was not processed: retried whatever its method.
            assert!(out.interrupted_post.is_empty(), "{out:?}");
        }
        assert_eq!(out.ok + out.interrupted_post.len() as u64, 4000);
        assert!(seen.accepted.load(SeqCst) >= 4000 / (2 * after), "{seen:?}");
        if fault == Fault::Refuse {
            assert!(seen.refused.load(SeqCst) > 0, "{seen:?}");
            assert!(
                pool.retries() >= seen.refused.load(SeqCst),
                "every refused stream was retried: {} < {seen:?}",
                pool.retries()
            );
        } else {
            assert!(seen.goaways.load(SeqCst) >= 4000 / (2 * after), "{seen:?}");
            assert!(pool.retries() > 0, "GOAWAY cut some requests: {seen:?}");
        }
        // A GET cut by a GOAWAY may have been processed before it is sent again; a POST never.
        let twice = processed_twice(seen, fault == Fault::GoAway);
        assert!(twice.is_empty(), "{fault:?}: processed twice: {twice:?}");
        if fault == Fault::Refuse {
            assert_eq!(seen.processed.lock().unwrap().len(), 4000, "each id once");
        }
        assert_settled(&pool);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_fails_in_flight_posts_with_a_typed_error_only() {
    let server = h2_server(Fault::Drop, 150).await;
    let pool = pool("h2_drop", &server, 16);
    let out = load(&pool, 32, 125).await;
    let seen = &server.seen;
    println!(
        "FIGURES h2 connection dropped after 150 streams: {} ok, {} GET failed, {} POST Interrupted, {} other; {} drops, {} retries",
        out.ok,
        out.failed_get.len(),
        out.interrupted_post.len(),
        out.other_post.len(),
        seen.dropped.load(SeqCst),
        pool.retries()
    );
    assert!(out.failed_get.is_empty(), "{:?}", out.failed_get);
    assert!(out.other_post.is_empty(), "typed: {:?}", out.other_post);
    assert!(
        !out.interrupted_post.is_empty(),
        "some POSTs were in flight at a drop: {seen:?}"
    );
    assert_eq!(
        out.ok + out.interrupted_post.len() as u64,
        4000,
        "every request accounted for"
    );
    assert!(
        processed_twice(seen, true).is_empty(),
        "no POST processed twice (a GET may be: it is retried)"
    );
    assert_settled(&pool);
}
