//! What one connect tries: the hosts of a multi-host URL in order, each resolved anew
//! (or by the pool's resolver), checked against `target_session_attrs` — including the
//! values tokio-postgres lacks (`primary`, `standby`, `prefer-standby`), checked with
//! `pg_is_in_recovery()` — and the error that says why no host would do.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use poolkit_core::Resolve;
use poolkit_core::credentials::CredentialError;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::chain;

/// libpq's `target_session_attrs`: what kind of server a connection must reach. Set in the
/// URL (`?target_session_attrs=read-write`) or with `P_TARGET_SESSION_ATTRS` (which wins).
/// With several hosts (`postgres://u@a:5432,b:5432/db`) they are tried in order and the
/// first that fits is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionAttrs {
    /// Any server (libpq's default).
    #[default]
    Any,
    /// A server that accepts writes (`transaction_read_only` is off).
    ReadWrite,
    /// A server that refuses writes (`transaction_read_only` is on).
    ReadOnly,
    /// A primary: `pg_is_in_recovery()` is false.
    Primary,
    /// A standby: `pg_is_in_recovery()` is true.
    Standby,
    /// A standby if any host is one, else any server.
    PreferStandby,
}

impl SessionAttrs {
    /// Parses libpq's spelling (`read-write`, `prefer-standby`, …).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            _ => return None,
        })
    }

    /// libpq's spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::PreferStandby => "prefer-standby",
        }
    }

    /// Whether the pool is meant for writes (a standby found on the way means the primary
    /// moved).
    pub(crate) fn wants_primary(self) -> bool {
        matches!(self, Self::ReadWrite | Self::Primary)
    }

    /// Whether the pool is meant for reads from standbys (a read-only error is expected).
    pub(crate) fn wants_standby(self) -> bool {
        matches!(self, Self::ReadOnly | Self::Standby | Self::PreferStandby)
    }

    /// What a server that fits is called, for messages.
    fn wanted(self) -> &'static str {
        match self {
            Self::Any | Self::PreferStandby => "reachable",
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
            Self::Primary => "a primary",
            Self::Standby => "a standby",
        }
    }
}

impl fmt::Display for SessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a server is, as the session check found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) in_recovery: bool,
    pub(crate) read_only: bool,
}

impl Role {
    /// Asks the server (one round trip; only when the attrs are not `any`).
    pub(crate) async fn of(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let rows = client
            .simple_query("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
            .await?;
        let row = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        });
        Ok(Self {
            in_recovery: row.and_then(|r| r.get(0)) == Some("t"),
            read_only: row.and_then(|r| r.get(1)) == Some("on"),
        })
    }

    pub(crate) fn fits(self, attrs: SessionAttrs) -> bool {
        match attrs {
            SessionAttrs::Any | SessionAttrs::PreferStandby => true,
            SessionAttrs::ReadWrite => !self.read_only,
            SessionAttrs::ReadOnly => self.read_only,
            SessionAttrs::Primary => !self.in_recovery,
            SessionAttrs::Standby => self.in_recovery,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match (self.in_recovery, self.read_only) {
            (true, _) => "a standby (in recovery)",
            (false, true) => "a read-only primary",
            (false, false) => "a read-write primary",
        }
    }
}

/// Why a connect failed: the driver's error, no host of the kind asked for, a secret that
/// could not be had, or the connect timeout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The driver's error (network, TLS, startup, authentication), for a single host.
    #[error("{}", chain(.0))]
    Driver(#[source] tokio_postgres::Error),
    /// Every host was tried and none would do.
    #[error("no server among {tried} is {wanted} (target_session_attrs={attrs})")]
    NoServer {
        /// The `target_session_attrs` in force.
        attrs: SessionAttrs,
        /// What kind of server that asks for.
        wanted: &'static str,
        /// Each host tried, with what it was or why it failed.
        tried: String,
        /// The driver's error of the last host that failed with one (its SQLSTATE: an
        /// authentication failure, a server shutting down).
        #[source]
        last: Option<tokio_postgres::Error>,
    },
    /// The password could not be read from its file or provider.
    #[error(transparent)]
    Password(#[from] CredentialError),
    /// The whole connect (TCP, TLS, startup, authentication) took longer than the connect
    /// timeout: a server that accepts TCP and never answers.
    #[error("timed out: no answer within {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// The SQLSTATE of the server's error, if the server answered with one.
    #[must_use]
    pub fn code(&self) -> Option<&SqlState> {
        self.driver().and_then(tokio_postgres::Error::code)
    }

    /// The driver's error, if there was one.
    #[must_use]
    pub fn driver(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Self::Driver(e) => Some(e),
            Self::NoServer { last, .. } => last.as_ref(),
            _ => None,
        }
    }

    /// Whether the server refused the login (wrong password or user: SQLSTATE 28P01 or
    /// 28000).
    #[must_use]
    pub fn is_auth(&self) -> bool {
        self.code().is_some_and(is_auth_code)
    }

    pub(crate) fn no_server(
        attrs: SessionAttrs,
        tried: &[(String, String)],
        last: Option<tokio_postgres::Error>,
    ) -> Self {
        let tried = tried
            .iter()
            .map(|(host, what)| format!("{host} ({what})"))
            .collect::<Vec<_>>()
            .join(", ");
        Self::NoServer {
            attrs,
            wanted: attrs.wanted(),
            tried,
            last,
        }
    }
}

pub(crate) fn is_auth_code(code: &SqlState) -> bool {
    *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
}

/// One place to connect to: a host (name, IP or socket directory) and port, and the
/// address to dial when the URL's `hostaddr` or the pool's resolver gave one.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: Option<Host>,
    pub(crate) port: u16,
    pub(crate) addr: Option<IpAddr>,
}

impl Endpoint {
    /// `host:port`, or `host (addr):port` when dialled by address.
    pub(crate) fn label(&self) -> String {
        let host = match &self.host {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        match (self.addr, host.is_empty()) {
            (Some(a), true) => format!("{a}:{}", self.port),
            (Some(a), false) if host != a.to_string() => format!("{host} ({a}):{}", self.port),
            _ => format!("{host}:{}", self.port),
        }
    }

    /// The settings for this one endpoint: `base` (which has no host) plus its host, port
    /// and address.
    pub(crate) fn config(&self, base: &tokio_postgres::Config) -> tokio_postgres::Config {
        let mut c = base.clone();
        match &self.host {
            Some(Host::Tcp(h)) => {
                c.host(h);
            }
            #[cfg(unix)]
            Some(Host::Unix(p)) => {
                c.host_path(p);
            }
            None => {}
        }
        if let Some(a) = self.addr {
            c.hostaddr(a);
        }
        c.port(self.port);
        c
    }
}

/// The endpoints of a (possibly multi-host) configuration, in the URL's order.
pub(crate) fn endpoints(pg: &tokio_postgres::Config) -> Vec<Endpoint> {
    let hosts = pg.get_hosts();
    let addrs = pg.get_hostaddrs();
    let ports = pg.get_ports();
    let n = hosts.len().max(addrs.len());
    (0..n)
        .map(|i| Endpoint {
            host: hosts.get(i).cloned(),
            addr: addrs.get(i).copied(),
            port: ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432),
        })
        .collect()
}

/// `pg` without its hosts, addresses and ports (and with `any` as tokio-postgres's own
/// session attrs: poolkit checks them), to which each endpoint adds its own.
pub(crate) fn without_hosts(pg: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    if let Some(v) = pg.get_user() {
        c.user(v);
    }
    if let Some(v) = pg.get_password() {
        c.password(v);
    }
    if let Some(v) = pg.get_dbname() {
        c.dbname(v);
    }
    if let Some(v) = pg.get_options() {
        c.options(v);
    }
    if let Some(v) = pg.get_application_name() {
        c.application_name(v);
    }
    c.ssl_mode(pg.get_ssl_mode());
    c.ssl_negotiation(pg.get_ssl_negotiation());
    if let Some(v) = pg.get_connect_timeout() {
        c.connect_timeout(*v);
    }
    if let Some(v) = pg.get_tcp_user_timeout() {
        c.tcp_user_timeout(*v);
    }
    c.keepalives(pg.get_keepalives());
    c.keepalives_idle(pg.get_keepalives_idle());
    if let Some(v) = pg.get_keepalives_interval() {
        c.keepalives_interval(v);
    }
    if let Some(v) = pg.get_keepalives_retries() {
        c.keepalives_retries(v);
    }
    c.channel_binding(pg.get_channel_binding());
    c.load_balance_hosts(pg.get_load_balance_hosts());
    c
}

/// The endpoints to dial for `endpoint`: with a resolver and a host name, one per address
/// it returns (in order); otherwise the endpoint itself (tokio-postgres resolves the name).
pub(crate) async fn resolve(
    endpoint: &Endpoint,
    resolver: Option<&Arc<dyn Resolve>>,
) -> Result<Vec<Endpoint>, String> {
    let (Some(resolver), Some(Host::Tcp(name)), None) = (resolver, &endpoint.host, endpoint.addr)
    else {
        return Ok(vec![endpoint.clone()]);
    };
    if name.parse::<IpAddr>().is_ok() {
        return Ok(vec![endpoint.clone()]);
    }
    let addrs = resolver
        .resolve(name, endpoint.port)
        .await
        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
    if addrs.is_empty() {
        return Err(format!("the resolver returned no address for {name}"));
    }
    Ok(addrs
        .into_iter()
        .map(|a| Endpoint {
            host: endpoint.host.clone(),
            port: a.port(),
            addr: Some(a.ip()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn every_setting_but_the_hosts_is_kept() {
        let url = "postgres://app:s3cret@db.internal:6000/shop?application_name=x&options=-c%20search_path%3Da&connect_timeout=7&keepalives_idle=9&keepalives_interval=3&keepalives_retries=4&tcp_user_timeout=11&channel_binding=require&sslmode=require";
        let pg = tokio_postgres::Config::from_str(url).unwrap();
        let eps = endpoints(&pg);
        assert_eq!(eps.len(), 1);
        let rebuilt = eps[0].config(&without_hosts(&pg));
        assert_eq!(rebuilt, pg, "a setting was lost: {rebuilt:?} vs {pg:?}");
    }

    #[test]
    fn multi_host_urls_list_each_host_with_its_port() {
        let pg = tokio_postgres::Config::from_str("postgres://u@a:5433,b,c:5435/db").unwrap();
        let labels: Vec<String> = endpoints(&pg).iter().map(Endpoint::label).collect();
        assert_eq!(labels, ["a:5433", "b:5432", "c:5435"]);
        let pg = tokio_postgres::Config::from_str("host=a,b port=7000 hostaddr=10.0.0.1,10.0.0.2")
            .unwrap();
        let labels: Vec<String> = endpoints(&pg).iter().map(Endpoint::label).collect();
        assert_eq!(labels, ["a (10.0.0.1):7000", "b (10.0.0.2):7000"]);
    }

    #[test]
    fn session_attrs_parse_and_fit() {
        for s in [
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ] {
            assert_eq!(SessionAttrs::parse(s).unwrap().as_str(), s);
        }
        assert!(SessionAttrs::parse("master").is_none());
        let standby = Role {
            in_recovery: true,
            read_only: true,
        };
        let primary = Role {
            in_recovery: false,
            read_only: false,
        };
        assert!(!standby.fits(SessionAttrs::ReadWrite) && primary.fits(SessionAttrs::ReadWrite));
        assert!(standby.fits(SessionAttrs::Standby) && !primary.fits(SessionAttrs::Standby));
        assert!(standby.fits(SessionAttrs::ReadOnly) && !standby.fits(SessionAttrs::Primary));
        let e = ConnectError::no_server(
            SessionAttrs::ReadWrite,
            &[
                ("a:1".into(), "connection refused".into()),
                ("b:2".into(), standby.describe().into()),
            ],
            None,
        );
        assert_eq!(
            e.to_string(),
            "no server among a:1 (connection refused), b:2 (a standby (in recovery)) is read-write (target_session_attrs=read-write)"
        );
    }
}
