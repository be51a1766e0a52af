//! The reqwest shapes: URLs as `&str`/`String`/`Uri`/`Url`, typed headers, `headers()`,
//! `basic_auth`, `bearer_auth`, `form`, serde `query`, async bodies, `bytes_stream`,
//! `P_MAX_BODY`, and redirects that never carry credentials to another host.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use poolkit_http::http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use poolkit_http::http::{HeaderMap, Uri};
use poolkit_http::{Config, Error, Pool};
use serde::Serialize;
use tokio::net::TcpListener;

type Handler = dyn Fn(&http::request::Parts, &[u8]) -> http::Response<Full<Bytes>> + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1:0 answering with `handler`; returns its base URL.
async fn serve(handler: Arc<Handler>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let handler = Arc::clone(&handler);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(handler(&parts, &body))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, task)
}

/// What the echo endpoint saw, as JSON.
fn echo(parts: &http::request::Parts, body: &[u8]) -> http::Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
        .collect();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(body),
    });
    http::Response::new(Full::new(Bytes::from(json.to_string())))
}

fn redirect(status: u16, to: &str) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("location", to)
        .body(Full::new(Bytes::from_static(b"moved")))
        .expect("response")
}

fn pool(name: &str, base: &str, max_body: Option<u64>) -> Pool {
    let mut c = Config::new(name);
    c.base_url = Some(base.to_owned());
    c.max_body = max_body;
    let mut p = Pool::builder().config(c);
    p = p.header("authorization", "Bearer pool-secret");
    p.build().expect("pool")
}

#[derive(Serialize)]
struct Search<'a> {
    q: &'a str,
    limit: u32,
    tags: Option<&'a str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_take_reqwest_shapes() {
    let (base, server) = serve(Arc::new(echo)).await;
    let pool = pool("shapes", &base, None);
    let as_string: String = format!("{base}/echo");
    let as_uri: Uri = as_string.parse().expect("uri");
    let as_url: url::Url = as_string.parse().expect("url");
    for r in [
        pool.get(as_string.as_str()).send().await,
        pool.get(&as_string).send().await,
        pool.get(as_string.clone()).send().await,
        pool.get(as_uri).send().await,
        pool.get(as_url).send().await,
        pool.get("/echo").send().await,
    ] {
        assert_eq!(r.expect("sent").status(), 200);
    }

    let mut extra = HeaderMap::new();
    extra.insert(
        HeaderName::from_static("x-one"),
        HeaderValue::from_static("1"),
    );
    extra.insert("x-two", HeaderValue::from_static("2"));
    let seen: serde_json::Value = pool
        .post("/echo?fixed=1")
        .header(ACCEPT, "application/json")
        .header(
            HeaderName::from_static("x-typed"),
            HeaderValue::from_static("yes"),
        )
        .header("x-str".to_owned(), "s".to_owned())
        .headers(extra)
        .basic_auth("aladdin", Some("open sesame"))
        .query(&[("a", "1"), ("b", "two words")])
        .query(&Search {
            q: "ü&x",
            limit: 5,
            tags: None,
        })
        .form(&[("name", "poolkit"), ("n", "1")])
        .send()
        .await
        .expect("sent")
        .error_for_status()
        .expect("2xx")
        .json()
        .await
        .expect("json");
    let h = &seen["headers"];
    assert_eq!(h["accept"], "application/json");
    assert_eq!(
        (h["x-typed"].as_str(), h["x-str"].as_str()),
        (Some("yes"), Some("s"))
    );
    assert_eq!(
        (h["x-one"].as_str(), h["x-two"].as_str()),
        (Some("1"), Some("2"))
    );
    assert_eq!(h["authorization"], "Basic YWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    assert_eq!(h["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(seen["body"], "name=poolkit&n=1");
    assert_eq!(
        seen["uri"],
        "/echo?fixed=1&a=1&b=two+words&q=%C3%BC%26x&limit=5"
    );

    let bearer: serde_json::Value = pool
        .get("/echo")
        .bearer_auth("t0ken")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(bearer["headers"]["authorization"], "Bearer t0ken");
    let text = pool
        .get("/echo")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(text.contains("\"method\":\"GET\""), "{text}");
    let bytes = pool
        .get("/echo")
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.first(), Some(&b'{'));
    let bad = pool
        .get("/echo")
        .header("x-bad", "line\nbreak")
        .send()
        .await;
    assert!(matches!(bad, Err(Error::InvalidRequest { .. })), "{bad:?}");
    assert_eq!(pool.stats().timeouts, 0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_and_the_cap_is_a_typed_error() {
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let body = big.clone();
    let (base, server) = serve(Arc::new(move |_: &http::request::Parts, _: &[u8]| {
        http::Response::builder()
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body.clone()))
            .expect("response")
    }))
    .await;
    let pool = pool("shapes_big", &base, Some(100_000));
    let r = pool.get("/big").send().await.expect("head");
    assert_eq!(r.content_length(), Some(1 << 20));
    let e = r.bytes().await.expect_err("over P_MAX_BODY");
    assert!(
        matches!(e, Error::BodyTooLarge { limit: 100_000, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("SHAPES_BIG_MAX_BODY"), "{e}");

    let mut total = 0;
    let mut stream = Box::pin(pool.get("/big").send().await.expect("head").bytes_stream());
    while let Some(piece) = stream.next().await {
        total += piece.expect("a piece").len();
    }
    assert_eq!(total, big.len());
    drop(stream);
    // The streamed connection went back to the pool and is reused.
    let again = pool.get("/big").send().await.expect("head");
    assert!(
        !again.new_connection(),
        "the connection was returned after the stream ended"
    );
    drop(again);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_follow_the_policy_and_keep_credentials_home() {
    let (other, other_server) = serve(Arc::new(echo)).await;
    let target = format!("{other}/echo");
    let (base, server) = serve(Arc::new(
        move |parts: &http::request::Parts, body: &[u8]| {
            let path = parts.uri.path();
            if let Some(n) = path.strip_prefix("/hop/") {
                let n: u32 = n.parse().unwrap_or(0);
                return if n == 0 {
                    echo(parts, body)
                } else {
                    redirect(302, &format!("/hop/{}", n - 1))
                };
            }
            match path {
                "/see-other" => redirect(303, "/echo"),
                "/keep" => redirect(307, "echo"),
                "/away" => redirect(302, &target),
                "/downgrade" => redirect(302, "https://127.0.0.1:1/echo"),
                _ => echo(parts, body),
            }
        },
    ))
    .await;
    let pool = pool("shapes_redirect", &base, None);

    let r = pool
        .get("/hop/10")
        .send()
        .await
        .expect("10 hops are allowed");
    assert_eq!(r.url().path(), "/hop/0");
    let e = pool
        .get("/hop/11")
        .send()
        .await
        .expect_err("11 are too many");
    assert!(
        matches!(e, Error::TooManyRedirects { limit: 10, .. }),
        "{e:?}"
    );

    let posted: serde_json::Value = pool
        .post("/see-other")
        .body("x")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (posted["method"].as_str(), posted["body"].as_str()),
        (Some("GET"), Some(""))
    );
    let kept: serde_json::Value = pool
        .put("/keep")
        .body("y")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (kept["method"].as_str(), kept["body"].as_str()),
        (Some("PUT"), Some("y"))
    );
    assert_eq!(kept["headers"]["authorization"], "Bearer pool-secret");

    // Another host: neither the pool's Authorization nor the request's goes along.
    let away: serde_json::Value = pool
        .get("/away")
        .bearer_auth("request-secret")
        .header("x-keep", "1")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(away["uri"], "/echo");
    assert!(away["headers"].get("authorization").is_none(), "{away}");
    assert_eq!(away["headers"]["x-keep"], "1");

    // Another scheme is not followed: the 302 comes back as is.
    let down = pool.get("/downgrade").send().await.expect("sent");
    assert_eq!(down.status(), 302);
    server.abort();
    other_server.abort();
}
