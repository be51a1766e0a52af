//! The request path: an HTTP/1.1 connection from the origin's engine, or a stream on the
//! shared HTTP/2 connection behind the origin's FIFO gate; send, read the whole response
//! (when small), give the connection back; retry (up to 3 times) when a reused keep-alive
//! connection turns out closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use poolkit_core::PoolError;
use poolkit_core::engine::{AcquireError, Checkout};
use poolkit_core::metrics::{CloseReason, ErrorKind};
use poolkit_core::mux::{Lease as MuxLease, MuxError};

use crate::failure::{Described, Failure, interrupted, is_broken, is_refused};
use crate::h1::{self, H1Engine};
use crate::h2::{Connected, H2Mux, H2Pool};
use crate::host::{Host, Proto};
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
    /// An HTTP/1.1 connection checked out of the origin's engine.
    H1(Checkout<h1::Manager>),
    /// One request's place on the origin's HTTP/2 connection (see [`send`] for why the
    /// connection's sender is not kept with it).
    H2(MuxLease<H2Mux>),
}

/// A connection (or a request's place on a shared one) held for one exchange.
pub(crate) struct Lease {
    conn: Option<Conn>,
    new: bool,
}

/// The connection an attempt used, so that a retry avoids it and the ones older.
enum Used {
    /// When the HTTP/1.1 connection was opened.
    H1(Option<Instant>),
    /// The HTTP/2 socket's id (a reopened socket gets a larger one), and whether it had
    /// carried other requests.
    H2(u64, bool),
}

impl Lease {
    fn h1(mut c: Checkout<h1::Manager>) -> Self {
        Self {
            new: c.tracked().uses() == 1,
            conn: Some(Conn::H1(c)),
        }
    }

    fn h2(l: MuxLease<H2Mux>) -> Self {
        Self {
            new: l.first_use(),
            conn: Some(Conn::H2(l)),
        }
    }

    /// The connection this lease uses.
    fn used(&mut self) -> Used {
        match self.conn.as_mut() {
            Some(Conn::H1(c)) => Used::H1(Instant::now().checked_sub(c.tracked().age())),
            Some(Conn::H2(l)) => Used::H2(l.socket_id(), l.uses() > 1),
            None => Used::H1(None),
        }
    }

    /// The exchange completed: an HTTP/1.1 connection goes back to its engine, which keeps
    /// or closes it; an HTTP/2 request gives its place back.
    pub(crate) fn finish(mut self, host: &Host) {
        host.touch();
        self.conn = None;
    }

    /// Ends the exchange without giving the connection back: an HTTP/1.1 connection is in
    /// an unknown state and is closed (its socket at once); an HTTP/2 request just ends.
    fn discard(&mut self) {
        if let Some(Conn::H1(mut c)) = self.conn.take() {
            c.tracked().retire(CloseReason::Broken);
        }
    }
}

impl Drop for Lease {
    /// Dropped mid-exchange (error, timeout, cancellation): see [`Lease::discard`].
    fn drop(&mut self) {
        self.discard();
    }
}

/// Runs one request under `P_TIMEOUT` (which also bounds reading the body later).
pub(crate) async fn execute(shared: &Arc<Shared>, req: Prepared) -> Result<Response, Error> {
    let pool = &shared.config.pool.name;
    if shared.is_closed() {
        return Err(PoolError::closed(pool).into());
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
    PoolError::Deadline {
        pool: pool.clone(),
        what: format!("the request to {origin}"),
        after,
        var: Some(shared.config.request_timeout_var()),
    }
    .into()
}

async fn run(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    req: &Prepared,
    deadline_body: Option<tokio::time::Instant>,
) -> Result<Response, Error> {
    let proto = match host.proto() {
        Some(p) => p,
        None => probe(shared, host).await?,
    };
    let lease = match (proto, &host.h1, host.h2.get()) {
        (Proto::H1, Some(engine), _) => checkout(shared, host, engine, None).await?,
        (Proto::H2, _, Some(pool)) => stream(shared, host, pool, None).await?,
        _ => {
            return Err(PoolError::closed(&shared.config.pool.name).into());
        }
    };
    exchange(shared, host, req, lease, deadline_body).await
}

/// Learns what an origin speaks (TLS with `P_HTTP_VERSION=auto`): one connect, whose
/// connection goes to the HTTP/1.1 engine or starts the HTTP/2 pool. Callers arriving
/// meanwhile wait for it.
async fn probe(shared: &Arc<Shared>, host: &Arc<Host>) -> Result<Proto, Error> {
    let _one = host.probe.lock().await;
    if let Some(p) = host.proto() {
        return Ok(p);
    }
    let mux = shared.h2_mux(&host.origin);
    let connected = mux.open().await.map_err(|f| {
        shared.count_error(ErrorKind::Connect);
        tracing::warn!(pool = %shared.config.pool.name, origin = %host.origin, error = %f, "connect failed");
        connect_error(shared, host, f.0)
    })?;
    // Counted created by the engine or the HTTP/2 pool, which takes it over.
    let proto = match connected {
        Connected::H1(conn) => {
            if let Some(engine) = &host.h1 {
                engine.manager().stash(conn);
            }
            Proto::H1
        }
        Connected::H2(opened) => {
            mux.stash(opened);
            let _ = host.h2.set(shared.h2_pool(mux));
            Proto::H2
        }
    };
    let _ = host.proto.set(proto);
    Ok(proto)
}

/// Sends the request on `lease`, and again on a newer connection when the server did not
/// process it (or an idempotent one was cut off with its connection).
async fn exchange(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    req: &Prepared,
    mut lease: Lease,
    deadline_body: Option<tokio::time::Instant>,
) -> Result<Response, Error> {
    let telemetry = &*shared.telemetry;
    let mut retries = 0;
    loop {
        telemetry.request(lease.new);
        let used = lease.used();
        // Over HTTP/2 the request that opened a connection shares it with others: when
        // the connection breaks, that is not this request's doing either.
        let reused = !lease.new || matches!(used, Used::H2(_, true));
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
                // The connection (HTTP/2: the request's place) stays with the body until
                // it is read to the end (or dropped).
                let new = lease.new;
                let streaming = Streaming {
                    body,
                    lease: Some(lease),
                    shared: Arc::clone(shared),
                    host: Arc::clone(host),
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
                lease = match (used, &host.h1, host.h2.get()) {
                    (Used::H1(born), Some(engine), _) => {
                        checkout(shared, host, engine, Some(born)).await?
                    }
                    (Used::H2(id, _), _, Some(pool)) => {
                        stream(shared, host, pool, Some(id)).await?
                    }
                    _ => return Err(e),
                };
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

/// An HTTP/1.1 connection from the origin's engine (FIFO, one acquire timeout). A retry
/// passes when the failed connection was opened (`Some(None)` when unknown), and gets a
/// connection opened after it: older idle ones may have been closed by the server too
/// (its keep-alive timeout), so they are closed instead of tried.
///
/// A connect that fails while nothing is open at this origin fails the callers waiting
/// at once, with the server's reason, instead of letting them wait out `P_POOL_TIMEOUT`
/// while the engine retries: nothing will come back to them.
async fn checkout(
    shared: &Shared,
    host: &Host,
    engine: &H1Engine,
    avoid: Option<Option<Instant>>,
) -> Result<Lease, Error> {
    loop {
        let mut failed = engine.manager().failed.subscribe();
        failed.mark_unchanged();
        let got = {
            let get = engine.get();
            let mut get = std::pin::pin!(get);
            loop {
                tokio::select! {
                    biased;
                    got = &mut get => break got,
                    changed = failed.changed() => {
                        if changed.is_err() {
                            break get.await;
                        }
                        let failure = failed.borrow_and_update().clone();
                        if let Some(f) = failure
                            && engine.counts().open == 0
                        {
                            return Err(connect_error(shared, host, Box::new(f)));
                        }
                    }
                }
            }
        };
        let mut c = got.map_err(|e| match e {
            AcquireError::Timeout { waited, .. } => {
                tracing::warn!(pool = %shared.config.pool.name, origin = %host.origin, "pool timeout");
                shared.timeout_error(&host.origin, waited)
            }
            AcquireError::Connect(f) => connect_error(shared, host, Box::new(f)),
            _ => PoolError::closed(&shared.config.pool.name).into(),
        })?;
        if let Some(failed_born) = avoid
            && c.tracked().uses() > 1
        {
            let born = Instant::now().checked_sub(c.tracked().age());
            let older = match (born, failed_born) {
                (Some(b), Some(f)) => b <= f,
                _ => true,
            };
            if older {
                c.tracked().retire(CloseReason::Invalid);
                continue;
            }
        }
        return Ok(Lease::h1(c));
    }
}

fn connect_error(shared: &Shared, host: &Host, source: crate::error::BoxError) -> Error {
    PoolError::Connect {
        pool: shared.config.pool.name.clone(),
        backend: "HTTP server",
        target: host.origin.to_string(),
        reason: source.to_string(),
        source: source.into(),
    }
    .into()
}

/// How many times a request the server did not process (or an idempotent one cut off with
/// its connection) is sent again, each time on a connection opened after the failed one.
/// One is not enough: behind nginx's `keepalive_requests`, a busy client's retry can land
/// on a connection that is itself past its last stream, and gets a second GOAWAY.
const MAX_RETRIES: u32 = 3;

/// A request's place on the origin's HTTP/2 connection (the multiplexed core: FIFO, one
/// acquire timeout, connects in the background). A retry passes the id of the socket that
/// failed it and gets a socket opened after it: the failed one (or an older one) is
/// retired, since it may be about to go away too (nginx sends GOAWAY after
/// `keepalive_requests`). A connect failing while no connection is open fails the
/// caller at once with the server's reason.
async fn stream(
    shared: &Shared,
    host: &Host,
    pool: &H2Pool,
    avoid: Option<u64>,
) -> Result<Lease, Error> {
    let started = tokio::time::Instant::now();
    let deadline = started + shared.config.pool.acquire_timeout;
    loop {
        let lease = match pool.try_lease() {
            Some(l) => l,
            None => {
                // While no connection is open, a connect failure ends the wait at once
                // (`wait_ready`); the lease itself is what the caller waits for.
                let ready = pool.wait_ready(deadline.saturating_duration_since(started));
                let leased = tokio::select! {
                    biased;
                    leased = pool.lease_until(deadline) => leased,
                    Err(e @ MuxError::Connect(_)) = ready, if pool.open() == 0 => Err(e),
                };
                leased.map_err(|e| mux_error(shared, host, e, started))?
            }
        };
        if let Some(failed) = avoid
            && lease.socket_id() <= failed
        {
            pool.retire(&lease, CloseReason::Broken);
            drop(lease);
            tokio::task::yield_now().await;
            continue;
        }
        return Ok(Lease::h2(lease));
    }
}

fn mux_error(
    shared: &Shared,
    host: &Host,
    e: MuxError<h1::ConnectFailed>,
    started: tokio::time::Instant,
) -> Error {
    match e {
        MuxError::Connect(f) => connect_error(shared, host, Box::new(f)),
        MuxError::Timeout { .. } => {
            tracing::warn!(pool = %shared.config.pool.name, origin = %host.origin, "pool timeout");
            shared.timeout_error(&host.origin, started.elapsed())
        }
        _ => PoolError::closed(&shared.config.pool.name).into(),
    }
}

/// The HTTP/2 connection ended before the request could be queued on it.
fn closed_error(shared: &Shared, host: &Host) -> Error {
    Error::Backend {
        pool: shared.config.pool.name.clone(),
        origin: host.origin.to_string(),
        source: "the HTTP/2 connection closed before the request was sent".into(),
    }
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
            let ended = Arc::clone(&c.ended);
            let pending = c.sender.try_send_request(request);
            let mut pending = std::pin::pin!(pending);
            tokio::select! {
                biased;
                sent = &mut pending => sent,
                () = ended.wait() => {
                    lease.discard();
                    pending.await
                }
            }
        }
        Some(Conn::H2(l)) => {
            let Some(mut sender) = l.sender() else {
                return Err(Failure::NotSent(closed_error(shared, host)));
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
    lease.finish(host);
    Ok(Head::Full(parts, body, new))
}
