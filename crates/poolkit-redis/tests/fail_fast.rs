//! Connect errors that retrying cannot fix fail at once with the server's reason, as in the
//! PostgreSQL pool: a wrong password or an unknown user, against the real Redis, with an
//! ACL user this test creates and removes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use poolkit_redis::{Config, Error, Pool, redis};

/// An ACL user that exists for the life of the test, removed when dropped.
struct AclUser {
    admin: Pool,
    name: String,
}

impl AclUser {
    async fn create(admin: Pool, name: &str, password: &str) -> Self {
        admin
            .query::<()>(
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(name)
                    .arg("reset")
                    .arg("on")
                    .arg(format!(">{password}"))
                    .arg("~poolkit:*")
                    .arg("+@all"),
            )
            .await
            .expect("ACL SETUSER");
        Self {
            admin,
            name: name.to_owned(),
        }
    }

    async fn set_password(&self, password: &str) {
        self.admin
            .query::<()>(
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(&self.name)
                    .arg("resetpass")
                    .arg(format!(">{password}")),
            )
            .await
            .expect("ACL SETUSER resetpass");
    }

    async fn delete(&self) {
        self.admin
            .query::<i64>(redis::cmd("ACL").arg("DELUSER").arg(&self.name))
            .await
            .expect("ACL DELUSER");
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        // A test that fails midway still removes its user.
        let url = redis_url();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(url)
                && let Ok(mut conn) = client.get_connection()
            {
                let _: redis::RedisResult<i64> =
                    redis::cmd("ACL").arg("DELUSER").arg(&name).query(&mut conn);
            }
        })
        .join();
    }
}

/// `redis://user:password@host:port` on the shared server.
fn url_for(user: &str, password: &str) -> String {
    let base = redis_url();
    let rest = base.trim_start_matches("redis://");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("redis://{user}:{password}@{host}")
}

/// A pool that would wait 30 s for a connection: failing in under a second means the
/// error was classified as one retrying cannot fix.
fn config(name: &str, url: String) -> Config {
    let mut config = Config::new(url);
    config.pool.name = name.to_owned();
    config.pool.prefix = name.to_ascii_uppercase();
    config.pool.pool_size = 1;
    config.pool.min_idle = 0;
    config.pool.acquire_timeout = Duration::from_secs(30);
    config
}

fn assert_fast(err: &Error, took: Duration, reason: &str) {
    let msg = err.to_string();
    assert!(err.is_connect(), "{msg}");
    assert!(
        msg.contains(reason),
        "the server's reason `{reason}` in: {msg}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_unknown_user_fails_in_under_a_second() {
    let user = format!("poolkit_ff_{}", std::process::id());
    let acl = AclUser::create(shared_pool("t_ff_admin", 1).await, &user, "right_one").await;

    // At build: the shared connections' login is refused.
    let started = Instant::now();
    let err = Pool::new(config("t_ff_build", url_for(&user, "wrong_one")))
        .await
        .expect_err("wrong password");
    assert_fast(&err, started.elapsed(), "refused the login");

    // A pool that worked, whose exclusive checkout then meets a changed password: the
    // shared connections stay logged in, a new exclusive connection is refused.
    let pool = Pool::new(config("t_ff_exclusive", url_for(&user, "right_one")))
        .await
        .expect("the right password");
    assert_eq!(
        pool.exclusive_stats().open,
        0,
        "min_idle 0: no exclusive connection yet"
    );
    acl.set_password("rotated_elsewhere").await;
    let started = Instant::now();
    let err = pool.exclusive().await.expect_err("a new login is refused");
    assert_fast(&err, started.elapsed(), "refused the login");
    let pong: String = pool
        .query(&redis::cmd("PING"))
        .await
        .expect("the shared connections logged in before the change still serve");
    assert_eq!(pong, "PONG");

    // An unknown user (deleted): refused the same way, at once.
    acl.delete().await;
    let started = Instant::now();
    let err = Pool::new(config("t_ff_unknown", url_for(&user, "right_one")))
        .await
        .expect_err("unknown user");
    assert_fast(&err, started.elapsed(), "refused the login");
}
