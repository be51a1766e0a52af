//! The tokio-postgres dialect on pooled connections and transactions: the same method
//! names and argument types as `tokio_postgres::Client`, routed the pooler's way and timed.

use std::sync::Arc;

use poolkit_core::{Operation, QueryStats};
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{Client, Error, Row, RowStream};

use crate::pooler::{PoolerMode, SessionWarnings};
use crate::statement::{PoolerRefusal, Shape, ShapeCache, Source, Statement, learn, refuse};

/// What a connection needs to run queries the pooler's way: shared by a pool's
/// connections.
#[derive(Debug)]
pub(crate) struct QueryCtx {
    pub(crate) pool: String,
    pub(crate) pooler: PoolerMode,
    pub(crate) warnings: SessionWarnings,
    pub(crate) queries: std::sync::Arc<QueryStats>,
    pub(crate) shapes: ShapeCache,
    /// Retires the whole pool when a statement shows the server moved.
    pub(crate) failover: Arc<crate::failover::Failover>,
}

/// How one call goes to the server.
enum Plan<'a> {
    /// tokio-postgres as is (no transaction-mode pooler): `&str` or a named statement.
    Sql(&'a str),
    Named(&'a tokio_postgres::Statement),
    /// Unnamed and typed, in one round trip: safe behind a transaction-mode pooler.
    Typed(&'a str, Arc<Shape>),
}

impl Plan<'_> {
    /// Whether this goes as a named prepared statement poolkit made (tokio-postgres's
    /// `s<N>` for a `&str`, or a [`Statement`] prepared on a pooled connection).
    fn poolkit_named(&self, source: Source<'_>) -> bool {
        !matches!(self, Plan::Typed(..)) && !matches!(source, Source::Raw(_))
    }
}

/// Runs one statement: plans it, runs `$body` (a `match` over the plan), and when the
/// server's answer shows a transaction-mode pooler in front of a named statement poolkit
/// made (which therefore never ran), switches the pool's mode and runs it once more,
/// unnamed (outside a transaction; inside one the transaction is already aborted).
macro_rules! run {
    ($self:ident, $client:ident, $in_tx:ident, $source:ident, |$plan:ident| $body:expr) => {{
        let (op, started) = $self.begin(&$source);
        let result = async {
            loop {
                let $plan = $self.plan($client, $in_tx, $source).await?;
                let named = $plan.poolkit_named($source);
                let r = $body;
                match &r {
                    Err(e) if named && $self.pooler.refused(&$self.pool, e) && !$in_tx => {}
                    _ => break r,
                }
            }
        }
        .await;
        $self.end(op, started, &$source);
        result
    }};
}

fn sql_of<'a>(source: &Source<'a>) -> Option<&'a str> {
    match source {
        Source::Sql(s) => Some(s),
        Source::Pooled(st) => Some(st.sql()),
        Source::Raw(_) => None,
    }
}

impl QueryCtx {
    async fn plan<'a>(
        &self,
        client: &Client,
        in_tx: bool,
        source: Source<'a>,
    ) -> Result<Plan<'a>, Error> {
        let transaction_mode = self.pooler.transaction();
        Ok(match source {
            Source::Sql(sql) if transaction_mode => {
                Plan::Typed(sql, self.shapes.shape(client, in_tx, sql).await?)
            }
            Source::Sql(sql) => Plan::Sql(sql),
            Source::Pooled(st) => match (st.shape(), st.as_named()) {
                (Some(shape), _) => Plan::Typed(st.sql(), Arc::clone(shape)),
                (None, Some(named)) if transaction_mode => {
                    Plan::Typed(st.sql(), Arc::new(Shape::of(named)))
                }
                (None, Some(named)) => Plan::Named(named),
                (None, None) => Plan::Sql(st.sql()),
            },
            Source::Raw(_) if transaction_mode => {
                return Err(refuse(
                    client,
                    PoolerRefusal::RawStatement {
                        pool: self.pool.clone(),
                    },
                )
                .await);
            }
            Source::Raw(named) => Plan::Named(named),
        })
    }

    pub(crate) fn begin(&self, source: &Source<'_>) -> (Operation, poolkit_core::QueryStart) {
        let op = sql_of(source).map_or(Operation::OTHER, Operation::sql);
        self.begin_as(source, op)
    }

    /// As [`QueryCtx::begin`], with the statement's `operation` label already read.
    pub(crate) fn begin_as(
        &self,
        source: &Source<'_>,
        op: Operation,
    ) -> (Operation, poolkit_core::QueryStart) {
        if let Some(sql) = sql_of(source) {
            self.warnings.check(&self.pool, self.pooler.get(), sql);
        }
        (op, self.queries.start())
    }

    pub(crate) fn end(
        &self,
        op: Operation,
        started: poolkit_core::QueryStart,
        source: &Source<'_>,
    ) {
        self.end_at(op, started, poolkit_core::QueryStart::now(), source);
    }

    /// As [`QueryCtx::end`], with the statement's end read by the caller.
    pub(crate) fn end_at(
        &self,
        op: Operation,
        started: poolkit_core::QueryStart,
        ended: poolkit_core::QueryStart,
        source: &Source<'_>,
    ) {
        let took = ended.saturating_duration_since(started);
        self.queries.record(op, took, || match source {
            Source::Raw(_) => "(a tokio_postgres::Statement)".to_owned(),
            other => sql_of(other).unwrap_or_default().to_owned(),
        });
    }

    async fn check_count(&self, client: &Client, shape: &Shape, got: usize) -> Result<(), Error> {
        if got == shape.params.len() {
            return Ok(());
        }
        // Boxed: an error path, kept out of every statement's future.
        Err(Box::pin(refuse(
            client,
            PoolerRefusal::Parameters {
                pool: self.pool.clone(),
                expected: shape.params.len(),
                got,
            },
        ))
        .await)
    }

    pub(crate) async fn typed<'p>(
        &self,
        client: &Client,
        shape: &Shape,
        params: &[&'p (dyn ToSql + Sync)],
    ) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>, Error> {
        self.check_count(client, shape, params.len()).await?;
        Ok(params
            .iter()
            .zip(&shape.params)
            .map(|(p, t)| (*p, t.clone()))
            .collect())
    }

    pub(crate) async fn query(
        &self,
        client: &Client,
        in_tx: bool,
        source: Source<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        run!(self, client, in_tx, source, |plan| match plan {
            Plan::Sql(sql) => client.query(sql, params).await,
            Plan::Named(st) => client.query(st, params).await,
            Plan::Typed(sql, shape) => {
                let typed = self.typed(client, &shape, params).await?;
                client.query_typed(sql, &typed).await
            }
        })
    }

    pub(crate) async fn query_one(
        &self,
        client: &Client,
        in_tx: bool,
        source: Source<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        run!(self, client, in_tx, source, |plan| match plan {
            Plan::Sql(sql) => client.query_one(sql, params).await,
            Plan::Named(st) => client.query_one(st, params).await,
            Plan::Typed(sql, shape) => {
                let typed = self.typed(client, &shape, params).await?;
                client.query_typed_one(sql, &typed).await
            }
        })
    }

    pub(crate) async fn query_opt(
        &self,
        client: &Client,
        in_tx: bool,
        source: Source<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        run!(self, client, in_tx, source, |plan| match plan {
            Plan::Sql(sql) => client.query_opt(sql, params).await,
            Plan::Named(st) => client.query_opt(st, params).await,
            Plan::Typed(sql, shape) => {
                let typed = self.typed(client, &shape, params).await?;
                client.query_typed_opt(sql, &typed).await
            }
        })
    }

    pub(crate) async fn execute(
        &self,
        client: &Client,
        in_tx: bool,
        source: Source<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        run!(self, client, in_tx, source, |plan| match plan {
            Plan::Sql(sql) => client.execute(sql, params).await,
            Plan::Named(st) => client.execute(st, params).await,
            Plan::Typed(sql, shape) => {
                let typed = self.typed(client, &shape, params).await?;
                client.execute_typed(sql, &typed).await
            }
        })
    }

    /// Times until the first response; rows are then streamed by the caller.
    pub(crate) async fn query_raw<P, I>(
        &self,
        client: &Client,
        in_tx: bool,
        source: Source<'_>,
        params: I,
    ) -> Result<RowStream, Error>
    where
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let (op, started) = self.begin(&source);
        // The parameters are consumed by the first try, so a refusal by a pooler switches
        // the mode (the next call runs unnamed) but is not run again.
        let result = async {
            let plan = self.plan(client, in_tx, source).await?;
            let named = plan.poolkit_named(source);
            let r = match plan {
                Plan::Sql(sql) => client.query_raw(sql, params).await,
                Plan::Named(st) => client.query_raw(st, params).await,
                Plan::Typed(sql, shape) => {
                    let params = params.into_iter();
                    self.check_count(client, &shape, params.len()).await?;
                    client
                        .query_typed_raw(sql, params.zip(shape.params.iter().cloned()))
                        .await
                }
            };
            if let Err(e) = &r
                && named
            {
                self.pooler.refused(&self.pool, e);
            }
            r
        }
        .await;
        self.end(op, started, &source);
        result
    }

    pub(crate) async fn prepare(
        &self,
        client: &Client,
        in_tx: bool,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, Error> {
        self.warnings.check(&self.pool, self.pooler.get(), sql);
        if !self.pooler.transaction() {
            return Ok(Statement::named(
                sql,
                client.prepare_typed(sql, types).await?,
            ));
        }
        let shape = if types.is_empty() {
            self.shapes.shape(client, in_tx, sql).await?
        } else {
            Arc::new(learn(client, in_tx, sql, types).await?)
        };
        Ok(Statement::unnamed(sql, shape))
    }

    pub(crate) async fn simple(
        &self,
        client: &Client,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, Error> {
        let source = Source::Sql(sql);
        let (op, started) = self.begin(&source);
        let result = client.simple_query(sql).await;
        self.end(op, started, &source);
        result
    }

    pub(crate) async fn batch(&self, client: &Client, sql: &str) -> Result<(), Error> {
        let source = Source::Sql(sql);
        let (op, started) = self.begin(&source);
        let result = client.batch_execute(sql).await;
        self.end(op, started, &source);
        result
    }
}

/// The tokio-postgres `Client` methods, for a type with `fn parts(&self) -> (&Client,
/// bool, &QueryCtx)` (the client, whether a transaction is open, the pool's context) and
/// `fn seen<T>(&self, &Result<T, tokio_postgres::Error>)` (a failover seen in a result).
macro_rules! dialect {
    ($ty:ty) => {
        impl $ty {
            /// Like `tokio_postgres::Client::query`: a `&str`, a [`Statement`](crate::Statement) or a
            /// `tokio_postgres::Statement`, with `&[&(dyn ::tokio_postgres::types::ToSql + Sync)]` parameters.
            /// Behind a transaction-mode pooler it runs as one unnamed, typed statement.
            ///
            /// # Errors
            /// The server's error; behind a transaction-mode pooler, a
            /// [`PoolerRefusal`](crate::PoolerRefusal) (as the error's `source()`) for a call
            /// that cannot be made safe.
            pub async fn query<T>(
                &self,
                statement: &T,
                params: &[&(dyn ::tokio_postgres::types::ToSql + Sync)],
            ) -> Result<Vec<::tokio_postgres::Row>, ::tokio_postgres::Error>
            where
                T: ?Sized + crate::ToStatement,
            {
                let (client, in_tx, ctx) = self.parts();
                let r = ctx.query(client, in_tx, statement.__source(), params).await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::query_one`.
            ///
            /// # Errors
            /// As [`query`](Self::query), or when not exactly one row came back.
            pub async fn query_one<T>(
                &self,
                statement: &T,
                params: &[&(dyn ::tokio_postgres::types::ToSql + Sync)],
            ) -> Result<::tokio_postgres::Row, ::tokio_postgres::Error>
            where
                T: ?Sized + crate::ToStatement,
            {
                let (client, in_tx, ctx) = self.parts();
                let r = ctx
                    .query_one(client, in_tx, statement.__source(), params)
                    .await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::query_opt`.
            ///
            /// # Errors
            /// As [`query`](Self::query), or when more than one row came back.
            pub async fn query_opt<T>(
                &self,
                statement: &T,
                params: &[&(dyn ::tokio_postgres::types::ToSql + Sync)],
            ) -> Result<Option<::tokio_postgres::Row>, ::tokio_postgres::Error>
            where
                T: ?Sized + crate::ToStatement,
            {
                let (client, in_tx, ctx) = self.parts();
                let r = ctx
                    .query_opt(client, in_tx, statement.__source(), params)
                    .await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::execute`: the number of rows affected.
            ///
            /// # Errors
            /// As [`query`](Self::query).
            pub async fn execute<T>(
                &self,
                statement: &T,
                params: &[&(dyn ::tokio_postgres::types::ToSql + Sync)],
            ) -> Result<u64, ::tokio_postgres::Error>
            where
                T: ?Sized + crate::ToStatement,
            {
                let (client, in_tx, ctx) = self.parts();
                let r = ctx
                    .execute(client, in_tx, statement.__source(), params)
                    .await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::query_raw`: parameters from any exact-size
            /// iterator, rows as a stream.
            ///
            /// # Errors
            /// As [`query`](Self::query).
            pub async fn query_raw<T, P, I>(
                &self,
                statement: &T,
                params: I,
            ) -> Result<::tokio_postgres::RowStream, ::tokio_postgres::Error>
            where
                T: ?Sized + crate::ToStatement,
                P: ::tokio_postgres::types::BorrowToSql,
                I: IntoIterator<Item = P>,
                I::IntoIter: ExactSizeIterator,
            {
                let (client, in_tx, ctx) = self.parts();
                let r = ctx
                    .query_raw(client, in_tx, statement.__source(), params)
                    .await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::prepare`. Directly, a named prepared statement;
            /// behind a transaction-mode pooler, the shape the server inferred (learned in a
            /// transaction that closes its named statement before it ends), run unnamed.
            ///
            /// # Errors
            /// The server's error (a syntax error, an unknown table).
            pub async fn prepare(
                &self,
                query: &str,
            ) -> Result<crate::Statement, ::tokio_postgres::Error> {
                let (client, in_tx, ctx) = self.parts();
                let r = ctx.prepare(client, in_tx, query, &[]).await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::prepare_typed`.
            ///
            /// # Errors
            /// As [`prepare`](Self::prepare).
            pub async fn prepare_typed(
                &self,
                query: &str,
                parameter_types: &[::tokio_postgres::types::Type],
            ) -> Result<crate::Statement, ::tokio_postgres::Error> {
                let (client, in_tx, ctx) = self.parts();
                let r = ctx.prepare(client, in_tx, query, parameter_types).await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::simple_query`, with the pooler's session-state
            /// warnings.
            ///
            /// # Errors
            /// The server's error.
            pub async fn simple_query(
                &self,
                query: &str,
            ) -> Result<Vec<::tokio_postgres::SimpleQueryMessage>, ::tokio_postgres::Error> {
                let (client, _, ctx) = self.parts();
                let r = ctx.simple(client, query).await;
                self.seen(&r);
                r
            }

            /// Like `tokio_postgres::Client::batch_execute`.
            ///
            /// # Errors
            /// The server's error.
            pub async fn batch_execute(&self, query: &str) -> Result<(), ::tokio_postgres::Error> {
                let (client, _, ctx) = self.parts();
                let r = ctx.batch(client, query).await;
                self.seen(&r);
                r
            }
        }
    };
}

pub(crate) use dialect;
