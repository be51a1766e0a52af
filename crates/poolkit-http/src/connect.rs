//! Opening connections: TCP (with keep-alive), rustls with ALPN, and the hyper HTTP/1.1
//! or HTTP/2 handshake. The connection task runs on its own and calls back when it ends.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use poolkit_core::BoxFuture;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::config::{Config, HttpVersion};
use crate::error::BoxError;
use crate::url::Origin;

/// The request body type the pool sends: the whole body in memory.
pub(crate) type Body = Full<Bytes>;

/// Turns a host name into addresses, once for every new connection.
///
/// The pool resolves the name each time it opens a connection, never caching the answer
/// itself, and rotates connections after `P_MAX_LIFETIME` (default 30 min): so when a
/// name starts resolving elsewhere (a scaled-out service, a failover), connections follow
/// it within one lifetime. The default is the system resolver (`getaddrinfo`, which honours
/// `/etc/hosts`); set another with [`crate::Builder::resolver`] (a service-discovery
/// client, a fixed override, a test).
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (tried in order) for a connection on `port`.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
{
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let answer = self(host, port);
        Box::pin(async move { answer })
    }
}

/// The resolver a pool uses: the system's, or one set with [`crate::Builder::resolver`].
#[derive(Clone, Default)]
pub(crate) struct Resolver(pub(crate) Option<Arc<dyn Resolve>>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "custom" } else { "system" })
    }
}

/// A freshly opened connection's request half.
pub(crate) enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// Why a connect failed (the engine's and the multiplexed core's error; shown with its
/// causes).
#[derive(Debug)]
pub(crate) struct ConnectFailed(pub(crate) BoxError);

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// How one origin's connections are opened, by its HTTP/1.1 engine and its HTTP/2 pool
/// alike: the pool's connector, under `P_CONNECT_TIMEOUT`, each connection task's end
/// counted (see [`crate::Pool::tasks_ended`]).
pub(crate) struct Dial {
    connector: Arc<Connector>,
    origin: Origin,
    timeout: Duration,
    /// The variable that sets `timeout`, for the error.
    timeout_var: String,
    tasks_ended: Arc<std::sync::atomic::AtomicU64>,
}

impl Dial {
    pub(crate) fn new(
        connector: Arc<Connector>,
        origin: Origin,
        timeout: Duration,
        timeout_var: String,
        tasks_ended: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Self {
            connector,
            origin,
            timeout,
            timeout_var,
            tasks_ended,
        }
    }

    /// Opens a connection in whichever protocol the server chose, within the connect
    /// timeout; `on_end` runs when the connection's task ends.
    pub(crate) async fn open(
        &self,
        on_end: impl FnOnce() + Send + 'static,
    ) -> Result<(Sender, AbortHandle), ConnectFailed> {
        let count = Arc::clone(&self.tasks_ended);
        let on_end = move || {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            on_end();
        };
        let opening = self.connector.connect(&self.origin, on_end);
        match tokio::time::timeout(self.timeout, opening).await {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(e)) => Err(ConnectFailed(e)),
            Err(_) => Err(ConnectFailed(
                format!(
                    "no connection within {:?} (raise {})",
                    self.timeout, self.timeout_var
                )
                .into(),
            )),
        }
    }
}

/// Opens connections with one configuration.
pub(crate) struct Connector {
    tls: Arc<rustls::ClientConfig>,
    version: HttpVersion,
    tcp_keepalive: Option<Duration>,
    http2_keepalive: Option<Duration>,
    resolver: Resolver,
}

impl Connector {
    pub(crate) fn new(config: &Config, resolver: Resolver) -> Result<Self, String> {
        Ok(Self {
            tls: Arc::new(tls_config(config)?),
            version: config.http_version,
            tcp_keepalive: config.tcp_keepalive,
            http2_keepalive: config.http2_keepalive,
            resolver,
        })
    }
}

/// The rustls client configuration of a pool: webpki roots plus the configured ones, ALPN
/// by HTTP version, the `ring` provider.
pub(crate) fn tls_config(config: &Config) -> Result<rustls::ClientConfig, String> {
    {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for der in &config.root_certificates {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("a root certificate is not valid: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = match config.http_version {
            HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
            HttpVersion::Http2 => vec![b"h2".to_vec()],
        };
        Ok(tls)
    }
}

impl Connector {
    /// Opens a connection to `origin`; `on_close` runs when the connection task ends
    /// (closed by either side or broken). Also returns that task, to abort it.
    pub(crate) async fn connect(
        &self,
        origin: &Origin,
        on_close: impl FnOnce() + Send + 'static,
    ) -> Result<(Sender, AbortHandle), BoxError> {
        let tcp = match &self.resolver.0 {
            None => TcpStream::connect((origin.host.as_str(), origin.port)).await?,
            Some(resolver) => {
                let addrs = resolver.resolve(&origin.host, origin.port).await?;
                if addrs.is_empty() {
                    return Err(
                        format!("the resolver returned no address for {}", origin.host).into(),
                    );
                }
                TcpStream::connect(&addrs[..]).await?
            }
        };
        tcp.set_nodelay(true)?;
        if let Some(idle) = self.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
        }
        if origin.tls {
            let name = ServerName::try_from(origin.host.clone())?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if self.version == HttpVersion::Http2 && !h2 {
                return Err("the server did not agree to HTTP/2 by ALPN (P_HTTP_VERSION=2)".into());
            }
            self.handshake(stream, h2, on_close).await
        } else {
            let h2 = self.version == HttpVersion::Http2;
            self.handshake(tcp, h2, on_close).await
        }
    }

    async fn handshake<I>(
        &self,
        io: I,
        h2: bool,
        on_close: impl FnOnce() + Send + 'static,
    ) -> Result<(Sender, AbortHandle), BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            if let Some(every) = self.http2_keepalive {
                builder
                    .keep_alive_interval(every)
                    .keep_alive_timeout(every.max(Duration::from_secs(5)))
                    .keep_alive_while_idle(true);
            }
            let (sender, conn) = builder.handshake(io).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
                }
                on_close();
            });
            Ok((Sender::H2(sender), task.abort_handle()))
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/1.1 connection ended with an error");
                }
                on_close();
            });
            Ok((Sender::H1(sender), task.abort_handle()))
        }
    }
}
