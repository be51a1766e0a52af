//! The Supabase and Pinecone presets against local stand-in APIs, env errors, and keys
//! that never show.

mod common;

use http::{HeaderMap, Method};
use poolkit_http::{Error, pinecone, supabase};

const KEY: &str = "sk-MARKER-7f3a9c-secret";

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn supabase_api(method: &Method, pq: &str, h: &HeaderMap, _: &[u8]) -> (u16, String) {
    if header(h, "apikey") != KEY || header(h, "authorization") != format!("Bearer {KEY}") {
        return (401, r#"{"message":"Invalid API key"}"#.to_owned());
    }
    match (method, pq) {
        (&Method::GET, "/rest/v1/items?select=id%2Cname&id=eq.7") => {
            (200, r#"[{"id":7,"name":"seven"}]"#.to_owned())
        }
        _ => (404, format!(r#"{{"message":"no route {method} {pq}"}}"#)),
    }
}

fn pinecone_api(method: &Method, pq: &str, h: &HeaderMap, body: &[u8]) -> (u16, String) {
    if header(h, "api-key") != KEY {
        return (401, "{}".to_owned());
    }
    let q: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match (method, pq) {
        (&Method::POST, "/query")
            if q["topK"] == 2 && q["vector"].as_array().map(Vec::len) == Some(3) =>
        {
            (
                200,
                format!(
                    r#"{{"matches":[{{"id":"a","score":0.9,"metadata":{{"ns":{}}}}},{{"id":"b","score":0.5}}],"namespace":{}}}"#,
                    q["namespace"], q["namespace"]
                ),
            )
        }
        _ => (400, r#"{"message":"bad query"}"#.to_owned()),
    }
}

fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn supabase_select_sends_both_key_headers() {
    let server = common::serve_fn(supabase_api).await;
    let env = lookup(vec![
        ("SUPABASE_URL", server.url()),
        ("SUPABASE_SERVICE_ROLE_KEY", KEY.to_owned()),
        ("SUPABASE_POOL_SIZE", "3".to_owned()),
    ]);
    let client = supabase::Client::from_lookup(&env).unwrap();
    assert_eq!(client.pool().config().pool.pool_size, 3);
    // The default keep-alive count follows the ceiling (3 here), so the preset never
    // contradicts itself; SUPABASE_MAX_KEEPALIVE still sets it.
    assert_eq!(
        client.pool().config().max_keepalive,
        3,
        "SUPABASE_MAX_KEEPALIVE default"
    );
    let rows = client
        .select("items", "id,name", &[("id", "eq.7")])
        .await
        .unwrap();
    assert_eq!(rows, serde_json::json!([{"id": 7, "name": "seven"}]));
    let e = client.select("missing", "*", &[]).await.unwrap_err();
    assert_eq!(e.status(), Some(http::StatusCode::NOT_FOUND), "{e}");
    let e = client.select("bad table", "*", &[]).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
    let r = client
        .request(Method::GET, "/rest/v1/items?select=id%2Cname&id=eq.7")
        .send()
        .await
        .unwrap();
    assert!(!r.new_connection(), "keep-alive reused");
    // SUPABASE_KEY works when the service-role key is absent.
    let env = lookup(vec![
        ("SUPABASE_URL", server.url()),
        ("SUPABASE_KEY", KEY.to_owned()),
    ]);
    let client = supabase::Client::from_lookup(&env).unwrap();
    assert_eq!(
        client
            .select("items", "id,name", &[("id", "eq.7")])
            .await
            .unwrap()[0]["id"],
        7
    );
}

#[tokio::test]
async fn pinecone_query_sends_the_api_key() {
    let server = common::serve_fn(pinecone_api).await;
    let env = lookup(vec![
        ("PINECONE_HOST", server.url()),
        ("PINECONE_API_KEY", KEY.to_owned()),
    ]);
    let client = pinecone::Client::from_lookup(&env).unwrap();
    let c = client.pool().config();
    assert_eq!((c.pool.pool_size, c.pool.ceiling()), (10, 20));
    let v = [0.1, 0.2, 0.3];
    let r = client
        .query(&pinecone::Query::new(&v, 2).namespace("docs"))
        .await
        .unwrap();
    assert_eq!(r.namespace, "docs");
    assert_eq!(
        r.matches.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(r.matches[0].score > r.matches[1].score);
    let e = client
        .query(&pinecone::Query::new(&v, 5))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(http::StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("bad query"), "{e}");
}

#[tokio::test]
async fn missing_and_bad_env_values_are_named_errors() {
    let cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (
            vec![("SUPABASE_SERVICE_ROLE_KEY", KEY.into())],
            "SUPABASE_URL",
        ),
        (
            vec![("SUPABASE_URL", "https://x.supabase.co".into())],
            "SUPABASE_SERVICE_ROLE_KEY or SUPABASE_KEY",
        ),
        (
            vec![
                ("SUPABASE_URL", "https://x.supabase.co".into()),
                ("SUPABASE_KEY", KEY.into()),
                ("SUPABASE_POOL_SIZE", "twenty".into()),
            ],
            "SUPABASE_POOL_SIZE",
        ),
        (
            vec![
                ("SUPABASE_URL", "https://x.supabase.co".into()),
                ("SUPABASE_KEY", KEY.into()),
                ("SUPABASE_TIMEOUT", "30 seconds".into()),
            ],
            "SUPABASE_TIMEOUT",
        ),
        (
            vec![
                ("SUPABASE_URL", "https://x.supabase.co".into()),
                ("SUPABASE_KEY", KEY.into()),
                ("SUPABASE_MAX_KEEPALIVE", "-1".into()),
            ],
            "SUPABASE_MAX_KEEPALIVE",
        ),
        (
            vec![
                ("SUPABASE_URL", "postgres://x".into()),
                ("SUPABASE_KEY", KEY.into()),
            ],
            "SUPABASE_URL",
        ),
    ];
    for (vars, var) in cases {
        let e = supabase::Client::from_lookup(&lookup(vars)).unwrap_err();
        let Error::Config(c) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(c.var(), var, "{e}");
        assert!(!e.to_string().contains(KEY), "{e}");
    }
    let host = ("PINECONE_HOST", "idx.svc.pinecone.io".to_owned());
    let key = ("PINECONE_API_KEY", KEY.to_owned());
    for (extra, var) in [
        (("PINECONE_POOL_MAXSIZE", "5"), "PINECONE_POOL_MAXSIZE"),
        (("PINECONE_POOL_TIMEOUT", "soon"), "PINECONE_POOL_TIMEOUT"),
        (("PINECONE_POOL_SIZE", "0"), "PINECONE_POOL_SIZE"),
    ] {
        let vars = vec![host.clone(), key.clone(), (extra.0, extra.1.to_owned())];
        let e = pinecone::Client::from_lookup(&lookup(vars)).unwrap_err();
        assert!(e.to_string().contains(var), "{e}");
    }
    let e = pinecone::Client::from_lookup(&lookup(vec![host])).unwrap_err();
    assert!(e.to_string().contains("PINECONE_API_KEY"), "{e}");
    let e = pinecone::Client::from_lookup(&lookup(vec![key])).unwrap_err();
    assert!(e.to_string().contains("PINECONE_HOST"), "{e}");
}

#[tokio::test]
async fn keys_never_appear_in_debug_errors_or_stats() {
    let server = common::serve_fn(supabase_api).await;
    let env = lookup(vec![
        ("SUPABASE_URL", server.url()),
        ("SUPABASE_KEY", KEY.to_owned()),
    ]);
    let sb = supabase::Client::from_lookup(&env).unwrap();
    let env = lookup(vec![
        ("PINECONE_HOST", server.url()),
        ("PINECONE_API_KEY", KEY.to_owned()),
    ]);
    let pc = pinecone::Client::from_lookup(&env).unwrap();
    let e = sb.select("nope", "*", &[]).await.unwrap_err();
    let builder = sb
        .request(Method::GET, "/x")
        .bearer_auth(poolkit_http::Secret::new(KEY));
    let shown = format!(
        "{sb:?} {pc:?} {:?} {:?} {e} {e:?} {builder:?} {:?} {:?}",
        sb.pool(),
        pc.pool(),
        sb.pool().stats(),
        sb.pool().health()
    );
    assert!(
        shown.contains("***") || shown.contains("Sensitive"),
        "{shown}"
    );
    assert!(!shown.contains("MARKER"), "a key leaked: {shown}");
}
