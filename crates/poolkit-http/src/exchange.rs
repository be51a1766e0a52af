//! The checkout path: queue at the origin's FIFO gate, lease a connection (idle, shared
//! HTTP/2 or new), send, read the whole response, give the connection back; retry (up to 3 times)
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
use crate::failure::{Described, Failure, interrupted, is_broken, is_refused};
use crate::host::{Host, IdleH1, Life, Proto, SharedH2};
use crate::pool::Shared;
use crate::response::Streaming;
use crate::url::Origin;
use crate::{Error, Response};

/// A request ready to go: the body is in memory so it can be sent twice.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) idempotent: bool,
    pub(crate) timeout: Option<Duration>,
    /// Whether the pool's secret default headers (and `Authorization`) go along: false
    /// after a redirect to another host.
    pub(crate) keep_secrets: bool,
}

enum Conn {
    H1(IdleH1),
    /// A stream on a shared connection: its request sender until the request is handed
    /// over, then `None` (see [`send`] for why it is not kept).
    H2(Option<http2::SendRequest<Body>>, Arc<Life>),
}

/// A connection (or a stream on one) held for one exchange.
pub(crate) struct Lease {
    conn: Option<Conn>,
    new: bool,
}

impl Lease {
    /// The connection this lease uses.
    fn life(&self) -> Option<Arc<Life>> {
        match self.conn.as_ref()? {
            Conn::H1(c) => Some(c.life.clone()),
            Conn::H2(_, life) => Some(life.clone()),
        }
    }

    /// The exchange completed: an HTTP/1.1 connection goes back to the idle list.
    pub(crate) fn finish(mut self, shared: &Shared, host: &Host) {
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

impl Lease {
    /// Ends the exchange without giving the connection back: an HTTP/1.1 connection is in
    /// an unknown state and is closed; an HTTP/2 stream just ends.
    fn discard(&mut self) {
        match self.conn.take() {
            Some(Conn::H1(c)) => {
                c.life.end();
                c.life.close(CloseReason::Broken);
                c.life.abort();
            }
            Some(Conn::H2(_, life)) => life.end(),
            None => {}
        }
    }
}

impl Drop for Lease {
    /// Dropped mid-exchange (error, timeout, cancellation): see [`Lease::discard`].
    fn drop(&mut self) {
        self.discard();
    }
}

/// Counts a caller as pending at its origin for as long as it lives.
struct Waiting<'a>(&'a Host);

impl<'a> Waiting<'a> {
    fn new(host: &'a Host) -> Self {
        host.waiting.fetch_add(1, Relaxed);
        Self(host)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

/// Records a request's hold time (from its place to its body read) when it ends; the
/// request counts as `used` through its place under the origin's gate.
pub(crate) struct InUse(Arc<Telemetry>, Instant);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.record_release(self.1.elapsed());
    }
}

/// Runs one request under `P_TIMEOUT` (which also bounds reading the body later).
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
        None => run(shared, &host, &req, None).await,
        Some(after) => {
            let deadline = tokio::time::Instant::now() + after;
            match tokio::time::timeout_at(deadline, run(shared, &host, &req, Some(deadline))).await
            {
                Ok(result) => result,
                Err(_) => Err(request_timeout(shared, &origin, after)),
            }
        }
    }
}

/// `P_TIMEOUT` passed (while waiting for the response or reading its body).
pub(crate) fn request_timeout(shared: &Shared, origin: &Origin, after: Duration) -> Error {
    let pool = &shared.config.pool.name;
    shared.count_error(ErrorKind::Timeout);
    tracing::warn!(pool = %pool, origin = %origin, ?after, "request timed out");
    Error::RequestTimeout {
        pool: pool.clone(),
        origin: origin.to_string(),
        after,
        var: shared.config.timeout_var(),
    }
}

async fn run(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    req: &Prepared,
    deadline_body: Option<tokio::time::Instant>,
) -> Result<Response, Error> {
    let telemetry = &*shared.telemetry;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + shared.config.pool.acquire_timeout;
    let waiting = Waiting::new(host);
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
    let mut lease = match ready_lease(shared, host) {
        Some(lease) => lease,
        None => match tokio::time::timeout_at(deadline, lease(shared, host, None)).await {
            Ok(lease) => lease?,
            Err(_) => return Err(timed_out()),
        },
    };
    drop(waiting);
    telemetry.record_acquire(start.elapsed(), !lease.new);
    let in_use = InUse(Arc::clone(&shared.telemetry), Instant::now());
    let mut retries = 0;
    loop {
        telemetry.request(lease.new);
        let used = lease.life();
        // Over HTTP/2 the request that opened a connection shares it with others: when
        // the connection breaks, that is not this request's doing either.
        let reused = !lease.new || used.as_ref().is_some_and(|l| l.uses() > 1);
        let failure = match send(shared, host, lease, req).await {
            Ok(Head::Full(parts, body, new)) => {
                return Ok(Response::full(
                    parts,
                    req.uri.clone(),
                    body,
                    new,
                    shared,
                    host,
                ));
            }
            Ok(Head::Stream(parts, body, lease)) => {
                // The connection, its gate place and the in-use count stay with the body
                // until it is read to the end (or dropped).
                let new = lease.new;
                let streaming = Streaming {
                    body,
                    lease: Some(lease),
                    shared: Arc::clone(shared),
                    host: Arc::clone(host),
                    _permit: permit,
                    _in_use: in_use,
                    deadline: deadline_body,
                    timeout: req.timeout,
                };
                return Ok(Response::streaming(parts, req.uri.clone(), streaming, new));
            }
            Err(f) => f,
        };
        let retry = retries < MAX_RETRIES
            && match &failure {
                Failure::Refused(_) => true,
                Failure::NotSent(_) => reused,
                Failure::Broken(_) => reused && req.idempotent,
                Failure::Other(_) => false,
            };
        match failure {
            Failure::NotSent(e) | Failure::Broken(e) | Failure::Refused(e) if retry => {
                retries += 1;
                shared.telemetry.record_retry();
                shared.count_error(ErrorKind::Broken);
                tracing::info!(pool = %shared.config.pool.name, origin = %host.origin, error = %e,
                    "the server closed the connection or refused the request before processing it; retrying on a newer connection");
                lease = self::lease(shared, host, Some(used)).await?;
            }
            Failure::Broken(e) if !req.idempotent => {
                shared.count_error(ErrorKind::Broken);
                tracing::warn!(pool = %shared.config.pool.name, origin = %host.origin, method = %req.method, error = %e,
                    "the connection broke with a non-idempotent request in flight; not retried");
                return Err(interrupted(e, &req.method));
            }
            Failure::NotSent(e) | Failure::Broken(e) | Failure::Refused(e) => {
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

/// How many times a request the server did not process (or an idempotent one cut off with
/// its connection) is sent again, each time on a connection opened after the failed one.
/// One is not enough: behind nginx's `keepalive_requests`, a busy client's retry can land
/// on a connection that is itself past its last stream, and gets a second GOAWAY.
const MAX_RETRIES: u32 = 3;

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
            Conn::H2(Some(c.sender), c.life)
        }
    };
    Some(Lease {
        conn: Some(conn),
        new: false,
    })
}

/// A connection for one exchange: an idle HTTP/1.1 one, the shared HTTP/2 one, or a new
/// one. A retry passes the connection that failed as `avoid` (`Some(None)` when unknown):
/// over HTTP/1.1 it then always opens a new connection; over HTTP/2 it takes the shared
/// connection only if that was opened after the failed one. The caller holds a place in
/// the origin's gate.
async fn lease(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    avoid: Option<Option<Arc<Life>>>,
) -> Result<Lease, Error> {
    let fresh = avoid.is_some();
    let avoid = avoid.flatten();
    // A retry takes only a connection opened after the one that failed it: an older one
    // may be about to go away too (nginx sends GOAWAY after `keepalive_requests`).
    let usable = |c: &SharedH2| avoid.as_ref().is_none_or(|a| c.life.younger_than(a));
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
        if let Some(c) = host.shared_h2_if(&shared.limits, usable) {
            return Ok(Lease {
                conn: Some(Conn::H2(Some(c.sender), c.life)),
                new: false,
            });
        }
        let _connecting = host.h2_connect.lock().await;
        if host.proto() == Some(Proto::H1) {
            continue; // learned while waiting for the lock
        }
        if let Some(c) = host.shared_h2_if(&shared.limits, usable) {
            return Ok(Lease {
                conn: Some(Conn::H2(Some(c.sender), c.life)),
                new: false,
            });
        }
        let lease = connect(shared, host).await?;
        if let Some(Conn::H2(Some(sender), life)) = &lease.conn {
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
        let host = Arc::downgrade(host);
        move || {
            // No sender of a dead connection may stay in the pool: see `send`.
            if let Some(host) = host.upgrade() {
                host.forget_h2(&life);
            }
            life.task_ended();
        }
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
            Ok(Ok((sender, task))) => {
                life.set_task(task);
                sender
            }
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
            Conn::H2(Some(sender), life)
        }
    };
    Ok(Lease {
        conn: Some(conn),
        new: true,
    })
}

pub(crate) fn backend(shared: &Shared, host: &Host, e: hyper::Error) -> Error {
    Error::Backend {
        pool: shared.config.pool.name.clone(),
        origin: host.origin.to_string(),
        source: Box::new(Described(e)),
    }
}

/// Bodies announced at most this long are read with the head, so the connection goes
/// back at once (typical REST answers); longer or unannounced ones stream.
const EAGER_BODY: u64 = 64 * 1024;

/// A response head, with its body read (small) or still on the connection.
enum Head {
    Full(http::response::Parts, Bytes, bool),
    Stream(http::response::Parts, hyper::body::Incoming, Lease),
}

/// Sends once and returns the response head, with the body when it is small.
async fn send(
    shared: &Shared,
    host: &Host,
    mut lease: Lease,
    req: &Prepared,
) -> Result<Head, Failure> {
    let h2 = matches!(lease.conn, Some(Conn::H2(..)));
    let mut headers = HeaderMap::with_capacity(shared.headers.len() + req.headers.len());
    for (name, value) in &shared.headers {
        if req.keep_secrets || !(value.is_sensitive() || crate::redirect::is_credential(name)) {
            headers.append(name.clone(), value.clone());
        }
    }
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
    // hyper hands a request to the connection's task through a channel. When the task
    // ends, it answers the requests still queued ("not sent", with the request back), but
    // its drain stops at a send still in progress on another thread (tokio's mpsc), and
    // whatever is queued from there on is answered only when the channel is freed: when
    // the last sender of the connection is dropped. So no exchange keeps a sender while
    // it waits: HTTP/2 lets go of its clone once the request is queued (the pool's shared
    // slot lets go when the task ends, `Host::forget_h2`), and HTTP/1.1, which keeps its
    // connection's only sender to reuse it, lets go of the connection when the task ends
    // first. Holding on made such a request wait out the whole `P_TIMEOUT` (for ever
    // without one): tests/dispatch_race.rs pins that interleaving, for both protocols.
    let sent = match lease.conn.as_mut() {
        Some(Conn::H1(c)) => {
            if let Err(e) = c.sender.ready().await {
                return Err(Failure::NotSent(backend(shared, host, e)));
            }
            let life = Arc::clone(&c.life);
            let pending = c.sender.try_send_request(request);
            let mut pending = std::pin::pin!(pending);
            tokio::select! {
                biased;
                sent = &mut pending => sent,
                () = life.ended() => {
                    lease.discard();
                    pending.await
                }
            }
        }
        Some(Conn::H2(sender, _)) => {
            let Some(mut sender) = sender.take() else {
                unreachable!("a lease sends its request once")
            };
            if let Err(e) = sender.ready().await {
                return Err(Failure::NotSent(backend(shared, host, e)));
            }
            let pending = sender.try_send_request(request);
            drop(sender);
            pending.await
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
            } else if is_refused(&e) {
                Failure::Refused(backend(shared, host, e))
            } else if is_broken(&e) {
                Failure::Broken(backend(shared, host, e))
            } else {
                Failure::Other(backend(shared, host, e))
            });
        }
    };
    let (parts, body) = response.into_parts();
    let announced = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let eager = hyper::body::Body::is_end_stream(&body)
        || req.method == Method::HEAD
        || announced
            .is_some_and(|n| n <= EAGER_BODY.min(shared.config.max_body.unwrap_or(u64::MAX)));
    if !eager {
        return Ok(Head::Stream(parts, body, lease));
    }
    let body = body
        .collect()
        .await
        .map_err(|e| Failure::Other(backend(shared, host, e)))?
        .to_bytes();
    let new = lease.new;
    lease.finish(shared, host);
    Ok(Head::Full(parts, body, new))
}
