//! `poolctl check` for HTTP pools: connect and TLS/ALPN time, the protocol the server
//! negotiates, and its keep-alive timeout, found by holding an idle connection until the
//! server closes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poolkit_core::{Knob, redact_url};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::check::{ConfigRow, PoolReport, config_rows};
use crate::cli::CheckArgs;
use crate::error::Error;
use crate::facts::ConnectTimes;
use crate::warnings::{dur, opt_dur};

/// What the HTTP server showed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HttpFacts {
    /// `HTTP/2` or `HTTP/1.1` (what ALPN chose over TLS; plain HTTP is HTTP/1.1).
    pub(crate) protocol: String,
    /// Whether the connection uses TLS.
    pub(crate) tls: bool,
    /// TLS handshake time (seconds, median), when TLS.
    pub(crate) tls_handshake: Option<f64>,
    /// The status of one `GET` of the base URL.
    pub(crate) status: u16,
    /// The `Keep-Alive: timeout=N` the server announced, if any.
    pub(crate) keepalive_header: Option<String>,
    /// Seconds an idle connection stayed open before the server closed it (`None`: still
    /// open when the wait ended).
    pub(crate) keepalive_timeout: Option<f64>,
    /// How long the idle connection was held.
    pub(crate) keepalive_waited: f64,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn target(url: &str) -> Result<Target, String> {
    let uri: poolkit_http::http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("expected an http:// or https:// URL".into()),
    };
    let host = uri.host().ok_or("no host")?.to_owned();
    Ok(Target {
        tls,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        host,
    })
}

/// The public web roots, plus the certificates of `--cacert`.
fn roots(cacert: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = cacert {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--cacert {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

fn tls_connector(alpn: &[&[u8]], roots: rustls::RootCertStore) -> tokio_rustls::TlsConnector {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    .unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One connection: TCP connect time, TLS time and the negotiated protocol.
async fn open(
    t: &Target,
    alpn: &[&[u8]],
    roots: &rustls::RootCertStore,
    timeout: Duration,
) -> Result<(Box<dyn Io>, Duration, Option<Duration>, String), String> {
    let started = Instant::now();
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((t.host.as_str(), t.port)))
        .await
        .map_err(|_| format!("no TCP connection within {timeout:?}"))?
        .map_err(|e| format!("connect: {e}"))?;
    let connect = started.elapsed();
    if !t.tls {
        return Ok((Box::new(tcp), connect, None, "HTTP/1.1".into()));
    }
    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
        .map_err(|e| format!("bad server name: {e}"))?;
    let started = Instant::now();
    let stream = tokio::time::timeout(
        timeout,
        tls_connector(alpn, roots.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("no TLS handshake within {timeout:?}"))?
    .map_err(|e| format!("TLS: {e}"))?;
    let handshake = started.elapsed();
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => "HTTP/2",
        _ => "HTTP/1.1",
    };
    Ok((Box::new(stream), connect, Some(handshake), protocol.into()))
}

/// Reads one HTTP/1.1 response (headers, then a `Content-Length` or chunked body).
async fn read_response(io: &mut dyn Io) -> Result<(u16, Option<String>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection before answering".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
    };
    let keepalive = header("keep-alive");
    let mut body = buf.len() - head_end;
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body < len {
            let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            body += n;
        }
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut tail = buf[head_end..].to_vec();
        while !tail.ends_with(b"0\r\n\r\n") {
            let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&chunk[..n]);
        }
    }
    Ok((status, keepalive))
}

/// How often the keep-alive probe says it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The `timeout=N` of a `Keep-Alive` header.
fn header_timeout(header: &str) -> Option<Duration> {
    header.split(',').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("timeout"))
            .then(|| v.trim().parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// Connect times over `n` connects, the protocol, and the keep-alive timeout.
async fn probe(
    url: &str,
    args: &CheckArgs,
    connect_timeout: Duration,
) -> Result<(HttpFacts, ConnectTimes), String> {
    let (n, wait) = (args.connects, args.keepalive_wait);
    let t = target(url)?;
    let roots = roots(args.cacert.as_deref())?;
    let mut connects = Vec::new();
    let mut handshakes = Vec::new();
    let mut protocol = String::new();
    for _ in 0..n {
        let (_, c, h, p) = open(&t, &[b"h2", b"http/1.1"], &roots, connect_timeout).await?;
        connects.push(c + h.unwrap_or_default());
        handshakes.extend(h);
        protocol = p;
    }
    // The keep-alive probe speaks HTTP/1.1 (asked for with ALPN), sends one request and
    // then waits, idle, for the server to close the connection.
    let (mut io, _, _, _) = open(&t, &[b"http/1.1"], &roots, connect_timeout).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: poolctl\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
        t.path, t.host
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (status, keepalive_header) = read_response(&mut *io).await?;
    let idle_since = Instant::now();
    // A `Keep-Alive: timeout=N` header says when the server closes: wait a little past it.
    let wait = keepalive_header
        .as_deref()
        .and_then(header_timeout)
        .map_or(wait, |t| wait.min(t + Duration::from_secs(2)));
    eprintln!(
        "poolctl: {}: holding an idle HTTP connection open to learn the server's keep-alive timeout (up to {} s, --keepalive-wait)",
        t.host,
        wait.as_secs()
    );
    let mut byte = [0u8; 1];
    let closed = loop {
        let left = wait.saturating_sub(idle_since.elapsed());
        match tokio::time::timeout(left.min(PROGRESS_EVERY), io.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => break false,
            Err(_) if left <= PROGRESS_EVERY => break false,
            Err(_) => eprintln!(
                "poolctl: {}: still open after {} s of up to {} s",
                t.host,
                idle_since.elapsed().as_secs(),
                wait.as_secs()
            ),
        }
    };
    let waited = idle_since.elapsed();
    handshakes.sort();
    let facts = HttpFacts {
        protocol,
        tls: t.tls,
        tls_handshake: handshakes
            .get(handshakes.len() / 2)
            .map(Duration::as_secs_f64),
        status,
        keepalive_header,
        keepalive_timeout: closed.then_some(waited.as_secs_f64()),
        keepalive_waited: waited.as_secs_f64(),
    };
    Ok((facts, ConnectTimes::of(connects)))
}

/// The base URL of an HTTP pool: `P_URL`, or `https://PINECONE_HOST` for Pinecone.
fn base_url(
    prefix: &str,
    config: &poolkit_http::Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    config.base_url.clone().or_else(|| {
        lookup(&format!("{prefix}_HOST"))
            .filter(|h| !h.trim().is_empty())
            .map(|h| {
                if h.contains("://") {
                    h
                } else {
                    format!("https://{h}")
                }
            })
    })
}

/// `check` for one HTTP pool.
pub(crate) async fn check_http(
    prefix: &str,
    args: &CheckArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PoolReport, Error> {
    let defaults = poolkit_http::Config::new(&prefix.to_ascii_lowercase());
    let config = poolkit_http::Config::from_lookup(prefix, defaults, lookup)?;
    let url =
        base_url(prefix, &config, lookup).ok_or_else(|| poolkit_core::ConfigError::Missing {
            var: format!("{prefix}_URL"),
            hint: "set it to the API's base URL, such as https://abcdefgh.supabase.co".into(),
        })?;
    let mut rows = config_rows(&config.pool);
    let env_or_default = |suffix: &str| {
        if lookup(&format!("{prefix}_{suffix}")).is_some() {
            "env"
        } else {
            "default"
        }
    };
    rows.insert(
        0,
        ConfigRow {
            setting: "url",
            value: redact_url(&url),
            var: format!("{prefix}_URL"),
            source: "env",
        },
    );
    for (setting, suffix, value) in [
        (
            "max keep-alive",
            "MAX_KEEPALIVE",
            config.max_keepalive.to_string(),
        ),
        ("request timeout", "TIMEOUT", opt_dur(config.timeout)),
        (
            "connect timeout",
            "CONNECT_TIMEOUT",
            dur(config.connect_timeout),
        ),
    ] {
        rows.push(ConfigRow {
            setting,
            value,
            var: format!("{prefix}_{suffix}"),
            source: env_or_default(suffix),
        });
    }
    let mut report = PoolReport {
        name: config.pool.name.clone(),
        backend: "http",
        target: redact_url(&url),
        config: rows,
        postgres: None,
        redis: None,
        http: None,
        connect: None,
        fleet: None,
        warnings: <poolkit_http::Config as poolkit_core::FromEnv>::unknown_vars(prefix),
        failures: Vec::new(),
        unreachable: false,
        ok: false,
    };
    report.warnings.extend(config.contradictions());
    match probe(&url, args, config.connect_timeout).await {
        Err(e) => {
            report.unreachable = true;
            report.failures.push(format!("{}: {e}", redact_url(&url)));
        }
        Ok((facts, times)) => {
            let idle_var = config.pool.var(Knob::IdleTimeout);
            match (facts.keepalive_timeout, config.pool.idle_timeout) {
                (Some(server), idle) if idle.is_none_or(|d| d.as_secs_f64() >= server) => {
                    let suggested = Duration::from_secs_f64((server * 0.8).max(0.5));
                    report.warnings.push(format!(
                        "{idle_var}={} is not below the server's keep-alive timeout (it closed an idle connection after {server:.1} s): a request may go out on a connection the server is closing; set {idle_var}={}ms",
                        opt_dur(idle),
                        suggested.as_millis()
                    ));
                }
                _ => {}
            }
            report.http = Some(facts);
            report.connect = Some(times);
        }
    }
    report.ok = report.failures.is_empty();
    Ok(report)
}
