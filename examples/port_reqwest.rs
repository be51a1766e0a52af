//! Porting a reqwest program to poolkit-http: the calls keep their shape; what differs
//! is where pooling differs (the pool is built from `P_*` variables, has a real
//! per-origin connection cap, and reports to the monitor).
//!
//! ```text
//! // before                                              // after
//! let client = reqwest::Client::new();                   let client = Pool::new(Config::from_env("API")?)?;
//! ```
//!
//! And for an SDK that takes a `reqwest::Client`: `poolkit::http::reqwest_client("API")`
//! builds one from the same variables, counted by the monitor.
//!
//! Without `API_URL` it starts a local stand-in API on 127.0.0.1 and says so.
//!
//! Run: `cargo run --example port_reqwest --features reqwest`

#[path = "support/standin.rs"]
mod standin;

use poolkit::http::http::header::{ACCEPT, CONTENT_TYPE};
use poolkit::http::{Config, Pool, reqwest_client_with};
use poolkit_core::env::process_lookup;

fn api(method: &str, target: &str) -> (u16, String) {
    match (method, target.split('?').next().unwrap_or("")) {
        ("GET", "/items") => (200, r#"[{"id":1},{"id":2}]"#.to_owned()),
        ("POST", "/items") => (201, r#"{"id":3}"#.to_owned()),
        _ => (404, r#"{"message":"not found"}"#.to_owned()),
    }
}

/// Starts the local stand-in API (also used by tests/port_examples.rs).
pub(crate) async fn start_standin() -> std::io::Result<String> {
    standin::start(api).await
}

/// The program's own code: the same calls a reqwest user writes.
async fn work(client: &Pool, base: &str, token: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let url = format!("{base}/items");
    let items: Vec<serde_json::Value> = client
        .get(&url)
        .header(ACCEPT, "application/json")
        .bearer_auth(token)
        .query(&[("limit", 10)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let created = client
        .post(url)
        .json(&serde_json::json!({"name": "new"}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let text = created.text().await?;
    assert!(text.contains("\"id\":3"), "{text}");
    Ok(items.len())
}

/// Runs the program against `base` with pools called `name` (poolkit) and `name_sdk`
/// (reqwest).
pub(crate) async fn run(base: &str, name: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let mut config = Config::new(name);
    config.base_url = Some(base.to_owned());
    let client = Pool::new(config.clone())?;
    let n = work(&client, base, "token").await?;

    // An SDK that wants a reqwest::Client gets one built from the same settings.
    let mut sdk_config = config;
    sdk_config.pool.name = format!("{name}_sdk");
    let sdk = reqwest_client_with(&sdk_config)?;
    let r = sdk.get(format!("{base}/items")).send().await?;
    assert_eq!(
        r.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let s = client.stats();
    println!(
        "{name}: {n} items; {} requests ({} new connections, {} reused)",
        s.requests_new + s.requests_reused,
        s.requests_new,
        s.requests_reused
    );
    Ok(n)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = match process_lookup("API_URL") {
        Some(url) => url,
        None => {
            let url = start_standin().await?;
            println!("API_URL is not set: using a local stand-in API at {url}");
            url
        }
    };
    run(&base, "port_reqwest").await?;
    Ok(())
}
