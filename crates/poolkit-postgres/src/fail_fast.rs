//! Which connect errors retrying cannot fix, for the engine's fail-fast path: the caller
//! gets the server's reason at once instead of after the acquire timeout.

use std::error::Error as StdError;

use tokio_postgres::error::SqlState;

use crate::connect::ConnectError;
use crate::manager::Manager;

/// Whether retrying `e` within the acquire timeout cannot help.
///
/// - Always: a refused login (wrong password or role: SQLSTATE class 28, or PgBouncer's
///   `password authentication failed`) with a password from the URL, an unknown database
///   (3D000), no permission to connect (42501), a server certificate that does not
///   verify, and a server without TLS where TLS is required. A login refused with a
///   rotating secret (a password file, a token provider) is retried: the new secret may
///   be on its way.
/// - While the pool is built (`worked` false): a refused connection (nothing listens).
///
/// Retried: a refused or reset connection once the pool has worked (a restart),
/// "the database system is starting up" (57P03), too many connections (53300), timeouts.
pub(crate) fn fatal(manager: &Manager, e: &ConnectError, worked: bool) -> bool {
    let rotates = manager.credentials().source().rotates();
    if let Some(code) = e.code() {
        let login = code.code().starts_with("28")
            || (*code == SqlState::PROTOCOL_VIOLATION
                && e.to_string().contains("password authentication failed"));
        if login {
            return !rotates;
        }
        return *code == SqlState::INVALID_CATALOG_NAME
            || *code == SqlState::INSUFFICIENT_PRIVILEGE;
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return matches!(tls, rustls::Error::InvalidCertificate(_));
            }
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return !worked;
            }
        }
        if err.to_string().contains("server does not support TLS") {
            return true;
        }
        cur = err.source();
    }
    false
}
