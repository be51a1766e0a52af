//! `reqwest_client(prefix)`: a `reqwest::Client` configured from the same `P_*` variables
//! as a poolkit HTTP pool, for SDKs that take a `reqwest::Client`, with poolkit's
//! metrics wherever reqwest lets them be measured, and registered with the monitor.
//!
//! What reqwest lets us see: connection establishment, through its connector layer
//! (new connections, connect time, connect errors). What it does not: when a connection
//! closes or goes idle, which request uses which connection, and requests themselves
//! (there is no request middleware). So these clients report created connections and
//! connect errors, and no open/idle/used gauges, waits or per-host cap (docs/http.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use poolkit_core::metrics::{HistogramFeed, Publish, names};
use poolkit_core::{Backend, BoxFuture, LatencyHistogram, Monitored, MonitoredPool, PoolStats};

use crate::{Config, Error, HttpVersion};

/// A `reqwest::Client` from `PREFIX_*` variables (see [`Config::from_lookup`]):
/// `P_POOL_SIZE` (idle connections kept per host, as `P_MAX_KEEPALIVE`), `P_IDLE_TIMEOUT`,
/// `P_TIMEOUT`, `P_CONNECT_TIMEOUT`, `P_TCP_KEEPALIVE`, `P_HTTP_VERSION`,
/// `P_HTTP2_KEEPALIVE`, `P_MAX_REDIRECTS`. It registers as the pool `prefix` (lower
/// case) with the monitor.
///
/// # Errors
/// [`Error::Config`] naming the variable for a bad value; [`Error::InvalidRequest`] when
/// reqwest refuses the configuration.
pub fn reqwest_client(prefix: &str) -> Result<reqwest::Client, Error> {
    reqwest_client_with(&Config::from_env(prefix)?)
}

/// Like [`reqwest_client`], from a [`Config`] built in code.
///
/// # Errors
/// As [`reqwest_client`].
pub fn reqwest_client_with(config: &Config) -> Result<reqwest::Client, Error> {
    config.validate()?;
    let invalid = |reason: String| Error::InvalidRequest {
        pool: config.pool.name.clone(),
        reason,
    };
    let tls = crate::connect::tls_config(config).map_err(invalid)?;
    let monitor = Arc::new(ReqwestMonitor::new(config));
    poolkit_core::metrics::join(Arc::downgrade(&monitor) as Weak<dyn Publish>);
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(config.max_keepalive as usize)
        .pool_idle_timeout(config.pool.idle_timeout)
        .connect_timeout(config.connect_timeout)
        .tcp_keepalive(config.tcp_keepalive)
        .http2_keep_alive_interval(config.http2_keepalive)
        .redirect(if config.max_redirects == 0 {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::limited(config.max_redirects as usize)
        })
        .connector_layer(Counting(Arc::clone(&monitor)));
    if let Some(t) = config.timeout {
        builder = builder.timeout(t);
    }
    builder = match config.http_version {
        HttpVersion::Auto => builder,
        HttpVersion::Http1 => builder.http1_only(),
        HttpVersion::Http2 => builder.http2_prior_knowledge(),
    };
    let client = builder.build().map_err(|e| invalid(e.to_string()))?;
    let monitored: Arc<dyn Monitored> = monitor;
    poolkit_core::register(&monitored);
    Ok(client)
}

/// The monitor's view of a reqwest client: what its connector layer counts, sent to the
/// `metrics` facade when a scrape asks ([`Publish`]), not on every connect.
#[derive(Debug)]
struct ReqwestMonitor {
    config: Config,
    created: AtomicU64,
    connect_errors: AtomicU64,
    create_time: LatencyHistogram,
    created_metric: metrics::Counter,
    create_metric: metrics::Histogram,
    errors_metric: metrics::Counter,
    fed: HistogramFeed,
}

impl ReqwestMonitor {
    fn new(config: &Config) -> Self {
        poolkit_core::metrics::describe();
        let labels = [
            (names::LABEL_POOL, config.pool.name.clone()),
            (names::LABEL_BACKEND, Backend::Http.as_str().to_owned()),
        ];
        let mut error_labels = labels.to_vec();
        error_labels.push((names::LABEL_KIND, "connect".to_owned()));
        Self {
            config: config.clone(),
            created: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            create_time: LatencyHistogram::default(),
            created_metric: metrics::counter!(names::CONNECTIONS_CREATED_TOTAL, &labels),
            create_metric: metrics::histogram!(names::CONNECTION_CREATE_SECONDS, &labels),
            errors_metric: metrics::counter!(names::CONNECTION_ERRORS_TOTAL, &error_labels),
            fed: HistogramFeed::default(),
        }
    }
}

impl Publish for ReqwestMonitor {
    fn publish(&self) {
        self.created_metric.absolute(self.created.load(Relaxed));
        self.errors_metric
            .absolute(self.connect_errors.load(Relaxed));
        self.fed.feed(&self.create_time, &self.create_metric);
    }
}

impl MonitoredPool for ReqwestMonitor {
    const PING: &'static str = "nothing";

    fn pool_config(&self) -> &poolkit_core::PoolConfig {
        &self.config.pool
    }

    fn stats(&self) -> PoolStats {
        let mut s = PoolStats::default();
        s.name = self.config.pool.name.clone();
        s.backend = Backend::Http.as_str().to_owned();
        s.max_size = self.config.pool.ceiling();
        s.pool_size = self.config.pool.pool_size;
        s.created = self.created.load(Relaxed);
        s.requests_new = s.created;
        s.errors = vec![("connect".to_owned(), self.connect_errors.load(Relaxed))];
        s.ceiling_var = self.config.pool.ceiling_var();
        s.timeout_var = self.config.timeout_var();
        s
    }

    /// No ping: the client is the SDK's, and its base URL is not known here.
    fn ping_backend(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The connector layer: times and counts every connection reqwest opens.
#[derive(Clone)]
struct Counting(Arc<ReqwestMonitor>);

impl<S> tower::Layer<S> for Counting {
    type Service = CountingService<S>;
    fn layer(&self, inner: S) -> CountingService<S> {
        CountingService {
            inner,
            monitor: Arc::clone(&self.0),
        }
    }
}

/// [`Counting`]'s service.
#[derive(Clone)]
struct CountingService<S> {
    inner: S,
    monitor: Arc<ReqwestMonitor>,
}

impl<S, R> tower::Service<R> for CountingService<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let started = Instant::now();
        let monitor = Arc::clone(&self.monitor);
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let result = connecting.await;
            if result.is_ok() {
                let took = started.elapsed();
                monitor.created.fetch_add(1, Relaxed);
                monitor.create_time.record(took);
            } else {
                monitor.connect_errors.fetch_add(1, Relaxed);
            }
            result
        })
    }
}
