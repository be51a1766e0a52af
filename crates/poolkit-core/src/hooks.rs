//! Hooks around a connection's life, the same three in every database adapter (sqlx's
//! `PoolOptions`, deadpool's `Hook`s, bb8's `CustomizeConnection`): `after_connect` (set
//! up a new connection), `before_acquire` (check one before it is handed out) and
//! `after_release` (decide whether one returned is reused). `C` is the adapter's
//! connection, `E` its driver's error.

use std::fmt;
use std::sync::Arc;

use crate::BoxFuture;

/// Runs on every new connection before it serves (`SET search_path`, `CLIENT SETNAME`).
/// An error discards the connection: the connect counts as failed, with this error as its
/// reason.
pub type AfterConnect<C, E> =
    Arc<dyn for<'c> Fn(&'c mut C) -> BoxFuture<'c, Result<(), E>> + Send + Sync>;

/// Runs before a pooled connection is handed out; `false` closes it
/// (`closed{reason="rejected"}`) and the caller gets another, within its acquire timeout.
pub type BeforeAcquire<C> = Arc<dyn for<'c> Fn(&'c mut C) -> BoxFuture<'c, bool> + Send + Sync>;

/// Runs when a connection comes back; `false` closes it instead of reusing it
/// (`closed{reason="rejected"}`). Called from `Drop`, so it cannot wait.
pub type AfterRelease<C> = Arc<dyn Fn(&C) -> bool + Send + Sync>;

/// The hooks of one pool (each optional).
pub struct Hooks<C, E> {
    /// See [`AfterConnect`].
    pub after_connect: Option<AfterConnect<C, E>>,
    /// See [`BeforeAcquire`].
    pub before_acquire: Option<BeforeAcquire<C>>,
    /// See [`AfterRelease`].
    pub after_release: Option<AfterRelease<C>>,
}

impl<C, E> Clone for Hooks<C, E> {
    fn clone(&self) -> Self {
        Self {
            after_connect: self.after_connect.clone(),
            before_acquire: self.before_acquire.clone(),
            after_release: self.after_release.clone(),
        }
    }
}

impl<C, E> Default for Hooks<C, E> {
    fn default() -> Self {
        Self {
            after_connect: None,
            before_acquire: None,
            after_release: None,
        }
    }
}

impl<C, E> fmt::Debug for Hooks<C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("after_connect", &self.after_connect.is_some())
            .field("before_acquire", &self.before_acquire.is_some())
            .field("after_release", &self.after_release.is_some())
            .finish()
    }
}

/// Generates the hook setters (`after_connect`, `before_acquire`, `after_release`) on a
/// builder whose [`Hooks`]`<C, E>` are at `self.<path>`: `hook_setters!(config.hooks, C, E)`.
#[macro_export]
macro_rules! hook_setters {
    ($($path:ident).+, $conn:ty, $err:ty) => {
        /// Runs `hook` on every new connection before it serves; its error discards the
        /// connection (see [`poolkit_core::hooks::AfterConnect`]).
        #[must_use]
        pub fn after_connect<F>(mut self, hook: F) -> Self
        where
            F: for<'c> Fn(&'c mut $conn) -> $crate::BoxFuture<'c, Result<(), $err>>
                + Send
                + Sync
                + 'static,
        {
            self.$($path).+.after_connect = Some(::std::sync::Arc::new(hook));
            self
        }

        /// Runs `hook` before a pooled connection is handed out; `false` closes it and the
        /// caller gets another (see [`poolkit_core::hooks::BeforeAcquire`]).
        #[must_use]
        pub fn before_acquire<F>(mut self, hook: F) -> Self
        where
            F: for<'c> Fn(&'c mut $conn) -> $crate::BoxFuture<'c, bool> + Send + Sync + 'static,
        {
            self.$($path).+.before_acquire = Some(::std::sync::Arc::new(hook));
            self
        }

        /// Runs `hook` when a connection comes back; `false` closes it instead of reusing
        /// it (see [`poolkit_core::hooks::AfterRelease`]).
        #[must_use]
        pub fn after_release<F>(mut self, hook: F) -> Self
        where
            F: Fn(&$conn) -> bool + Send + Sync + 'static,
        {
            self.$($path).+.after_release = Some(::std::sync::Arc::new(hook));
            self
        }
    };
}
