//! Pinecone through poolkit-http: a vector query, then the pool's numbers.
//!
//! With `PINECONE_API_KEY` and `PINECONE_HOST` set, it queries your index with a vector
//! of `PINECONE_EXAMPLE_DIM` (default 3) values of 0.1. Without them it starts a local
//! stand-in Pinecone server on 127.0.0.1 and says so.
//!
//! Run: `cargo run --example http_pinecone --features http`

#[path = "support/standin.rs"]
mod standin;

use poolkit::http::pinecone;
use poolkit_core::env::process_lookup;

fn index(method: &str, target: &str) -> (u16, String) {
    match (method, target) {
        ("POST", "/query") => (
            200,
            r#"{"matches":[{"id":"doc-1","score":0.92},{"id":"doc-7","score":0.81}],"namespace":""}"#
                .to_owned(),
        ),
        _ => (404, "{}".to_owned()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let real =
        process_lookup("PINECONE_API_KEY").is_some() && process_lookup("PINECONE_HOST").is_some();
    let client = if real {
        println!("using PINECONE_HOST and PINECONE_API_KEY from the environment");
        pinecone::Client::from_env()?
    } else {
        let url = standin::start(index).await?;
        println!(
            "PINECONE_API_KEY/PINECONE_HOST are not set: using a local stand-in index at {url}"
        );
        let env = |var: &str| match var {
            "PINECONE_HOST" => Some(url.clone()),
            "PINECONE_API_KEY" => Some("stand-in-key".to_owned()),
            _ => process_lookup(var),
        };
        pinecone::Client::from_lookup(&env)?
    };
    let dim: usize = process_lookup("PINECONE_EXAMPLE_DIM")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3);
    let vector = vec![0.1_f32; dim];
    println!("client: {client:?}");
    for _ in 0..3 {
        let answer = client.query(&pinecone::Query::new(&vector, 2)).await?;
        for m in &answer.matches {
            println!("  {} score {:.2}", m.id, m.score);
        }
    }
    let s = client.pool().stats();
    println!(
        "pool {}: {} open, requests on new connections {}, on reused {}",
        s.name, s.open, s.requests_new, s.requests_reused
    );
    Ok(())
}
