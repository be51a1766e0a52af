//! The shared path in redis-rs's own shapes: `Pool` implements
//! `redis::aio::ConnectionLike`, so `AsyncCommands` and pipelines run on it; and what a
//! call runs, for query timing.

use poolkit_core::Operation;

use crate::error::Error;
use crate::pool::Pool;

/// What a shared-path call runs, for query timing (never its arguments).
#[derive(Clone, Copy)]
pub(crate) enum Timed<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

impl Timed<'_> {
    pub(crate) fn operation(self) -> Operation {
        match self {
            Self::Cmd(cmd) => match cmd.args_iter().next() {
                Some(redis::Arg::Simple(name)) => Operation::redis(name),
                _ => Operation::OTHER,
            },
            Self::Pipe(_) => Operation::PIPELINE,
        }
    }

    /// The command's name and argument count: keys and values stay out of logs.
    pub(crate) fn statement(self) -> String {
        match self {
            Self::Cmd(cmd) => {
                let args = cmd.args_iter().len();
                match cmd.args_iter().next() {
                    Some(redis::Arg::Simple(name)) if name.iter().all(u8::is_ascii_alphabetic) => {
                        format!(
                            "{} ({} arguments)",
                            String::from_utf8_lossy(name).to_ascii_uppercase(),
                            args.saturating_sub(1)
                        )
                    }
                    _ => format!("(a command with {args} arguments)"),
                }
            }
            Self::Pipe(pipe) => format!("(a pipeline of {} commands)", pipe.len()),
        }
    }
}

/// `redis::aio::ConnectionLike` for a pool whose commands run over shared connections
/// through `self.inner.run` (timed, under the in-flight cap): [`Pool`] and
/// [`crate::ClusterPool`], one implementation. `$db` is the pool's database number.
macro_rules! shared_connection_like {
    ($(#[$doc:meta])* $pool:ty, |$this:ident| $db:expr) => {
        $(#[$doc])*
        impl redis::aio::ConnectionLike for $pool {
            fn req_packed_command<'a>(
                &'a mut self,
                cmd: &'a redis::Cmd,
            ) -> redis::RedisFuture<'a, redis::Value> {
                Box::pin(async move {
                    self.inner
                        .run($crate::commands::Timed::Cmd(cmd), |mut conn| async move {
                            conn.req_packed_command(cmd).await
                        })
                        .await
                        .map_err($crate::commands::into_redis)
                })
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a redis::Pipeline,
                offset: usize,
                count: usize,
            ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
                Box::pin(async move {
                    self.inner
                        .run(
                            $crate::commands::Timed::Pipe(pipeline),
                            |mut conn| async move {
                                conn.req_packed_commands(pipeline, offset, count).await
                            },
                        )
                        .await
                        .map_err($crate::commands::into_redis)
                })
            }

            fn get_db(&self) -> i64 {
                let $this = self;
                $db
            }
        }
    };
}
#[cfg(feature = "cluster")]
pub(crate) use shared_connection_like;

shared_connection_like!(
    /// The shared path as a redis-rs connection: `AsyncCommands` (`get`, `set`, …),
    /// `Cmd::query_async` and pipelines run on the pool as they would on a
    /// `MultiplexedConnection` or `ConnectionManager`, under the same in-flight cap, with the
    /// same broken-connection detection and cancel-safety as [`Pool::query`]. Clone the pool
    /// for a `mut` handle: `let mut con = pool.clone(); con.set("k", 1).await?`.
    ///
    /// Pool errors (timeout, closed) arrive as `RedisError`s whose detail is the poolkit
    /// message; use [`Pool::query`] for the typed [`Error`].
    Pool,
    |pool| pool.inner.db
);

pub(crate) fn into_redis(e: Error) -> redis::RedisError {
    match e {
        Error::Backend(e) => e,
        Error::Pool(poolkit_core::PoolError::Closed { .. }) => {
            redis::RedisError::from((redis::ErrorKind::Client, "pool closed", e.to_string()))
        }
        other => redis::RedisError::from((redis::ErrorKind::Io, "pool error", other.to_string())),
    }
}
