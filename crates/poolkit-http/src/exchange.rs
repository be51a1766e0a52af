//! The checkout path: queue at the origin's FIFO gate, lease a connection (idle, shared
//! HTTP/2 or new), send, read the whole response, give the connection back; retry once
//! when a reused keep-alive connection turns out closed.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use poolkit_core::Telemetry;
use poolkit_core::metrics::{CloseReason, ErrorKind};

use crate::connect::{Body, Sender};
use crate::host::{Host, IdleH1, Life, Proto, SharedH2};
use crate::pool::Shared;
use crate::url::Origin;
use crate::{Error, Response};

/// A request ready to go: the body is in memory so it can be sent twice.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) idempotent: bool,
    pub(crate) timeout: Option<Duration>,
}

enum Conn {
    H1(IdleH1),
    H2(http2::SendRequest<Body>, Arc<Life>),
}

/// A connection (or a stream on one) held for one exchange.
struct Lease {
    conn: Option<Conn>,
    new: bool,
}

impl Lease {
    /// The exchange completed: an HTTP/1.1 connection goes back to the idle list.
    fn finish(mut self, shared: &Shared, host: &Host) {
        if let Some(conn) = self.conn.take() {
            match conn {
                Conn::H1(c) => {
                    c.life.end();
                    host.put_idle(c, &shared.limits, shared.is_closed());
                }
                Conn::H2(_, life) => life.end(),
            }
        }
    }
}

impl Drop for Lease {
    /// Dropped mid-exchange (error, timeout, cancellation): an HTTP/1.1 connection is in
    /// an unknown state and is closed; an HTTP/2 stream just ends.
    fn drop(&mut self) {
        match self.conn.take() {
            Some(Conn::H1(c)) => {
                c.life.end();
                c.life.close(CloseReason::Broken);
            }
            Some(Conn::H2(_, life)) => life.end(),
            None => {}
        }
    }
}

/// Counts a caller as pending for as long as it lives.
struct Waiting<'a>(&'a Telemetry, &'a Host);

impl<'a> Waiting<'a> {
    fn new(telemetry: &'a Telemetry, host: &'a Host) -> Self {
        telemetry.wait_started();
        host.waiting.fetch_add(1, Relaxed);
        Self(telemetry, host)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.1.waiting.fetch_sub(1, Relaxed);
        self.0.wait_ended();
    }
}

/// Counts a request in flight (`used`) for as long as it lives.
struct InUse<'a>(&'a Telemetry, Instant);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.released(self.1.elapsed());
    }
}

/// Why one attempt failed.
enum Failure {
    /// The request never left: safe to retry for any method.
    NotSent(Error),
    /// The connection failed while the request was under way.
    Broken(Error),
    /// Anything else.
    Other(Error),
}

/// Runs one request under `P_TIMEOUT`.
pub(crate) async fn execute(shared: &Arc<Shared>, req: Prepared) -> Result<Response, Error> {
    let pool = &shared.config.pool.name;
    if shared.is_closed() {
        return Err(Error::Closed { pool: pool.clone() });
    }
    let origin = Origin::of(&req.uri).map_err(|reason| Error::InvalidRequest {
        pool: pool.clone(),
        reason,
    })?;
    let host = shared.host(&origin);
    match req.timeout {
        None => run(shared, &host, &req).await,
        Some(after) => match tokio::time::timeout(after, run(shared, &host, &req)).await {
            Ok(result) => result,
            Err(_) => {
                shared.count_error(ErrorKind::Timeout);
                tracing::warn!(pool = %pool, origin = %origin, ?after, "request timed out");
                Err(Error::RequestTimeout {
                    pool: pool.clone(),
                    origin: origin.to_string(),
                    after,
                    var: shared.config.timeout_var(),
                })
            }
        },
    }
}

async fn run(shared: &Arc<Shared>, host: &Arc<Host>, req: &Prepared) -> Result<Response, Error> {
    let telemetry = &*shared.telemetry;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + shared.config.pool.acquire_timeout;
    let waiting = Waiting::new(telemetry, host);
    let timed_out = || {
        telemetry.timed_out(start.elapsed());
        tracing::warn!(pool = %shared.config.pool.name, origin = %host.origin, "pool timeout");
        shared.timeout_error(&host.origin, start.elapsed())
    };
    // Fast paths first: no timer when a permit and a connection are free at once.
    let permit = match host.gate.try_enter() {
        Some(p) => p,
        None => match host.gate.enter_until(deadline).await {
            Ok(p) => p,
            Err(poolkit_core::GateError::Closed) => {
                return Err(Error::Closed {
                    pool: shared.config.pool.name.clone(),
                });
            }
            Err(_) => return Err(timed_out()),
        },
    };
    let _permit = permit;
    let mut lease = match ready_lease(shared, host) {
        Some(lease) => lease,
        None => match tokio::time::timeout_at(deadline, lease(shared, host, false)).await {
            Ok(lease) => lease?,
            Err(_) => return Err(timed_out()),
        },
    };
    drop(waiting);
    telemetry.acquired(start.elapsed(), !lease.new);
    let _in_use = InUse(telemetry, Instant::now());
    let mut retried = false;
    loop {
        telemetry.request(lease.new);
        let reused = !lease.new;
        let failure = match send(shared, host, lease, req).await {
            Ok(response) => return Ok(response),
            Err(f) => f,
        };
        let retry = reused
            && !retried
            && match &failure {
                Failure::NotSent(_) => true,
                Failure::Broken(_) => req.idempotent,
                Failure::Other(_) => false,
            };
        match failure {
            Failure::NotSent(e) | Failure::Broken(e) if retry => {
                retried = true;
                shared.retries.fetch_add(1, Relaxed);
                shared.count_error(ErrorKind::Broken);
                tracing::info!(pool = %shared.config.pool.name, origin = %host.origin, error = %e,
                    "a reused keep-alive connection was closed by the server; retrying once on a new connection");
                lease = self::lease(shared, host, true).await?;
            }
            Failure::NotSent(e) | Failure::Broken(e) => {
                shared.count_error(ErrorKind::Broken);
                return Err(e);
            }
            Failure::Other(e) => {
                shared.count_error(ErrorKind::Request);
                return Err(e);
            }
        }
    }
}

/// An idle HTTP/1.1 connection or a stream on the shared HTTP/2 one, when one is free now.
fn ready_lease(shared: &Shared, host: &Host) -> Option<Lease> {
    let conn = match host.proto()? {
        Proto::H1 => {
            let c = host.take_idle(&shared.limits)?;
            c.life.begin();
            Conn::H1(c)
        }
        Proto::H2 => {
            let c = host.shared_h2(&shared.limits)?;
            Conn::H2(c.sender, c.life)
        }
    };
    Some(Lease {
        conn: Some(conn),
        new: false,
    })
}

/// A connection for one exchange: an idle HTTP/1.1 one, the shared HTTP/2 one, or a new
/// one (always new when `fresh`). The caller holds a place in the origin's gate.
async fn lease(shared: &Arc<Shared>, host: &Arc<Host>, fresh: bool) -> Result<Lease, Error> {
    loop {
        if host.proto() == Some(Proto::H1) {
            if !fresh && let Some(c) = host.take_idle(&shared.limits) {
                c.life.begin();
                return Ok(Lease {
                    conn: Some(Conn::H1(c)),
                    new: false,
                });
            }
            return connect(shared, host).await;
        }
        if !fresh && let Some(c) = host.shared_h2(&shared.limits) {
            return Ok(Lease {
                conn: Some(Conn::H2(c.sender, c.life)),
                new: false,
            });
        }
        let _connecting = host.h2_connect.lock().await;
        if host.proto() == Some(Proto::H1) {
            continue; // learned while waiting for the lock
        }
        if !fresh && let Some(c) = host.shared_h2(&shared.limits) {
            return Ok(Lease {
                conn: Some(Conn::H2(c.sender, c.life)),
                new: false,
            });
        }
        let lease = connect(shared, host).await?;
        if let Some(Conn::H2(sender, life)) = &lease.conn {
            let old = host
                .h2
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .replace(SharedH2 {
                    sender: sender.clone(),
                    life: life.clone(),
                });
            if let Some(old) = old {
                old.life.close(CloseReason::Broken);
            }
        }
        return Ok(lease);
    }
}

/// Opens a new connection under `P_CONNECT_TIMEOUT`.
async fn connect(shared: &Arc<Shared>, host: &Arc<Host>) -> Result<Lease, Error> {
    let life = Arc::new(Life::new(shared.telemetry.clone(), host.open.clone()));
    let on_close = {
        let life = life.clone();
        move || life.close(CloseReason::Broken)
    };
    let start = Instant::now();
    let limit = shared.config.connect_timeout;
    let failed = |source: crate::error::BoxError| {
        shared.count_error(ErrorKind::Connect);
        tracing::warn!(pool = %shared.config.pool.name, origin = %host.origin, error = %source, "connect failed");
        Error::Connect {
            pool: shared.config.pool.name.clone(),
            origin: host.origin.to_string(),
            source,
        }
    };
    let sender =
        match tokio::time::timeout(limit, shared.connector.connect(&host.origin, on_close)).await {
            Ok(Ok(sender)) => sender,
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => {
                return Err(failed(
                    format!(
                        "no connection within {limit:?} (raise {})",
                        shared.config.connect_timeout_var()
                    )
                    .into(),
                ));
            }
        };
    life.mark_open(start.elapsed());
    life.begin();
    let conn = match sender {
        Sender::H1(sender) => {
            host.learn(Proto::H1);
            Conn::H1(IdleH1 { sender, life })
        }
        Sender::H2(sender) => {
            host.learn(Proto::H2);
            Conn::H2(sender, life)
        }
    };
    Ok(Lease {
        conn: Some(conn),
        new: true,
    })
}

fn backend(shared: &Shared, host: &Host, e: impl Into<crate::error::BoxError>) -> Error {
    Error::Backend {
        pool: shared.config.pool.name.clone(),
        origin: host.origin.to_string(),
        source: e.into(),
    }
}

fn is_broken(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// Sends once and reads the whole response.
async fn send(
    shared: &Shared,
    host: &Host,
    mut lease: Lease,
    req: &Prepared,
) -> Result<Response, Failure> {
    let h2 = matches!(lease.conn, Some(Conn::H2(..)));
    let mut headers = shared.headers.clone();
    for (name, value) in &req.headers {
        headers.insert(name.clone(), value.clone());
    }
    let uri = if h2 {
        req.uri.clone()
    } else {
        let authority = req.uri.authority().map(|a| match a.port() {
            Some(p) => format!("{}:{p}", a.host()),
            None => a.host().to_owned(),
        });
        if let Some(Ok(v)) = authority.map(HeaderValue::try_from) {
            headers.entry(HOST).or_insert(v);
        }
        req.uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
    };
    let mut request = Request::new(Full::new(req.body.clone()));
    *request.method_mut() = req.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let sent = match lease.conn.as_mut() {
        Some(Conn::H1(c)) => {
            if let Err(e) = c.sender.ready().await {
                return Err(Failure::NotSent(backend(shared, host, e)));
            }
            c.sender.try_send_request(request).await
        }
        Some(Conn::H2(sender, _)) => {
            if let Err(e) = sender.ready().await {
                return Err(Failure::NotSent(backend(shared, host, e)));
            }
            sender.try_send_request(request).await
        }
        None => unreachable!("a lease always holds a connection until finished"),
    };
    let response = match sent {
        Ok(r) => r,
        Err(mut e) => {
            let not_sent = e.take_message().is_some();
            let e = e.into_error();
            return Err(if not_sent {
                Failure::NotSent(backend(shared, host, e))
            } else if is_broken(&e) {
                Failure::Broken(backend(shared, host, e))
            } else {
                Failure::Other(backend(shared, host, e))
            });
        }
    };
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Failure::Other(backend(shared, host, e)))?
        .to_bytes();
    let new = lease.new;
    lease.finish(shared, host);
    Ok(Response::new(
        parts,
        body,
        new,
        shared.config.pool.name.clone(),
        host.origin.to_string(),
    ))
}
