//! Opening connections: TCP (with keep-alive), rustls with ALPN, and the hyper HTTP/1.1
//! or HTTP/2 handshake. The connection task runs on its own and calls back when it ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{Config, HttpVersion};
use crate::error::BoxError;
use crate::url::Origin;

/// The request body type the pool sends: the whole body in memory.
pub(crate) type Body = Full<Bytes>;

/// A freshly opened connection's request half.
pub(crate) enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// Opens connections with one configuration.
pub(crate) struct Connector {
    tls: Arc<rustls::ClientConfig>,
    version: HttpVersion,
    tcp_keepalive: Option<Duration>,
    http2_keepalive: Option<Duration>,
}

impl Connector {
    pub(crate) fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            tls: Arc::new(tls_config(config)?),
            version: config.http_version,
            tcp_keepalive: config.tcp_keepalive,
            http2_keepalive: config.http2_keepalive,
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
    /// (closed by either side or broken).
    pub(crate) async fn connect(
        &self,
        origin: &Origin,
        on_close: impl FnOnce() + Send + 'static,
    ) -> Result<Sender, BoxError> {
        let tcp = TcpStream::connect((origin.host.as_str(), origin.port)).await?;
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
    ) -> Result<Sender, BoxError>
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
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
                }
                on_close();
            });
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/1.1 connection ended with an error");
                }
                on_close();
            });
            Ok(Sender::H1(sender))
        }
    }
}
