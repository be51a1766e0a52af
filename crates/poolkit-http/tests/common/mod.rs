//! Test servers on 127.0.0.1:0: HTTP/1.1, h2c, and h2/HTTP/1.1 over TLS with a
//! certificate made at test time; plus raw TCP servers that stall or drop connections.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http1,
    H2c,
    /// TLS with ALPN offering h2 and http/1.1.
    Tls,
}

/// What a server saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub accepted: AtomicU64,
    pub open: AtomicI64,
    pub max_open: AtomicI64,
    pub requests: AtomicU64,
    pub in_flight: AtomicI64,
    pub max_in_flight: AtomicI64,
}

fn raise(max: &AtomicI64, v: i64) {
    max.fetch_max(v, SeqCst);
}

/// A server running until dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    pub cert_der: Option<Vec<u8>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn url(&self) -> String {
        let scheme = if self.cert_der.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }
}

/// Options for [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub mode: Mode,
    /// Delay before each response.
    pub delay: Duration,
    /// Close a connection idle this long.
    pub idle_close: Option<Duration>,
}

impl Opts {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            delay: Duration::ZERO,
            idle_close: None,
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert DER, rustls server config).
pub fn tls_config() -> (Vec<u8>, Arc<rustls::ServerConfig>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("generate a self-signed certificate");
    let der = cert.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (der, Arc::new(config))
}

/// Starts a hyper server answering `ok` (or, for `/echo`, the request's headers as text).
pub async fn serve(opts: Opts) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Seen::default());
    let (cert_der, tls) = if opts.mode == Mode::Tls {
        let (der, config) = tls_config();
        (Some(der), Some(tokio_rustls::TlsAcceptor::from(config)))
    } else {
        (None, None)
    };
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                seen.accepted.fetch_add(1, SeqCst);
                let open = seen.open.fetch_add(1, SeqCst) + 1;
                raise(&seen.max_open, open);
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_conn(stream, h2, opts, seen.clone()).await;
                        }
                    }
                    None => serve_conn(tcp, opts.mode == Mode::H2c, opts, seen.clone()).await,
                }
                seen.open.fetch_sub(1, SeqCst);
            });
        }
    });
    Server {
        addr,
        seen,
        cert_der,
        task,
    }
}

async fn serve_conn<I>(io: I, h2: bool, opts: Opts, seen: Arc<Seen>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(std::sync::Mutex::new(Instant::now()));
    let busy = Arc::new(AtomicI64::new(0));
    let (last2, busy2) = (last.clone(), busy.clone());
    let service = service_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        let (last, busy) = (last2.clone(), busy2.clone());
        async move {
            busy.fetch_add(1, SeqCst);
            seen.requests.fetch_add(1, SeqCst);
            let n = seen.in_flight.fetch_add(1, SeqCst) + 1;
            raise(&seen.max_in_flight, n);
            if !opts.delay.is_zero() {
                tokio::time::sleep(opts.delay).await;
            }
            let body = if req.uri().path() == "/echo" {
                let mut lines: Vec<String> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                    .collect();
                lines.push(format!("uri: {}", req.uri()));
                lines.join("\n")
            } else {
                "ok".to_owned()
            };
            seen.in_flight.fetch_sub(1, SeqCst);
            *last.lock().unwrap() = Instant::now();
            busy.fetch_sub(1, SeqCst);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        }
    });
    let io = TokioIo::new(io);
    if h2 {
        let _ = http2::Builder::new(TokioExecutor::new())
            .max_concurrent_streams(1000)
            .serve_connection(io, service)
            .await;
        return;
    }
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(Duration::from_millis(20)), if opts.idle_close.is_some() && !shutting => {
                let idle = opts.idle_close.unwrap_or_default();
                if busy.load(SeqCst) == 0 && last.lock().unwrap().elapsed() >= idle {
                    shutting = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// How a raw TCP server treats each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    /// Reads requests and never answers.
    Stall,
    /// On the first connection: answers one request with keep-alive, then reads the next
    /// request and closes without answering (a keep-alive race lost). Later connections
    /// answer every request.
    DropSecond,
}

/// A raw HTTP/1.1 server for faults.
pub async fn serve_raw(kind: Raw) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let n = seen2.accepted.fetch_add(1, SeqCst);
            let seen = seen2.clone();
            tokio::spawn(async move { raw_conn(tcp, kind, n == 0, seen).await });
        }
    });
    Server {
        addr,
        seen,
        cert_der: None,
        task,
    }
}

async fn read_request(tcp: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return true;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn raw_conn(mut tcp: TcpStream, kind: Raw, first: bool, seen: Arc<Seen>) {
    let mut served = 0;
    while read_request(&mut tcp).await {
        seen.requests.fetch_add(1, SeqCst);
        if kind == Raw::Stall {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        if first && served == 1 {
            return; // drop the connection without answering
        }
        served += 1;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    }
}

/// A config for a pool called `name` over `mode`, trusting the server's certificate.
pub fn config(name: &str, server: &Server, size: u32) -> poolkit_http::Config {
    let mut c = poolkit_http::Config::new(name);
    c.pool.pool_size = size;
    c.max_keepalive = size;
    c.base_url = Some(server.url());
    if let Some(der) = &server.cert_der {
        c.root_certificates.push(der.clone());
    }
    c
}

/// A handler for [`serve_fn`]: (method, path and query, headers, body) to (status, JSON).
pub type Handler = fn(&http::Method, &str, &http::HeaderMap, &[u8]) -> (u16, String);

/// An HTTP/1.1 stand-in API answering with `handler`.
pub async fn serve_fn(handler: Handler) -> Server {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            seen2.accepted.fetch_add(1, SeqCst);
            let seen = seen2.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.requests.fetch_add(1, SeqCst);
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let pq = parts
                            .uri
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_owned();
                        let (status, json) = handler(&parts.method, &pq, &parts.headers, &body);
                        let mut resp = Response::new(Full::new(Bytes::from(json)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Server {
        addr,
        seen,
        cert_der: None,
        task,
    }
}
