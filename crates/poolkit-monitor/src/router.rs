//! `Monitor`: the state behind the router, and the endpoint handlers.

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use poolkit_core::Monitored;
use serde::Serialize;

use crate::auth::{self, Denied};
use crate::config::{Endpoint, MonitorConfig};
use crate::report::{self, PoolReport, PoolsReport};
use crate::{Error, exporter};

const DASHBOARD: &str = include_str!("dashboard.html");
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; frame-ancestors 'none'";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which pools the monitor reports.
#[derive(Clone)]
enum Source {
    Registry,
    Fixed(Vec<Arc<dyn Monitored>>),
}

struct Inner {
    config: MonitorConfig,
    metrics: Option<PrometheusHandle>,
    source: Source,
}

/// The monitor: its settings, the Prometheus handle it renders and the pools it reports.
/// Cheap to clone. Build the router with [`Monitor::router`] and mount it in your app, or
/// serve it alone with [`Monitor::serve`] / [`Monitor::spawn`].
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("config", &self.inner.config)
            .field("metrics", &self.inner.metrics.is_some())
            .field(
                "pools",
                &match &self.inner.source {
                    Source::Registry => "registry".to_owned(),
                    Source::Fixed(p) => format!("{} fixed", p.len()),
                },
            )
            .finish()
    }
}

/// Builds a [`Monitor`].
#[must_use]
pub struct MonitorBuilder {
    config: MonitorConfig,
    metrics: Option<PrometheusHandle>,
    source: Source,
}

impl fmt::Debug for MonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MonitorBuilder {
    /// Uses these settings (default: [`MonitorConfig::default`]).
    pub fn config(mut self, config: MonitorConfig) -> Self {
        self.config = config;
        self
    }

    /// Renders `/metrics` from this handle: the recorder your application already
    /// installed, or one from [`build_recorder`](crate::build_recorder). Default: the handle
    /// [`install`](crate::install) created, if any.
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Serves no `/metrics` (404), for applications that export metrics another way.
    pub fn without_metrics(mut self) -> Self {
        self.metrics = None;
        self
    }

    /// Reports only these pools instead of every pool in the registry.
    pub fn pools(mut self, pools: Vec<Arc<dyn Monitored>>) -> Self {
        self.source = Source::Fixed(pools);
        self
    }

    /// The monitor.
    #[must_use]
    pub fn build(self) -> Monitor {
        Monitor {
            inner: Arc::new(Inner {
                config: self.config,
                metrics: self.metrics,
                source: self.source,
            }),
        }
    }
}

impl Monitor {
    /// A builder with default settings, the installed Prometheus handle (if any) and the
    /// registry as the source of pools.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder {
            config: MonitorConfig::default(),
            metrics: exporter::installed(),
            source: Source::Registry,
        }
    }

    /// A monitor configured from the `POOLKIT_MONITOR_*` variables, rendering the handle
    /// [`install`](crate::install) created and reporting every registered pool.
    ///
    /// # Errors
    /// [`Error::Config`] naming the invalid variable.
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self::builder().config(MonitorConfig::from_env()?).build())
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &MonitorConfig {
        &self.inner.config
    }

    /// The pools this monitor reports right now.
    #[must_use]
    pub fn pools(&self) -> Vec<Arc<dyn Monitored>> {
        match &self.inner.source {
            Source::Registry => poolkit_core::pools(),
            Source::Fixed(p) => p.clone(),
        }
    }

    /// The router: `GET /`, `/metrics`, `/health`, `/health/ready` (200 when every pool can
    /// take work, 503 when one is down or starved: a Kubernetes readiness probe), `/pools`,
    /// `/pools/{name}`, `/alerts`, and `/alerts.yml` (the Prometheus alert rules for the
    /// configured thresholds).
    /// Mount it in your own axum app with `Router::merge` or `Router::nest`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(dashboard))
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/health/ready", get(ready))
            .route("/pools", get(pools))
            .route("/pools/{name}", get(pool))
            .route("/alerts", get(alerts))
            .route("/alerts.yml", get(alert_rules))
            .fallback(not_found)
            .with_state(self.clone())
    }

    pub(crate) fn guard(&self, endpoint: Endpoint, headers: &HeaderMap) -> Result<(), Denied> {
        if self.inner.config.is_open(endpoint) {
            return Ok(());
        }
        auth::check(headers, self.inner.config.token.as_ref())
    }
}

/// The router of a monitor configured from the environment (see [`Monitor::from_env`]).
///
/// # Errors
/// As [`Monitor::from_env`].
pub fn router() -> Result<Router, Error> {
    Ok(Monitor::from_env()?.router())
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a monitor response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &ErrorBody { error: message })
}

pub(crate) fn unauthorized(denied: Denied) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, denied.message());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"poolkit-monitor\""),
    );
    r
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: try /, /metrics, /health, /health/ready, /pools, /pools/{name}, /alerts or /alerts.yml",
    )
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn metrics(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Err(denied) = m.guard(Endpoint::Metrics, &headers) {
        return unauthorized(denied);
    }
    let Some(handle) = &m.inner.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "no Prometheus recorder: call poolkit_monitor::install() before building pools\n",
        )
            .into_response();
    };
    // Pools count in their own atomics; send the current figures before rendering.
    poolkit_core::metrics::publish_all();
    let mut text = handle.render();
    if !text.contains(poolkit_core::metrics::names::CONNECTIONS_MAX) && !m.pools().is_empty() {
        tracing::warn!(
            "pools exist but export no poolkit_* metrics: they were built before the recorder was installed"
        );
        text.push_str("# poolkit: pools were built before this recorder was installed, so their metrics are missing; call poolkit_monitor::install() before building pools\n");
    }
    (
        [
            (header::CONTENT_TYPE, PROMETHEUS_TEXT),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

async fn health(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Err(denied) = m.guard(Endpoint::Health, &headers) {
        return unauthorized(denied);
    }
    let results = report::health(&m.pools(), m.inner.config.ping_timeout).await;
    let body = report::health_report(&results);
    let status = if body.any_down() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(status, &body)
}

/// `/health/ready`: the same body as `/health`; 503 unless every pool is ready (none down,
/// none starved), so a readiness probe takes an instance whose pools cannot serve out of
/// rotation while `/health` (503 only when down) stays fit for liveness.
async fn ready(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Err(denied) = m.guard(Endpoint::Health, &headers) {
        return unauthorized(denied);
    }
    let results = report::health(&m.pools(), m.inner.config.ping_timeout).await;
    let body = report::health_report(&results);
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

async fn pools(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Err(denied) = m.guard(Endpoint::Pools, &headers) {
        return unauthorized(denied);
    }
    let body = PoolsReport {
        pools: m.pools().iter().map(|p| PoolReport::of(&**p)).collect(),
    };
    json_response(StatusCode::OK, &body)
}

async fn pool(State(m): State<Monitor>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Err(denied) = m.guard(Endpoint::Pools, &headers) {
        return unauthorized(denied);
    }
    match m.pools().into_iter().rev().find(|p| p.name() == name) {
        Some(p) => json_response(StatusCode::OK, &PoolReport::of(&*p)),
        None => {
            let names: Vec<String> = m.pools().iter().map(|p| p.name().to_owned()).collect();
            // Echo the name only when it is a valid pool name, so nothing odd is reflected.
            let shown = if name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                name.as_str()
            } else {
                "(invalid name)"
            };
            error(
                StatusCode::NOT_FOUND,
                &format!("no pool named {shown}; registered: [{}]", names.join(", ")),
            )
        }
    }
}

async fn alerts(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Err(denied) = m.guard(Endpoint::Alerts, &headers) {
        return unauthorized(denied);
    }
    let results = report::health(&m.pools(), m.inner.config.ping_timeout).await;
    json_response(StatusCode::OK, &report::alerts_report(&results))
}

async fn alert_rules(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Err(denied) = m.guard(Endpoint::Alerts, &headers) {
        return unauthorized(denied);
    }
    (
        [
            (header::CONTENT_TYPE, "application/yaml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::rules::alert_rules(&m.inner.config.thresholds),
    )
        .into_response()
}
