//! Hooks around a connection's life ([`poolkit_core::hooks`], the same three as the
//! PostgreSQL pool's), for a `MultiplexedConnection`. `after_connect` runs on shared and
//! exclusive connections; `before_acquire` and `after_release` on exclusive checkouts.

use redis::RedisError;
use redis::aio::MultiplexedConnection;

/// Runs on every new connection, shared and exclusive, before it serves (`CLIENT SETNAME`,
/// `CLIENT TRACKING`). An error discards the connection: the connect counts as failed,
/// with this error as its reason.
pub type AfterConnect = poolkit_core::hooks::AfterConnect<MultiplexedConnection, RedisError>;

/// Runs before an exclusive connection is handed out; `false` closes it
/// (`closed{reason="rejected"}`) and the caller gets another, within its acquire timeout.
pub type BeforeAcquire = poolkit_core::hooks::BeforeAcquire<MultiplexedConnection>;

/// Runs when an exclusive connection comes back; `false` closes it instead of reusing it
/// (`closed{reason="rejected"}`). Called from `Drop`, so it cannot wait.
pub type AfterRelease = poolkit_core::hooks::AfterRelease<MultiplexedConnection>;

/// The hooks of one pool (each optional).
pub type Hooks = poolkit_core::hooks::Hooks<MultiplexedConnection, RedisError>;
