//! Following a Redis Sentinel failover as it happens: a task per pool subscribes to the
//! sentinels' `+switch-master` channel (the way Jedis, Lettuce and redis-py do) and, when
//! the pool's master is switched, retires every connection so that new ones ask the
//! sentinels again. Without it, a master demoted by a failover it did not see go down
//! keeps taking writes until the sentinels reconfigure it (writes later lost in the
//! resync); connections also move on READONLY and dropped connections, as without
//! Sentinel.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;

use crate::config::SentinelConfig;
use crate::failover::Failover;

/// How often a quiet subscription checks that its pool still exists.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Starts the watch; it ends when the pool is dropped.
pub(crate) fn start(sentinel: &SentinelConfig, timeout: Duration, failover: Weak<Failover>) {
    let nodes: Vec<String> = sentinel
        .nodes
        .iter()
        .map(|n| n.expose().to_owned())
        .collect();
    let master = sentinel.master.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            for node in &nodes {
                if failover.strong_count() == 0 {
                    return;
                }
                let Ok(client) = redis::Client::open(node.as_str()) else {
                    continue;
                };
                let Ok(Ok(mut pubsub)) =
                    tokio::time::timeout(timeout, client.get_async_pubsub()).await
                else {
                    continue;
                };
                if pubsub.subscribe("+switch-master").await.is_err() {
                    continue;
                }
                delay = Duration::from_millis(100);
                let mut messages = pubsub.on_message();
                loop {
                    match tokio::time::timeout(CHECK_EVERY, messages.next()).await {
                        Ok(Some(msg)) => {
                            let payload: String = msg.get_payload().unwrap_or_default();
                            // "<master> <old ip> <old port> <new ip> <new port>"
                            if payload.split_whitespace().next() == Some(master.as_str()) {
                                let Some(failover) = failover.upgrade() else {
                                    return;
                                };
                                failover.switched(&payload);
                            }
                        }
                        Ok(None) => break,
                        Err(_) if failover.strong_count() == 0 => return,
                        Err(_) => {}
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    });
}
