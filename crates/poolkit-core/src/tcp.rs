//! TCP keep-alive settings the database adapters (PostgreSQL, Redis) share, so a peer that
//! vanished without a FIN (a half-open socket) is found in the same time everywhere.

use std::time::Duration;

/// Idle time before the first TCP keep-alive probe (`P_TCP_KEEPALIVE`).
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// `TCP_USER_TIMEOUT`: data unacknowledged this long closes the socket
/// (`P_TCP_USER_TIMEOUT`).
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between TCP keep-alive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keep-alive probes before the socket is closed.
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;
