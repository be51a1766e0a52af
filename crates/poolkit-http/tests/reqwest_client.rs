//! `reqwest_client`: a `reqwest::Client` from the same variables, counting the
//! connections it opens and registered with the monitor, against local HTTP/1.1 and h2
//! servers.

mod common;
use poolkit_test_support as ports;

use std::time::Duration;

use common::{Mode, Opts, serve};
use poolkit_http::{Config, reqwest_client_with};

fn config(name: &str, server: &common::Server) -> Config {
    let mut c = common::config(name, server, 4);
    c.pool.idle_timeout = Some(Duration::from_millis(300));
    c
}

async fn burst(client: &reqwest::Client, url: &str, n: usize) -> Vec<reqwest::Version> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let r = client.get(&url).send().await?;
                let version = r.version();
                assert_eq!(r.status(), 200);
                assert_eq!(r.text().await?, "ok");
                Ok::<_, reqwest::Error>(version)
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.expect("task").expect("request"));
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reqwest_client_from_poolkit_config_over_h2_and_http1() {
    let h2 = serve(Opts::new(Mode::Tls)).await;
    let client = reqwest_client_with(&config("rq_h2", &h2)).expect("client");
    // reqwest learns HTTP/2 from ALPN only once a connection is up: a cold burst opens one
    // connection per request (docs/http.md). Warm it with one request first.
    burst(&client, &format!("{}/", h2.url()), 1).await;
    let versions = burst(&client, &format!("{}/", h2.url()), 50).await;
    assert!(
        versions.iter().all(|v| *v == reqwest::Version::HTTP_2),
        "{versions:?}"
    );
    let stats = poolkit_core::pool("rq_h2")
        .expect("registered with the monitor")
        .stats();
    assert_eq!(stats.backend, "http");
    // One multiplexed HTTP/2 connection carries the burst.
    assert_eq!(stats.created, 1, "{stats:?}");
    assert_eq!(stats.errors_by("connect"), 0);

    let h1 = serve(Opts::new(Mode::Http1)).await;
    let client = reqwest_client_with(&config("rq_h1", &h1)).expect("client");
    for _ in 0..3 {
        burst(&client, &format!("{}/", h1.url()), 1).await;
    }
    let created = poolkit_core::pool("rq_h1")
        .expect("registered")
        .stats()
        .created;
    assert_eq!(
        created, 1,
        "sequential requests reuse the kept-alive connection"
    );
    // Past P_IDLE_TIMEOUT the idle connection is dropped and a new one opened.
    tokio::time::sleep(Duration::from_millis(800)).await;
    burst(&client, &format!("{}/", h1.url()), 1).await;
    let created = poolkit_core::pool("rq_h1")
        .expect("registered")
        .stats()
        .created;
    assert_eq!(created, 2, "the idle connection expired");

    // A refused connect is counted as a connect error.
    // Outside the kernel's ephemeral range: no socket is handed it while the test runs.
    let port = ports::child_port();
    let mut c = Config::new("rq_refused");
    c.connect_timeout = Duration::from_secs(2);
    let client = reqwest_client_with(&c).expect("client");
    let e = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect_err("refused");
    assert!(e.is_connect(), "{e:?}");
    let stats = poolkit_core::pool("rq_refused")
        .expect("registered")
        .stats();
    assert_eq!(
        (stats.created, stats.errors_by("connect")),
        (0, 1),
        "{stats:?}"
    );
}
