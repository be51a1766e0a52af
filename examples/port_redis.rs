//! Porting a redis-rs program (`ConnectionManager` + `AsyncCommands`) to poolkit: only
//! the connect lines change.
//!
//! ```text
//! // before                                              // after
//! let client = redis::Client::open(url)?;                let pool = Pool::from_env().await?;
//! let mut con = client                                   let mut con = pool.clone();
//!     .get_connection_manager().await?;
//! ```
//!
//! The pool is a `redis::aio::ConnectionLike`: `AsyncCommands`, `Cmd::query_async` and
//! pipelines run on its shared multiplexed connections, under its in-flight cap, with its
//! metrics and query timing.
//!
//! Run: `cargo run --example port_redis --features redis`
//! (`REDIS_URL`, default `redis://127.0.0.1:6379`).

use poolkit::redis::redis::{self, AsyncCommands};
use poolkit::redis::{Config, Pool};
use poolkit_core::env::process_lookup;

/// The program's own code, written for a redis-rs connection and unchanged.
async fn work<C: AsyncCommands>(con: &mut C, key: &str) -> redis::RedisResult<i64> {
    let () = con.set_ex(key, 41, 60).await?;
    let n: i64 = con.incr(key, 1).await?;
    let () = con.hset(format!("{key}:h"), "answer", n).await?;
    let (v, h): (i64, i64) = redis::pipe()
        .get(key)
        .hget(format!("{key}:h"), "answer")
        .query_async(con)
        .await?;
    assert_eq!(v, h);
    let _: i64 = con.del(&[key.to_owned(), format!("{key}:h")]).await?;
    Ok(v)
}

/// Runs the program against `url` with a pool called `name`.
pub(crate) async fn run(url: &str, name: &str) -> Result<i64, Box<dyn std::error::Error>> {
    let mut config = Config::new(url);
    config.pool.name = name.to_owned();
    config.pool.prefix = name.to_ascii_uppercase();
    let pool = Pool::new(config).await?;
    let mut con = pool.clone();
    let v = work(
        &mut con,
        &format!("port_example:{name}:{}", std::process::id()),
    )
    .await?;
    let q = pool.stats().query;
    println!(
        "{name}: got {v}; {} commands, p95 {:.3} ms",
        q.count,
        q.p95 * 1e3
    );
    Ok(v)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = process_lookup("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    run(&url, "port_redis_example").await?;
    Ok(())
}
