//! An axum service on poolkit: PostgreSQL, Redis and a Supabase-style HTTP pool from the
//! environment, errors mapped to responses, a transaction that owns what it captures, and
//! the monitor nested under `/monitor` behind a token.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379 \
//! POOLKIT_MONITOR_TOKEN=change-me \
//!   cargo run --example axum_service --features full
//! curl -X POST 127.0.0.1:3000/users -d 'ada'     # → {"id":1,"name":"ada"}
//! curl 127.0.0.1:3000/users/1                     # → from PostgreSQL, then from Redis
//! curl 127.0.0.1:3000/items                       # → Supabase (a local stand-in without SUPABASE_URL)
//! curl -H 'Authorization: Bearer change-me' 127.0.0.1:3000/monitor/pools
//! ```
//!
//! `-- --check` serves on a free port, sends those requests itself, checks the answers
//! and exits (scripts/test.sh runs it so against the real servers).

#[path = "support/standin.rs"]
mod standin;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use poolkit::core::env::process_lookup;
use poolkit::http::supabase;
use poolkit::monitor::{Monitor, MonitorConfig};
use poolkit::postgres::TxOptions;
use poolkit::redis::redis;

/// What every handler shares: cheap clones of the pools.
#[derive(Clone)]
struct AppState {
    db: poolkit::postgres::Pool,
    cache: poolkit::redis::Pool,
    supabase: Arc<supabase::Client>,
}

/// The service's errors, each with the response it becomes.
#[derive(Debug)]
enum AppError {
    NotFound,
    Postgres(poolkit::postgres::Error),
    Redis(poolkit::redis::Error),
    Http(poolkit::http::Error),
}

impl From<poolkit::postgres::Error> for AppError {
    fn from(e: poolkit::postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

impl From<poolkit::postgres::tokio_postgres::Error> for AppError {
    fn from(e: poolkit::postgres::tokio_postgres::Error) -> Self {
        Self::Postgres(e.into())
    }
}

impl From<poolkit::redis::Error> for AppError {
    fn from(e: poolkit::redis::Error) -> Self {
        Self::Redis(e)
    }
}

impl From<poolkit::http::Error> for AppError {
    fn from(e: poolkit::http::Error) -> Self {
        Self::Http(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // A pool that is out of connections is busy, not broken: 503 with Retry-After, so
        // clients and load balancers back off. The message names the variable to raise.
        let busy = match &self {
            Self::Postgres(e) => e.is_timeout() || e.is_connect(),
            Self::Redis(e) => e.is_timeout() || e.is_connect(),
            Self::Http(e) => e.is_pool_timeout(),
            Self::NotFound => false,
        };
        let (status, text) = match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "not found".to_owned()),
            Self::Postgres(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Self::Redis(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Self::Http(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
        };
        tracing::warn!(%status, "{text}");
        let mut response = if busy {
            (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
        } else {
            (status, text).into_response()
        };
        if busy {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `GET /users/{id}`: Redis first, then PostgreSQL (and cached for a minute).
async fn get_user(State(app): State<AppState>, Path(id): Path<i64>) -> Result<String, AppError> {
    let key = format!("axum_service:user:{id}");
    if let Some(hit) = app
        .cache
        .query::<Option<String>>(redis::cmd("GET").arg(&key))
        .await?
    {
        return Ok(hit);
    }
    let conn = app.db.get().await?;
    let row = conn
        .query_opt(
            "SELECT json_build_object('id', id, 'name', name)::text FROM axum_users WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or(AppError::NotFound)?;
    let body: String = row.get(0);
    app.cache
        .query::<()>(redis::cmd("SET").arg(&key).arg(&body).arg("EX").arg(60))
        .await?;
    Ok(body)
}

/// `POST /users` with the name as the body: inserted in a transaction. The closure is
/// `async move` and owns its copy of the name: a borrow of the request body would tie
/// the transaction's future to the handler's stack, and axum needs it `Send + 'static`.
async fn create_user(State(app): State<AppState>, name: String) -> Result<String, AppError> {
    let name = name.trim().to_owned();
    let body = app
        .db
        .transaction(TxOptions::default(), async move |tx| {
            let row = tx
                .query_one(
                    "INSERT INTO axum_users (name) VALUES ($1) RETURNING json_build_object('id', id, 'name', name)::text",
                    &[&name],
                )
                .await?;
            Ok(row.get::<_, String>(0))
        })
        .await?;
    Ok(body)
}

/// `GET /items`: a PostgREST select through the Supabase pool.
async fn items(State(app): State<AppState>) -> Result<String, AppError> {
    Ok(app.supabase.select("items", "*", &[]).await?.to_string())
}

/// The Supabase client from `SUPABASE_URL`, or a local stand-in when it is not set.
async fn supabase_client() -> Result<supabase::Client, Box<dyn std::error::Error>> {
    if process_lookup("SUPABASE_URL").is_some() {
        return Ok(supabase::Client::from_env()?);
    }
    fn postgrest(method: &str, target: &str) -> (u16, String) {
        match (method, target.split('?').next().unwrap_or("")) {
            ("GET", "/rest/v1/items") => (200, r#"[{"id":1,"name":"first"}]"#.to_owned()),
            _ => (404, r#"{"message":"no such table"}"#.to_owned()),
        }
    }
    let url = standin::start(postgrest).await?;
    println!("SUPABASE_URL is not set: a local stand-in PostgREST answers at {url}");
    let env = |var: &str| match var {
        "SUPABASE_URL" => Some(url.clone()),
        "SUPABASE_SERVICE_ROLE_KEY" => Some("stand-in-key".to_owned()),
        _ => process_lookup(var),
    };
    Ok(supabase::Client::from_lookup(&env)?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let check = std::env::args().any(|a| a == "--check");
    // The recorder first: pools register their metric handles when built.
    poolkit::monitor::install()?;
    let state = AppState {
        db: poolkit::postgres::Pool::from_env().await?,
        cache: poolkit::redis::Pool::from_env().await?,
        supabase: Arc::new(supabase_client().await?),
    };
    state
        .db
        .get()
        .await?
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS axum_users (id bigserial PRIMARY KEY, name text NOT NULL)",
        )
        .await?;

    // The monitor under /monitor; outside loopback it needs POOLKIT_MONITOR_TOKEN.
    let mut monitor = MonitorConfig::from_env()?;
    if check && monitor.token.is_none() {
        monitor = monitor.with_token("axum-check-token");
    }
    let token = monitor.token.clone();
    let monitor = Monitor::builder().config(monitor).build();

    let app = Router::new()
        .route("/users", axum::routing::post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/items", get(items))
        .with_state(state)
        .nest("/monitor", monitor.router());

    let addr = if check {
        "127.0.0.1:0".to_owned()
    } else {
        process_lookup("APP_ADDR").unwrap_or_else(|| "127.0.0.1:3000".to_owned())
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if !check {
        server.await??;
        return Ok(());
    }
    let bearer = token.map(|t| format!("Bearer {}", t.expose()));
    let result = self_check(local, bearer.as_deref()).await;
    server.abort();
    result
}

/// `--check`: the requests from the top of this file, with their answers checked.
async fn self_check(
    addr: std::net::SocketAddr,
    bearer: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (status, created) = request(addr, "POST", "/users", "ada", None).await?;
    check(
        status == 201 || status == 200,
        "POST /users",
        status,
        &created,
    )?;
    let id = created
        .split("\"id\" : ")
        .nth(1)
        .or_else(|| created.split("\"id\":").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit() && c != ' ').next())
        .map(str::trim)
        .ok_or_else(|| format!("no id in {created}"))?
        .to_owned();
    for source in ["PostgreSQL", "Redis"] {
        let (status, body) = request(addr, "GET", &format!("/users/{id}"), "", None).await?;
        check(status == 200 && body.contains("ada"), source, status, &body)?;
    }
    let (status, body) = request(addr, "GET", "/users/0", "", None).await?;
    check(status == 404, "GET /users/0", status, &body)?;
    let (status, body) = request(addr, "GET", "/items", "", None).await?;
    check(
        status == 200 && body.contains("first"),
        "GET /items",
        status,
        &body,
    )?;
    let (status, body) = request(addr, "GET", "/monitor/pools", "", None).await?;
    check(
        status == 401,
        "GET /monitor/pools without the token",
        status,
        &body,
    )?;
    let (status, body) = request(addr, "GET", "/monitor/pools", "", bearer).await?;
    check(
        status == 200 && body.contains("\"database\"") && body.contains("\"redis\""),
        "GET /monitor/pools with the token",
        status,
        &body,
    )?;
    println!("axum_service --check: all answers as expected");
    Ok(())
}

fn check(ok: bool, what: &str, status: u16, body: &str) -> Result<(), String> {
    if ok {
        println!("ok   {what}: {status}");
        Ok(())
    } else {
        Err(format!("FAIL {what}: {status} {body}"))
    }
}

/// One HTTP/1.1 request on a fresh connection; the status and body.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    auth: Option<&str>,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let auth = auth.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}
