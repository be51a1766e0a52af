//! `Pool::transaction`: run a closure in a transaction that commits on `Ok`, rolls back
//! on `Err`, panic or deadline, and retries serialization failures.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use poolkit_core::PoolError;
use poolkit_core::metrics::CloseReason;
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;

use crate::client::QueryCtx;
use crate::error::Error;
use crate::pool::{Pool, PooledConnection};

/// A transaction on a pooled connection, from [`PooledConnection::transaction`],
/// [`PooledConnection::build_transaction`] or [`Pool::transaction`]: the same query
/// methods and shapes as the connection (and as `tokio_postgres::Transaction`). Dropped
/// without [`commit`](Self::commit), it rolls back. Other `tokio_postgres::Transaction`
/// methods (`copy_in`, `bind`, portals) are reached through `Deref`.
pub struct Transaction<'a> {
    tx: tokio_postgres::Transaction<'a>,
    ctx: &'a QueryCtx,
    generation: u64,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("pool", &self.ctx.pool)
            .finish_non_exhaustive()
    }
}

impl<'a> std::ops::Deref for Transaction<'a> {
    type Target = tokio_postgres::Transaction<'a>;
    fn deref(&self) -> &tokio_postgres::Transaction<'a> {
        &self.tx
    }
}

crate::client::dialect!(Transaction<'_>);

impl<'a> Transaction<'a> {
    pub(crate) fn new(
        tx: tokio_postgres::Transaction<'a>,
        ctx: &'a QueryCtx,
        generation: u64,
    ) -> Self {
        Self {
            tx,
            ctx,
            generation,
        }
    }

    fn parts(&self) -> (&tokio_postgres::Client, bool, &QueryCtx) {
        (self.tx.client(), true, self.ctx)
    }

    /// Notes a statement's outcome: an error that says the server moved retires the pool.
    fn seen<T>(&self, r: &Result<T, tokio_postgres::Error>) {
        if let Err(e) = r {
            self.ctx.failover.seen(e, self.generation);
        }
    }

    /// Commits, like `tokio_postgres::Transaction::commit`.
    ///
    /// # Errors
    /// The server's error.
    pub async fn commit(self) -> Result<(), tokio_postgres::Error> {
        let (ctx, generation) = (self.ctx, self.generation);
        let r = self.tx.commit().await;
        if let Err(e) = &r {
            ctx.failover.seen(e, generation);
        }
        r
    }

    /// Rolls back, like `tokio_postgres::Transaction::rollback`.
    ///
    /// # Errors
    /// The server's error.
    pub async fn rollback(self) -> Result<(), tokio_postgres::Error> {
        self.tx.rollback().await
    }

    /// A nested transaction (a savepoint), like `tokio_postgres::Transaction::transaction`.
    ///
    /// # Errors
    /// The server's error.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        let (ctx, generation) = (self.ctx, self.generation);
        Ok(Transaction::new(
            self.tx.transaction().await?,
            ctx,
            generation,
        ))
    }

    /// A named savepoint, like `tokio_postgres::Transaction::savepoint`.
    ///
    /// # Errors
    /// The server's error.
    pub async fn savepoint<I: Into<String>>(
        &mut self,
        name: I,
    ) -> Result<Transaction<'_>, tokio_postgres::Error> {
        let (ctx, generation) = (self.ctx, self.generation);
        Ok(Transaction::new(
            self.tx.savepoint(name).await?,
            ctx,
            generation,
        ))
    }
}

/// Options for a transaction, like `tokio_postgres::TransactionBuilder`.
#[must_use]
pub struct TransactionBuilder<'a> {
    builder: tokio_postgres::TransactionBuilder<'a>,
    ctx: &'a QueryCtx,
    generation: u64,
}

impl std::fmt::Debug for TransactionBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionBuilder")
            .field("pool", &self.ctx.pool)
            .finish_non_exhaustive()
    }
}

impl<'a> TransactionBuilder<'a> {
    pub(crate) fn new(
        builder: tokio_postgres::TransactionBuilder<'a>,
        ctx: &'a QueryCtx,
        generation: u64,
    ) -> Self {
        Self {
            builder,
            ctx,
            generation,
        }
    }

    /// The isolation level.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.builder = self.builder.isolation_level(level);
        self
    }

    /// `READ ONLY` or `READ WRITE`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.builder = self.builder.read_only(read_only);
        self
    }

    /// `DEFERRABLE` (for serializable read-only transactions).
    pub fn deferrable(mut self, deferrable: bool) -> Self {
        self.builder = self.builder.deferrable(deferrable);
        self
    }

    /// Sends `BEGIN` with the options.
    ///
    /// # Errors
    /// The server's error.
    pub async fn start(self) -> Result<Transaction<'a>, tokio_postgres::Error> {
        let begun = self.builder.start().await;
        if let Err(e) = &begun {
            self.ctx.failover.seen(e, self.generation);
        }
        Ok(Transaction::new(begun?, self.ctx, self.generation))
    }
}

/// How a transaction runs. The defaults are the seeds': READ COMMITTED, 5 s to get a
/// connection, 10 s for the whole transaction, no retries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TxOptions {
    /// Isolation level. Default: READ COMMITTED.
    pub isolation: IsolationLevel,
    /// Longest wait for a connection. Default: 5 s.
    pub wait: Duration,
    /// Deadline for the whole transaction, commit included; also sent to the server as
    /// `SET LOCAL statement_timeout`. Default: 10 s.
    pub timeout: Duration,
    /// Extra attempts after a serialization failure (SQLSTATE 40001) or deadlock (40P01),
    /// with exponential backoff and jitter. Default: 0.
    pub retries: u32,
    /// `READ ONLY` transaction. Default: false.
    pub read_only: bool,
}

impl Default for TxOptions {
    fn default() -> Self {
        Self {
            isolation: IsolationLevel::ReadCommitted,
            wait: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            retries: 0,
            read_only: false,
        }
    }
}

impl TxOptions {
    /// The defaults with another isolation level.
    #[must_use]
    pub fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = level;
        self
    }

    /// The defaults with retries of serialization failures.
    #[must_use]
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The defaults with another deadline.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The defaults with another connection wait.
    #[must_use]
    pub fn wait(mut self, d: Duration) -> Self {
        self.wait = d;
        self
    }
}

/// Closes the connection instead of returning it when a transaction did not finish
/// (panic, deadline): it never goes back to the pool mid-transaction.
struct Unfinished<'a> {
    conn: &'a mut PooledConnection,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.retire(CloseReason::Aborted);
        }
    }
}

fn retryable(e: &Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

impl Pool {
    /// Runs `f` in a transaction: commits when it returns `Ok`, rolls back when it returns
    /// `Err`, panics or passes the deadline, and retries serialization failures when
    /// `opts.retries > 0` (so `f` may run more than once: keep side effects inside the
    /// database).
    ///
    /// # Errors
    /// [`PoolError::Timeout`] when no connection came within `opts.wait`;
    /// [`PoolError::Deadline`] when the transaction ran past `opts.timeout` (rolled back, its
    /// connection closed); the error `f` returned; or a commit error.
    pub async fn transaction<T, F>(&self, opts: TxOptions, mut f: F) -> Result<T, Error>
    where
        F: AsyncFnMut(&Transaction<'_>) -> Result<T, Error>,
    {
        let mut attempt = 0;
        loop {
            match self.transaction_once(&opts, &mut f).await {
                Err(e) if attempt < opts.retries && retryable(&e) => {
                    attempt += 1;
                    self.telemetry().record_retry();
                    let base = Duration::from_millis(10) * 2u32.saturating_pow(attempt.min(8));
                    #[allow(clippy::cast_precision_loss)]
                    let unit =
                        (RandomState::new().hash_one(attempt) >> 11) as f64 / (1u64 << 53) as f64;
                    tracing::debug!(pool = %self.config().pool.name, attempt, "retrying after a serialization failure");
                    tokio::time::sleep(base.mul_f64(1.0 + unit)).await;
                }
                other => return other,
            }
        }
    }

    async fn transaction_once<T, F>(&self, opts: &TxOptions, f: &mut F) -> Result<T, Error>
    where
        F: AsyncFnMut(&Transaction<'_>) -> Result<T, Error>,
    {
        let started = Instant::now();
        let mut conn = match tokio::time::timeout(opts.wait, self.get()).await {
            Ok(conn) => conn?,
            Err(_) => {
                let s = self.stats();
                return Err(PoolError::Timeout {
                    pool: s.name,
                    waited: opts.wait,
                    size: s.max_size,
                    what: "connection".into(),
                    pending: u32::try_from(s.pending).unwrap_or(u32::MAX),
                    size_var: s.ceiling_var,
                    timeout_var: "the transaction's wait".into(),
                }
                .into());
            }
        };
        let deadline = opts.timeout;
        let pool = self.config().pool.name.clone();
        let mut guard = Unfinished {
            conn: &mut conn,
            done: false,
        };
        let work = async {
            let tx = guard
                .conn
                .build_transaction()
                .isolation_level(opts.isolation)
                .read_only(opts.read_only)
                .start()
                .await?;
            let left = deadline
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                left.as_millis()
            ))
            .await?;
            match f(&tx).await {
                Ok(value) => {
                    tx.commit().await?;
                    Ok(value)
                }
                Err(e) => {
                    tx.rollback().await?;
                    Err(e)
                }
            }
        };
        let outcome = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), work).await;
        match outcome {
            Ok(result) => {
                guard.done = true;
                result
            }
            // The transaction future was dropped mid-way: the guard closes the connection.
            Err(_) => Err(PoolError::Deadline {
                pool,
                what: "the transaction (rolled back)".into(),
                after: deadline,
                var: None,
            }
            .into()),
        }
    }
}
