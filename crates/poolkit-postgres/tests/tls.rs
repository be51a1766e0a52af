//! TLS against a private PostgreSQL with ssl=on and a throwaway CA made by the test.

mod common;

use std::process::Command;
use std::time::Duration;

use poolkit_postgres::{Error, Pool, SslMode};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

async fn pool(url: String, name: &str) -> Result<Pool, Error> {
    Pool::builder()
        .url(url)
        .name(name)
        .min_idle(1)
        // Long: a certificate that does not verify must fail at once, not after this.
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
}

async fn uses_ssl(pool: &Pool) -> bool {
    let conn = pool.get().await.expect("get");
    conn.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .expect("pg_stat_ssl")
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_server_with_a_throwaway_ca() {
    let right = ca("poolkit test CA");
    let wrong = ca("some other CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &right)
        .expect("server cert");
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let server = common::PrivateCluster::start(
        "tls",
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'",
        |data| {
            std::fs::write(data.join("server.crt"), &cert_pem).expect("cert");
            std::fs::write(data.join("server.key"), &key_pem).expect("key");
            let status = Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status()
                .expect("chmod");
            assert!(status.success());
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status()
                .expect("chown");
            assert!(status.success());
        },
    );
    let certs = server.dir.join("certs");
    std::fs::create_dir_all(&certs).expect("dir");
    let (right_pem, wrong_pem) = (certs.join("right.pem"), certs.join("wrong.pem"));
    std::fs::write(&right_pem, right.pem()).expect("write");
    std::fs::write(&wrong_pem, wrong.pem()).expect("write");

    let p = pool(server.url("127.0.0.1", "sslmode=require"), "t_tls_require")
        .await
        .expect("require connects without verifying");
    assert!(uses_ssl(&p).await, "require encrypts");

    let p = pool(
        server.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", right_pem.display()),
        ),
        "t_tls_full",
    )
    .await
    .expect("verify-full with the right CA");
    assert!(uses_ssl(&p).await);

    let started = std::time::Instant::now();
    let err = pool(
        server.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", wrong_pem.display()),
        ),
        "t_tls_wrong_ca",
    )
    .await
    .expect_err("wrong CA");
    let msg = err.to_string();
    assert!(
        err.is_connect() && msg.contains("TLS") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let err = pool(
        server.url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", right_pem.display()),
        ),
        "t_tls_wrong_host",
    )
    .await
    .expect_err("wrong host");
    let msg = err.to_string();
    assert!(
        err.is_connect() && msg.contains("not valid for name"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let p = pool(
        server.url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={}", right_pem.display()),
        ),
        "t_tls_ca",
    )
    .await
    .expect("verify-ca ignores the name");
    assert!(uses_ssl(&p).await);

    let p = Pool::builder()
        .url(server.url("127.0.0.1", ""))
        .name("t_tls_off")
        .ssl_mode(SslMode::Disable)
        .min_idle(1)
        .build()
        .await
        .expect("disable");
    assert!(!uses_ssl(&p).await, "disable stays plain");

    let err = pool(
        server.url(
            "localhost",
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ),
        "t_tls_nofile",
    )
    .await
    .expect_err("missing file");
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("SSLROOTCERT"),
        "{err}"
    );
}
