//! Supabase through poolkit-http: a PostgREST select, then the pool's numbers.
//!
//! With `SUPABASE_URL` and `SUPABASE_SERVICE_ROLE_KEY` (or `SUPABASE_KEY`) set, it selects
//! from your project's table `SUPABASE_EXAMPLE_TABLE` (default `items`). Without them it
//! starts a local stand-in PostgREST server on 127.0.0.1 and says so.
//!
//! Run: `cargo run --example http_supabase --features http`

#[path = "support/standin.rs"]
mod standin;

use poolkit::http::supabase;
use poolkit_core::env::process_lookup;

fn postgrest(method: &str, target: &str) -> (u16, String) {
    match (method, target.split('?').next().unwrap_or("")) {
        ("GET", "/rest/v1/items") => (
            200,
            r#"[{"id":1,"name":"first"},{"id":2,"name":"second"}]"#.to_owned(),
        ),
        _ => (404, r#"{"message":"no such table"}"#.to_owned()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = if process_lookup("SUPABASE_URL").is_some() {
        println!("using SUPABASE_URL from the environment");
        supabase::Client::from_env()?
    } else {
        let url = standin::start(postgrest).await?;
        println!("SUPABASE_URL is not set: using a local stand-in PostgREST server at {url}");
        let env = |var: &str| match var {
            "SUPABASE_URL" => Some(url.clone()),
            "SUPABASE_SERVICE_ROLE_KEY" => Some("stand-in-key".to_owned()),
            _ => process_lookup(var),
        };
        supabase::Client::from_lookup(&env)?
    };
    let table = process_lookup("SUPABASE_EXAMPLE_TABLE").unwrap_or_else(|| "items".to_owned());
    println!("client: {client:?}");
    for _ in 0..3 {
        let rows = client.select(&table, "*", &[]).await?;
        println!("select * from {table}: {rows}");
    }
    let s = client.pool().stats();
    println!(
        "pool {}: {} open, requests on new connections {}, on reused {}",
        s.name, s.open, s.requests_new, s.requests_reused
    );
    println!("health: {}", client.pool().health().message);
    Ok(())
}
