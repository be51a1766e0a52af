//! Name resolution for new connections, replaceable for service discovery and tests.

use std::net::SocketAddr;

use crate::BoxFuture;

/// Turns a host name into addresses, once for every new connection.
///
/// PostgreSQL and Redis pools resolve the name each time they open a connection and never
/// cache the answer themselves, so when a name starts pointing elsewhere (RDS and Aurora
/// move their endpoint's DNS name to the new primary on failover) the connections opened
/// after the move follow it, and a pool that sees the old server stop being the primary
/// retires all of its connections at once. The default is the system resolver
/// (`getaddrinfo`, which honours `/etc/hosts`); set another in the pool's builder (a
/// service-discovery client, a fixed override, a test). A closure
/// `Fn(&str, u16) -> io::Result<Vec<SocketAddr>>` is a resolver.
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
