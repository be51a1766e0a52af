//! Statements on the pool itself (`pool.query(…)`, as sqlx's `&Pool` is an executor):
//! pipelined over the shared connections, or run on an exclusive checkout when shared
//! connections are off, not open, or all stalled behind slow statements
//! (`P_SHARED_SPILL`). On a shared connection every statement goes as one unnamed, typed
//! statement (one round trip, no named statement on the server, so it is safe behind a
//! transaction-mode pooler); its shape is learned once per SQL text on an exclusive
//! checkout.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use poolkit_core::PoolError;
use poolkit_core::metrics::CloseReason;
use poolkit_core::mux::{Lease, MuxError};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, SimpleQueryMessage};

use crate::error::Error;
use crate::pool::{Pool, PooledConnection};
use crate::session_state::sql_facts;
use crate::shared::{PgMux, Run, Shared};
use crate::statement::{PoolerRefusal, Shape, Source, ToStatement, refuse};

/// Where one statement runs.
enum Route<'a> {
    /// On a shared connection; `alone`: it found the connection idle. The pool's shared
    /// side is borrowed, not cloned: an `Arc` count that every statement on every thread
    /// bumps and drops is a cache line the cores pass back and forth.
    Shared(Lease<PgMux>, &'a Shared, bool),
    Exclusive(Box<PooledConnection>),
}

/// A statement on a shared connection being timed (see [`Pool::finish`]).
struct Timer {
    op: poolkit_core::Operation,
    started: poolkit_core::QueryStart,
    /// The server generation it started in (a failover seen in its error retires the
    /// connections of that generation only).
    generation: u64,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// One statement on the pool: refused when it would leave session state, then run on a
/// checkout (`conn.$exclusive`) or pipelined, typed and unnamed, on a shared connection
/// (`lease.$shared`), timed either way.
macro_rules! on_pool {
    ($self:ident, $statement:ident, $params:ident, $exclusive:ident, $shared:ident) => {{
        let source = $statement.__source();
        let operation = match sql_of(&source) {
            Some(sql) => $self.refuse_session_state(sql)?,
            None => poolkit_core::Operation::OTHER,
        };
        match $self.route(sql_of(&source)).await? {
            Route::Exclusive(conn) => {
                let started = std::time::Instant::now();
                let r = conn.$exclusive($statement, $params).await;
                $self.observed_exclusive(source, started.elapsed());
                r.map_err(|e| $self.exclusive_error(e))
            }
            Route::Shared(lease, shared, alone) => {
                let (sql, shape) = $self.plan(source).await?;
                let typed = $self.typed(&lease, &shape, $params).await?;
                let timer = $self.timer(&source, operation);
                let r = lease.$shared(sql, &typed).await;
                $self.finish(lease, shared, alone, source, timer, r)
            }
        }
    }};
}

impl Pool {
    /// The shared side, started at the first statement on the pool (a pool used only
    /// through `get()` opens no shared connection).
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.shared()
    }

    async fn route(&self, sql: Option<&str>) -> Result<Route<'_>, Error> {
        let Some(shared) = self.shared() else {
            // Boxed here and below: a checkout's future is some 1,500 bytes, which every
            // statement's future would carry (and its caller move) for a path that the
            // pipelined statements take only now and then.
            return Ok(Route::Exclusive(Box::new(Box::pin(self.get()).await?)));
        };
        if let Some(confirmed) = sql.and_then(|sql| shared.slow.slow(sql)) {
            // Known to be slow: on an idle shared connection (it holds up nobody), else
            // on a checkout.
            if let Some(lease) = shared.mux.try_lease_idle() {
                // Nobody queues behind it: the connection counts as stalled meanwhile.
                return Ok(Route::Shared(lease, shared, true));
            }
            shared.spilled.fetch_add(1, Relaxed);
            return Box::pin(self.checkout(shared, confirmed)).await;
        }
        if shared.queue_long() {
            // Statements confirmed slow wait for a checkout (the checkouts are all
            // busy): this one waits its turn behind them (first come, first served, as
            // on an exclusive pool) rather than overtake them on a shared connection.
            // Overtaking would not serve them any sooner; in a closed loop it only piles
            // the callers' whole wait onto them, up to the acquire timeout
            // (docs/postgres.md). It does not count as waiting itself, so a pool of fast
            // statements is back on its shared connections as soon as the ones it
            // follows have their checkouts.
            shared.spilled.fetch_add(1, Relaxed);
            return Box::pin(self.checkout(shared, false)).await;
        }
        // A connection that is not stalled, judged in the step that claims it: a
        // known-slow statement taking the connection a moment before cannot have this one
        // queue behind it.
        if let Some(lease) = shared.mux.try_lease_flowing() {
            let alone = lease.socket_in_flight() == 1;
            return Ok(Route::Shared(lease, shared, alone));
        }
        if shared.mux.all_stalled(shared.spill) {
            shared.spilled.fetch_add(1, Relaxed);
            shared.stalled.fetch_add(1, Relaxed);
            return Box::pin(self.checkout(shared, false)).await;
        }
        // No room, or the shared connections are (re)opening: wait in line for them.
        match shared.mux.lease(self.config().pool.acquire_timeout).await {
            Ok(lease) => {
                let alone = lease.socket_in_flight() == 1;
                Ok(Route::Shared(lease, shared, alone))
            }
            Err(MuxError::Closed) => Err(PoolError::closed(&self.config().pool.name).into()),
            Err(MuxError::Timeout {
                connect: Some(e), ..
            }) => Err(crate::pool::connect_error(self.config(), e)),
            Err(_) => Err(PoolError::timeout(
                &self.config().pool,
                self.config().pool.acquire_timeout,
                shared.mux.pending() as u64,
                "connection",
            )
            .into()),
        }
    }

    /// A statement on the pool takes a checkout; `counted`: it is confirmed slow (see
    /// `SlowStatements::slow`), and the statements that follow wait behind it while it
    /// waits. (One that spilled because every shared connection stalled is not followed:
    /// the stall passes in milliseconds, and on a busy machine it comes often enough that
    /// following would keep a pool of fast statements on checkouts.)
    async fn checkout(&self, shared: &Shared, counted: bool) -> Result<Route<'_>, Error> {
        let _in_line = counted.then(|| shared.in_line());
        Ok(Route::Exclusive(Box::new(self.get().await?)))
    }

    /// Refuses `sql` when it would leave session state on a shared connection; else its
    /// `operation` label, read in the same look at the text ([`sql_facts`]).
    fn refuse_session_state(&self, sql: &str) -> Result<poolkit_core::Operation, Error> {
        let facts = sql_facts(sql);
        match facts.refusal {
            Some(statement) if self.inner.shared_enabled() => Err(Error::SessionState {
                pool: self.config().pool.name.clone(),
                statement,
            }),
            _ => Ok(facts.operation),
        }
    }

    /// The SQL and shape a shared connection runs `source` with.
    async fn plan<'a>(&self, source: Source<'a>) -> Result<(&'a str, Arc<Shape>), Error> {
        match source {
            Source::Sql(sql) => Ok((sql, self.shape_of(sql).await?)),
            Source::Pooled(st) => match (st.shape(), st.as_named()) {
                (Some(shape), _) => Ok((st.sql(), Arc::clone(shape))),
                (None, Some(named)) => Ok((st.sql(), Arc::new(Shape::of(named)))),
                (None, None) => Ok((st.sql(), self.shape_of(st.sql()).await?)),
            },
            // Boxed: a checkout's future is large, and this path is an error.
            Source::Raw(_) => Err(Box::pin(self.refuse_raw()).await),
        }
    }

    /// A `tokio_postgres::Statement` is named on one connection: refused on the pool,
    /// with the error a checkout's server gives for it.
    async fn refuse_raw(&self) -> Error {
        match self.get().await {
            Ok(conn) => refuse(
                &conn,
                PoolerRefusal::RawStatement {
                    pool: self.config().pool.name.clone(),
                },
            )
            .await
            .into(),
            Err(e) => e,
        }
    }

    /// The shape of `sql`: cached, or learned once on an exclusive checkout (learning
    /// opens a transaction, which a shared connection must never carry).
    async fn shape_of(&self, sql: &str) -> Result<Arc<Shape>, Error> {
        let ctx = &self.inner.ctx;
        if let Some(shape) = ctx.shapes.get(sql) {
            return Ok(shape);
        }
        // Boxed: learning is once per SQL text, and its futures are large.
        Box::pin(async {
            let conn = self.get().await?;
            Ok(ctx.shapes.shape(&conn, false, sql).await?)
        })
        .await
    }

    /// A shared statement's error: the server moved (the pool retires every connection),
    /// the connection broke (only it is replaced), or the statement's own error.
    fn shared_error(
        &self,
        lease: &Lease<PgMux>,
        shared: &Shared,
        generation: u64,
        e: tokio_postgres::Error,
    ) -> Error {
        self.inner.ctx.failover.seen(&e, generation);
        let err = Error::from(e);
        match err {
            Error::Backend(e) if e.is_closed() => {
                shared.mux.retire(lease, CloseReason::Broken);
                Error::ConnectionLost {
                    pool: self.config().pool.name.clone(),
                    source: e,
                }
            }
            other => other,
        }
    }

    /// A statement's error on a checkout: typed as on a shared connection (the failover
    /// was already noted by the connection).
    fn exclusive_error(&self, e: tokio_postgres::Error) -> Error {
        match Error::from(e) {
            Error::Backend(e) if e.is_closed() => Error::ConnectionLost {
                pool: self.config().pool.name.clone(),
                source: e,
            },
            other => other,
        }
    }

    /// Runs `statement` on the pool, like `tokio_postgres::Client::query`: pipelined on a
    /// shared connection (or, with those off or all stalled, on an exclusive checkout).
    /// `&str` statements are described once per SQL text and then sent as one unnamed,
    /// typed statement per call.
    ///
    /// # Errors
    /// [`Error::SessionState`] for a statement that would leave session state on a shared
    /// connection (use [`Pool::get`]); [`Error::ConnectionLost`] when the shared
    /// connection broke with it in flight; [`PoolError::Timeout`]; the server's error
    /// ([`Error::Backend`], [`PoolError::PrimaryMoved`](poolkit_core::PoolError::PrimaryMoved)).
    pub async fn query<T>(&self, statement: &T, params: Params<'_>) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        on_pool!(self, statement, params, query, query_typed)
    }

    /// Like [`Pool::query`], expecting exactly one row.
    ///
    /// # Errors
    /// As [`Pool::query`], or when not exactly one row came back.
    pub async fn query_one<T>(&self, statement: &T, params: Params<'_>) -> Result<Row, Error>
    where
        T: ?Sized + ToStatement,
    {
        on_pool!(self, statement, params, query_one, query_typed_one)
    }

    /// Like [`Pool::query`], expecting at most one row.
    ///
    /// # Errors
    /// As [`Pool::query`], or when more than one row came back.
    pub async fn query_opt<T>(
        &self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<Option<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        on_pool!(self, statement, params, query_opt, query_typed_opt)
    }

    /// Like [`Pool::query`], returning the number of rows affected.
    ///
    /// # Errors
    /// As [`Pool::query`].
    pub async fn execute<T>(&self, statement: &T, params: Params<'_>) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement,
    {
        on_pool!(self, statement, params, execute, execute_typed)
    }

    /// Like `tokio_postgres::Client::query_typed`: one unnamed statement with the
    /// parameters' types given, so nothing is described first.
    ///
    /// # Errors
    /// As [`Pool::query`].
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        let operation = self.refuse_session_state(sql)?;
        match self.route(Some(sql)).await? {
            Route::Exclusive(conn) => {
                let started = std::time::Instant::now();
                let r = conn.query_typed(sql, params).await;
                self.observed_exclusive(Source::Sql(sql), started.elapsed());
                r.map_err(|e| self.exclusive_error(e))
            }
            Route::Shared(lease, shared, alone) => {
                let timer = self.timer(&Source::Sql(sql), operation);
                let r = lease.query_typed(sql, params).await;
                self.finish(lease, shared, alone, Source::Sql(sql), timer, r)
            }
        }
    }

    /// Like `tokio_postgres::Client::simple_query` (the simple protocol: text results,
    /// several statements in one string).
    ///
    /// # Errors
    /// As [`Pool::query`].
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        let operation = self.refuse_session_state(sql)?;
        match self.route(Some(sql)).await? {
            Route::Exclusive(conn) => {
                let started = std::time::Instant::now();
                let r = conn.simple_query(sql).await;
                self.observed_exclusive(Source::Sql(sql), started.elapsed());
                r.map_err(|e| self.exclusive_error(e))
            }
            Route::Shared(lease, shared, alone) => {
                let timer = self.timer(&Source::Sql(sql), operation);
                let r = lease.simple_query(sql).await;
                self.finish(lease, shared, alone, Source::Sql(sql), timer, r)
            }
        }
    }

    async fn typed<'p>(
        &self,
        lease: &Lease<PgMux>,
        shape: &Shape,
        params: &[&'p (dyn ToSql + Sync)],
    ) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>, Error> {
        Ok(self.inner.ctx.typed(lease, shape, params).await?)
    }

    /// Starts timing a statement on a shared connection, as every statement is timed.
    fn timer(&self, source: &Source<'_>, operation: poolkit_core::Operation) -> Timer {
        let generation = self.inner.engine.generation();
        let (op, started) = self.inner.ctx.begin_as(source, operation);
        Timer {
            op,
            started,
            generation,
        }
    }

    /// A shared statement is done: its error typed (a broken connection retired), its
    /// connection's count down, its time recorded, and how long it held the connection's
    /// head teaches which statements are slow. One clock reading serves the lease and the
    /// statement's timing.
    fn finish<R>(
        &self,
        lease: Lease<PgMux>,
        shared: &Shared,
        alone: bool,
        source: Source<'_>,
        timer: Timer,
        r: Result<R, tokio_postgres::Error>,
    ) -> Result<R, Error> {
        let r = r.map_err(|e| self.shared_error(&lease, shared, timer.generation, e));
        let done = lease.complete_timed();
        self.inner
            .ctx
            .end_at(timer.op, timer.started, done.at, &source);
        shared.statements.fetch_add(1, Relaxed);
        if let Some(sql) = sql_of(&source) {
            let run = Run {
                head: done.head,
                alone: alone.then_some(done.held),
            };
            shared.slow.observe(sql, run, shared.spill);
        }
        r
    }

    /// A statement ran on a checkout in `took`: a statement marked slow that ran fast is
    /// cleared.
    fn observed_exclusive(&self, source: Source<'_>, took: std::time::Duration) {
        if let (Some(Some(shared)), Some(sql)) = (self.inner.shared_started(), sql_of(&source))
            && shared.slow.is_slow(sql)
        {
            shared.slow.observe(
                sql,
                Run {
                    head: took,
                    alone: Some(took),
                },
                shared.spill,
            );
        }
    }
}

fn sql_of<'a>(source: &Source<'a>) -> Option<&'a str> {
    match source {
        Source::Sql(s) => Some(s),
        Source::Pooled(st) => Some(st.sql()),
        Source::Raw(_) => None,
    }
}
