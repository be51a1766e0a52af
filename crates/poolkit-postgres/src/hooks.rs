//! Hooks around a connection's life ([`poolkit_core::hooks`], the same in every database
//! adapter), for a `tokio_postgres::Client`.

use tokio_postgres::Client;

/// Runs on every new connection before it joins the pool (`SET search_path`, registering
/// types). An error discards the connection: the connect counts as failed, with this
/// error as its reason.
pub type AfterConnect = poolkit_core::hooks::AfterConnect<Client, tokio_postgres::Error>;

/// Runs before a pooled connection is handed out; `false` closes it
/// (`closed{reason="rejected"}`) and the caller gets another, within its acquire timeout.
pub type BeforeAcquire = poolkit_core::hooks::BeforeAcquire<Client>;

/// Runs when a connection comes back; `false` closes it instead of reusing it
/// (`closed{reason="rejected"}`). Called from `Drop`, so it cannot wait.
pub type AfterRelease = poolkit_core::hooks::AfterRelease<Client>;

/// The hooks of one pool (each optional).
pub type Hooks = poolkit_core::hooks::Hooks<Client, tokio_postgres::Error>;
