//! Which connect errors retrying cannot fix, for the engine's fail-fast path (the same
//! classification as the PostgreSQL pool's): an exclusive checkout gets the server's
//! reason at once instead of after the acquire timeout.

use std::error::Error as StdError;

use redis::RedisError;

use crate::connector::is_refused_login;
use crate::exclusive::Manager;

/// Whether retrying `e` within the acquire timeout cannot help.
///
/// - Always: a refused login (`WRONGPASS`: a wrong password, or a user that does not
///   exist or is disabled; `NOAUTH`: a server that wants a password and got none) with a
///   password from the URL, and a server certificate that does not verify. A login refused
///   with a rotating secret (a password file, a token provider) is retried: the new secret
///   may be on its way.
/// - While the pool is built (`worked` false): a refused connection (nothing listens).
///
/// Retried: a refused or reset connection once the pool has worked (a restart),
/// `LOADING` (the server is reading its dataset), timeouts.
pub(crate) fn fatal(manager: &Manager, e: &RedisError, worked: bool) -> bool {
    if is_refused_login(e) {
        return !manager.rotates();
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return !worked;
            }
            if io
                .get_ref()
                .is_some_and(|inner| inner.to_string().contains("invalid peer certificate"))
            {
                return true;
            }
        }
        cur = err.source();
    }
    e.kind() == redis::ErrorKind::Io && e.to_string().contains("invalid peer certificate")
}
