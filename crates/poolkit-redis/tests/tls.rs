//! `rediss://` against a private TLS redis-server with a throwaway CA.

mod common;

use std::time::Duration;

use poolkit_redis::redis::AsyncCommands;
use poolkit_redis::{Config, Pool};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn config(url: &str, name: &str, root: Option<std::path::PathBuf>) -> Config {
    let mut config = Config::new(url);
    config.pool.name = name.into();
    config.pool.prefix = name.to_ascii_uppercase();
    config.pool.acquire_timeout = Duration::from_secs(3);
    config.tls_root_cert = root;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_works_and_an_unknown_ca_is_refused() {
    let right = ca("poolkit redis test CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &right)
        .expect("server cert");
    let dir = std::env::temp_dir().join(format!("poolkit-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert_file, key_file, ca_file) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    std::fs::write(&ca_file, right.pem()).expect("write");
    let tls_port = common::free_port();
    let server = common::PrivateRedis::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert_file.to_str().expect("utf-8 path"),
        "--tls-key-file",
        key_file.to_str().expect("utf-8 path"),
        "--tls-ca-cert-file",
        ca_file.to_str().expect("utf-8 path"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let pool = Pool::new(config(&url, "redis_tls", Some(ca_file.clone())))
        .await
        .expect("a rediss:// pool trusting the private CA");
    let mut con = pool.clone();
    let () = con.set("tls:k", "over TLS").await.expect("set");
    let got: String = con.get("tls:k").await.expect("get");
    assert_eq!(got, "over TLS");
    let mut exclusive = pool.exclusive().await.expect("an exclusive TLS connection");
    let pong: String = poolkit_redis::redis::cmd("PING")
        .query_async(&mut exclusive)
        .await
        .expect("ping");
    assert_eq!(pong, "PONG");
    // The plain port of the same server confirms the value went through TLS to it.
    assert_eq!(server.cli(None, &["GET", "tls:k"]).trim(), "over TLS");

    // Without the CA (web roots only), the certificate is refused, with the reason.
    let err = Pool::new(config(&url, "redis_tls_untrusted", None))
        .await
        .expect_err("an unknown CA is refused");
    let msg = err.to_string();
    assert!(
        msg.to_lowercase().contains("certificate") || msg.contains("UnknownIssuer"),
        "{msg}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
