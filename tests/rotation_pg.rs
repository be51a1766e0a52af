//! Rotating credentials against a private PostgreSQL with password (md5) logins.
//!
//! - `rotation_under_load`: `ALTER ROLE … PASSWORD` and then, 600 ms later (longer than the
//!   connections' 500 ms lifetime, so new logins are refused in between), the password file
//!   swapped and the token provider's secret changed, under 1,000 tasks: 0 failed
//!   statements; the refused logins show in health while they last; afterwards every
//!   connection logged in with the new secret.
//! - `a_wrong_new_password`: the file swapped to a wrong password: health degrades and names
//!   the file, a caller that needs a new connection gets `PoolError::Credentials` naming the
//!   file, and the connections already open keep serving.
//!
//! The secret never appears in an error, a `Debug`, a log line (TRACE) or health.
#![cfg(feature = "postgres")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Cluster, HBA_PASSWORDS, LogBuffer, MARKER, TempDir};
use poolkit::postgres::{Error, Pool};
use poolkit_core::{HealthStatus, Token};

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every log line of this test binary, at TRACE.
fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(buffer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buffer
    })
}

fn secret(which: &str) -> String {
    format!("{MARKER}{which}")
}

/// Replaces the file's content at once (write aside, rename), as a secret mount does.
fn swap(path: &Path, content: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, content).expect("write the new secret");
    std::fs::rename(&aside, path).expect("swap the secret in");
}

fn cluster_with_app(password: &str) -> Cluster {
    let pg = Cluster::primary("127.0.0.1", None, Some(HBA_PASSWORDS));
    pg.sql(&format!(
        "SET password_encryption = 'md5'; CREATE ROLE app LOGIN PASSWORD '{password}'"
    ));
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load() {
    let logs = logs();
    let _turn = TURN.lock().await;
    let pg = tokio::task::spawn_blocking(|| cluster_with_app(&secret("old")))
        .await
        .unwrap();
    let dir = TempDir::new("rotation");
    let file = dir.0.join("db-password");
    std::fs::write(&file, format!("{}\n", secret("old"))).unwrap();
    let url = format!("postgres://app@127.0.0.1:{}/postgres", pg.port);
    let by_file = Pool::builder()
        .url(&url)
        .name("rotation_file")
        .password_file(&file)
        .pool_size(8)
        .min_idle(8)
        .max_lifetime(Some(Duration::from_millis(500)))
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("pool with the password file");
    let current = Arc::new(Mutex::new(secret("old")));
    let provider_calls = Arc::new(AtomicU64::new(0));
    let (now, calls) = (current.clone(), provider_calls.clone());
    let by_provider = Pool::builder()
        .url(&url)
        .name("rotation_token")
        .password_provider("the test token provider", move || {
            calls.fetch_add(1, SeqCst);
            let token = now.lock().unwrap().clone();
            async move { Ok(Token::expires_in(token, Duration::from_secs(2))) }
        })
        .pool_size(8)
        .min_idle(8)
        .max_lifetime(Some(Duration::from_millis(500)))
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("pool with the token provider");

    let built = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let tasks: Vec<_> = (0..1000u32)
        .map(|t| {
            let pool = if t.is_multiple_of(2) {
                by_file.clone()
            } else {
                by_provider.clone()
            };
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    let r = async {
                        let c = pool.get().await?;
                        c.simple_query("SELECT 1").await?;
                        Ok::<_, Error>(())
                    }
                    .await;
                    match r {
                        Ok(()) => {
                            ok.fetch_add(1, SeqCst);
                        }
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (file_created, token_created) = (by_file.stats().created, by_provider.stats().created);
    let calls_before = provider_calls.load(SeqCst);
    let since_build = built.elapsed();
    pg.sql(&format!(
        "SET password_encryption = 'md5'; ALTER ROLE app PASSWORD '{}'",
        secret("new")
    ));
    // The server wants the new secret; the file and the provider still have the old one.
    let window = Instant::now();
    let mut refused_seen = (false, false);
    while window.elapsed() < Duration::from_millis(600) {
        let (f, t) = (by_file.health(), by_provider.health());
        refused_seen.0 |= f
            .alerts
            .iter()
            .any(|a| a.message.contains("ROTATION_FILE_PASSWORD_FILE="));
        refused_seen.1 |= t
            .alerts
            .iter()
            .any(|a| a.message.contains("the test token provider"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_logins = (
        by_file.stats().errors_by("connect"),
        by_provider.stats().errors_by("connect"),
    );
    swap(&file, &secret("new"));
    *current.lock().unwrap() = secret("new");
    let swapped = Instant::now();
    let calls_at_swap = provider_calls.load(SeqCst);
    let created_at_swap = by_provider.stats().created;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    let failed = failed.lock().unwrap().clone();
    let app_sessions = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'");
    let (fs, ts) = (by_file.stats(), by_provider.stats());
    println!(
        "FIGURES rotation_pg: {} statements ok, {} failed; logins refused in the 600 ms window: file {}, provider {}; connections opened after the ALTER: file {}, provider {}; provider asked {} times; health showed the refusal: file {}, provider {}; {app_sessions} sessions of app at the end, {:.1} s after the swap",
        ok.load(SeqCst),
        failed.len(),
        refused_logins.0,
        refused_logins.1,
        fs.created - file_created,
        ts.created - token_created,
        provider_calls.load(SeqCst),
        refused_seen.0,
        refused_seen.1,
        swapped.elapsed().as_secs_f64(),
    );
    assert!(
        failed.is_empty(),
        "failed statements: {:?}",
        &failed[..failed.len().min(3)]
    );
    assert!(
        refused_logins.0 > 0 && refused_logins.1 > 0,
        "no login was tried in the window"
    );
    assert!(
        refused_seen.0 && refused_seen.1,
        "health did not show the refused secret"
    );
    for (pool, h) in [
        ("file", by_file.health()),
        ("provider", by_provider.health()),
    ] {
        assert!(
            !h.alerts.iter().any(|a| a.message.contains("refused")),
            "{pool}: the refusal is still reported after a login succeeded: {:?}",
            h.alerts
        );
    }
    assert!(fs.created - file_created >= 8 && ts.created - token_created >= 8);
    // The token (2 s, stale 0.2 s before its expiry) is reused while fresh: the provider
    // is asked once per 1.8 s, plus once when the server refuses the cached token (the
    // connects refused together ask once between them).
    let fetches_within = |d: Duration| 1 + u64::try_from(d.as_millis() / 1800).unwrap_or(u64::MAX);
    assert!(
        calls_before <= fetches_within(since_build) && token_created >= 8,
        "before the ALTER: {calls_before} provider calls for {token_created} connections in {since_build:?}"
    );
    let after = provider_calls.load(SeqCst) - calls_at_swap;
    let after_created = ts.created - created_at_swap;
    assert!(
        after <= 1 + fetches_within(swapped.elapsed()) && after_created >= 8,
        "after the swap: {after} provider calls for {after_created} connections in {:?}",
        swapped.elapsed()
    );
    let text = logs.text();
    assert!(!text.contains(MARKER), "a secret in the logs");
    assert!(!format!("{by_file:?} {by_provider:?} {:?}", by_file.config()).contains(MARKER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_new_password() {
    let logs = logs();
    let _turn = TURN.lock().await;
    let pg = tokio::task::spawn_blocking(|| cluster_with_app(&secret("good")))
        .await
        .unwrap();
    let dir = TempDir::new("rotation-bad");
    let file = dir.0.join("db-password");
    std::fs::write(&file, secret("good")).unwrap();
    let pool = Pool::builder()
        .url(format!("postgres://app@127.0.0.1:{}/postgres", pg.port))
        .name("rotation_bad")
        .password_file(&file)
        .pool_size(4)
        .min_idle(2)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_millis(700))
        .build()
        .await
        .expect("pool with the good password");
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    swap(&file, &secret("wrong"));
    let asked = Instant::now();
    let e = pool
        .get()
        .await
        .expect_err("a new connection cannot log in");
    let waited = asked.elapsed();
    let msg = e.to_string();
    assert!(e.is_credentials(), "{e:?}");
    assert!(
        msg.contains("ROTATION_BAD_PASSWORD_FILE=") && msg.contains(&file.display().to_string()),
        "the error names the file: {msg}"
    );
    assert!(msg.contains("password authentication failed"), "{msg}");
    let h = pool.health();
    assert!(h.status >= HealthStatus::Warning, "{h:?}");
    let alert = h
        .alerts
        .iter()
        .find(|a| a.message.contains("refused"))
        .expect("an alert about the refused secret");
    assert!(
        alert.message.contains("ROTATION_BAD_PASSWORD_FILE="),
        "{}",
        alert.message
    );
    assert!(
        alert
            .message
            .contains("2 connections opened earlier keep serving"),
        "{}",
        alert.message
    );
    // The connections opened with the good password keep serving.
    a.simple_query("SELECT 1").await.expect("a serves");
    b.simple_query("SELECT 1").await.expect("b serves");
    drop((a, b));
    for _ in 0..20 {
        let c = pool.get().await.expect("an open connection");
        c.simple_query("SELECT 1").await.expect("serves");
    }
    println!(
        "FIGURES rotation_pg wrong password: PoolError::Credentials after {waited:.0?}: {msg}; health {} with: {}; 2 old connections served 2 + 20 statements",
        h.status, alert.message
    );
    for shown in [
        msg,
        format!("{e:?}"),
        format!("{h:?}"),
        format!("{:?}", pool.stats()),
        format!("{pool:?}"),
        logs.text(),
    ] {
        assert!(!shown.contains(MARKER), "a secret shown: {shown}");
    }
}
