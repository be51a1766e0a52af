//! Statements that work the same directly and behind a transaction-mode pooler.
//!
//! Directly (or behind a session-mode pooler) a [`Statement`] is tokio-postgres's named
//! prepared statement. Behind a transaction-mode pooler (PgBouncer, Supavisor on 6543) a
//! named statement lives on one server connection while the next transaction may run on
//! another, so a [`Statement`] there holds the SQL and the parameter types the server
//! inferred, learned inside a short transaction that closes the named statement before it
//! commits; every execution is then one unnamed, typed round trip (`query_typed`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

/// A prepared statement from [`crate::PooledConnection::prepare`] (or a transaction's).
/// Cheap to clone; usable on any connection of the same pool, in or out of a transaction.
#[derive(Clone)]
pub struct Statement {
    sql: Arc<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// tokio-postgres's named statement (no transaction-mode pooler), and its shape.
    Named(tokio_postgres::Statement, Arc<Shape>),
    /// The shape the server inferred; executed unnamed.
    Unnamed(Arc<Shape>),
}

/// What the server said about a statement: parameter types and result columns.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) params: Vec<Type>,
    pub(crate) columns: Vec<Column>,
}

impl Shape {
    pub(crate) fn of(st: &tokio_postgres::Statement) -> Self {
        Self {
            params: st.params().to_vec(),
            columns: st
                .columns()
                .iter()
                .map(|c| Column {
                    name: c.name().to_owned(),
                    type_: c.type_().clone(),
                })
                .collect(),
        }
    }
}

/// A result column of a [`Statement`]: its name and type (the accessors of
/// `tokio_postgres::Column`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    name: String,
    type_: Type,
}

impl Column {
    /// The column's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column's type.
    #[must_use]
    pub fn type_(&self) -> &Type {
        &self.type_
    }
}

impl std::fmt::Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statement")
            .field("sql", &self.sql)
            .field("params", &self.params())
            .field("named", &matches!(self.kind, Kind::Named(..)))
            .finish()
    }
}

impl Statement {
    pub(crate) fn named(sql: &str, st: tokio_postgres::Statement) -> Self {
        Self {
            sql: sql.into(),
            kind: Kind::Named(st.clone(), Arc::new(Shape::of(&st))),
        }
    }

    pub(crate) fn unnamed(sql: &str, shape: Arc<Shape>) -> Self {
        Self {
            sql: sql.into(),
            kind: Kind::Unnamed(shape),
        }
    }

    /// The parameter types, as the server inferred them (or as given to `prepare_typed`).
    #[must_use]
    pub fn params(&self) -> &[Type] {
        &self.shape_ref().params
    }

    fn shape_ref(&self) -> &Shape {
        match &self.kind {
            Kind::Named(_, shape) | Kind::Unnamed(shape) => shape,
        }
    }

    /// The result columns.
    #[must_use]
    pub fn columns(&self) -> &[Column] {
        &self.shape_ref().columns
    }

    /// The SQL text.
    #[must_use]
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// tokio-postgres's named statement, when there is one (not behind a
    /// transaction-mode pooler).
    #[must_use]
    pub fn as_named(&self) -> Option<&tokio_postgres::Statement> {
        match &self.kind {
            Kind::Named(s, _) => Some(s),
            Kind::Unnamed(_) => None,
        }
    }

    pub(crate) fn shape(&self) -> Option<&Arc<Shape>> {
        match &self.kind {
            Kind::Named(..) => None,
            Kind::Unnamed(shape) => Some(shape),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for super::Statement {}
    impl Sealed for tokio_postgres::Statement {}
}

/// What a query can be given, like tokio-postgres's `ToStatement`: SQL text (`&str`,
/// `String`), a [`Statement`] from the pool, or a `tokio_postgres::Statement` (refused
/// behind a transaction-mode pooler, where it cannot be run safely).
pub trait ToStatement: sealed::Sealed {
    #[doc(hidden)]
    fn __source(&self) -> Source<'_>;
}

#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Sql(&'a str),
    Pooled(&'a Statement),
    Raw(&'a tokio_postgres::Statement),
}

impl ToStatement for str {
    fn __source(&self) -> Source<'_> {
        Source::Sql(self)
    }
}

impl ToStatement for String {
    fn __source(&self) -> Source<'_> {
        Source::Sql(self)
    }
}

impl ToStatement for Statement {
    fn __source(&self) -> Source<'_> {
        Source::Pooled(self)
    }
}

impl ToStatement for tokio_postgres::Statement {
    fn __source(&self) -> Source<'_> {
        Source::Raw(self)
    }
}

/// Why a call was refused behind a transaction-mode pooler. It reaches the caller as the
/// `source()` of a `tokio_postgres::Error`, so code written for tokio-postgres keeps its
/// error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolerRefusal {
    /// A `tokio_postgres::Statement` made on the raw client is a named statement, which
    /// may not exist on the server connection the pooler picks next.
    #[error(
        "pool `{pool}`: a tokio_postgres::Statement cannot run behind a transaction-mode pooler (its named statement lives on one server connection only); prepare it with the pooled connection's prepare(), which returns a poolkit_postgres::Statement that is safe there"
    )]
    RawStatement {
        /// The pool's name.
        pool: String,
    },
    /// More parameters than the statement has.
    #[error("pool `{pool}`: expected {expected} parameters but got {got}")]
    Parameters {
        /// The pool's name.
        pool: String,
        /// Parameters in the statement.
        expected: usize,
        /// Parameters given.
        got: usize,
    },
}

/// A parameter that refuses to serialize, to carry a [`PoolerRefusal`] out as a
/// `tokio_postgres::Error` without any I/O (tokio-postgres encodes before it sends).
#[derive(Debug)]
struct Refuse(Mutex<Option<PoolerRefusal>>);

impl ToSql for Refuse {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let why = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Err(why.map_or_else(|| "refused".into(), |w| Box::new(w) as _))
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A `tokio_postgres::Error` whose source is `why` (logged once as well, since
/// tokio-postgres's `Display` shows only "error serializing parameter 0").
pub(crate) async fn refuse(client: &Client, why: PoolerRefusal) -> tokio_postgres::Error {
    tracing::error!("{why}");
    let refuse = Refuse(Mutex::new(Some(why)));
    let param: &(dyn ToSql + Sync) = &refuse;
    match client.query_typed_raw("", [(param, Type::TEXT)]).await {
        Err(e) => e,
        Ok(_) => tokio_postgres::Error::__private_api_timeout(),
    }
}

/// The shapes learned per SQL text, so each statement is described once per pool.
#[derive(Debug, Default)]
pub(crate) struct ShapeCache {
    map: std::sync::RwLock<HashMap<Arc<str>, Arc<Shape>>>,
}

/// More distinct statements than this and the cache starts over (a bound, not an LRU:
/// an application has a few hundred statements; a flood means SQL built from values).
const CACHE_LIMIT: usize = 2048;

impl ShapeCache {
    pub(crate) fn get(&self, sql: &str) -> Option<Arc<Shape>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sql)
            .cloned()
    }

    fn put(&self, sql: &str, shape: Arc<Shape>) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(sql.into(), shape);
    }

    /// The shape of `sql`, from the cache or learned from the server.
    pub(crate) async fn shape(
        &self,
        client: &Client,
        in_tx: bool,
        sql: &str,
    ) -> Result<Arc<Shape>, tokio_postgres::Error> {
        if let Some(shape) = self.get(sql) {
            return Ok(shape);
        }
        let shape = Arc::new(learn(client, in_tx, sql, &[]).await?);
        self.put(sql, Arc::clone(&shape));
        Ok(shape)
    }
}

/// Rolls back the learning transaction if the caller's future is dropped half-way, the
/// way tokio-postgres's own `Transaction` does when dropped.
struct Learning<'a> {
    client: &'a Client,
    savepoint: bool,
    open: bool,
}

impl Drop for Learning<'_> {
    fn drop(&mut self) {
        if self.open {
            self.client
                .__private_api_rollback(self.savepoint.then_some(SAVEPOINT));
        }
    }
}

const SAVEPOINT: &str = "poolkit_learn";

/// How many times a name clash is retried: a server connection behind a pooler can hold
/// named statements that other clients leaked (`s0`, `s1`, … from plain tokio-postgres),
/// and each attempt takes the next name.
const NAME_CLASH_RETRIES: u32 = 32;

/// Asks the server for a statement's shape with a named statement that is closed before
/// the transaction around it ends: inside a savepoint of the caller's transaction when
/// there is one, else inside `BEGIN … COMMIT`, so a transaction-mode pooler keeps every
/// message on one server connection.
pub(crate) async fn learn(
    client: &Client,
    in_tx: bool,
    sql: &str,
    types: &[Type],
) -> Result<Shape, tokio_postgres::Error> {
    let mut attempt = 0;
    loop {
        match learn_once(client, in_tx, sql, types).await {
            Err(e)
                if attempt < NAME_CLASH_RETRIES
                    && e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_PSTATEMENT) =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn learn_once(
    client: &Client,
    in_tx: bool,
    sql: &str,
    types: &[Type],
) -> Result<Shape, tokio_postgres::Error> {
    let (begin, end, undo) = if in_tx {
        (
            format!("SAVEPOINT {SAVEPOINT}"),
            format!("RELEASE SAVEPOINT {SAVEPOINT}"),
            format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}"),
        )
    } else {
        (
            "BEGIN".to_owned(),
            "COMMIT".to_owned(),
            "ROLLBACK".to_owned(),
        )
    };
    let mut guard = Learning {
        client,
        savepoint: in_tx,
        open: true,
    };
    // Pipelined: BEGIN (or SAVEPOINT) and the Parse/Describe go out together.
    let (begun, prepared) = futures_util::future::join(
        client.batch_execute(&begin),
        client.prepare_typed(sql, types),
    )
    .await;
    begun?;
    let st = match prepared {
        Ok(st) => st,
        Err(e) => {
            client.batch_execute(&undo).await?;
            guard.open = false;
            return Err(e);
        }
    };
    let shape = Shape::of(&st);
    // Dropping the statement queues its Close ahead of the COMMIT.
    drop(st);
    client.batch_execute(&end).await?;
    guard.open = false;
    Ok(shape)
}
