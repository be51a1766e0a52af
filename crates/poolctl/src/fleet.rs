//! `poolctl check`'s fleet section: the instances holding leases in Redis for a pool's
//! `P_FLEET_BUDGET`, each one's share, and the total against the server's limit.

use std::time::Duration;

use poolkit_postgres::{FleetBudget, FleetConfig};
use poolkit_redis::redis;
use serde::Serialize;

/// One instance seen in Redis.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Instance {
    /// Its id (`pool:pid:random`).
    pub(crate) id: String,
    /// The connections its lease covers.
    pub(crate) share: u32,
    /// What it asks for (its ceiling).
    pub(crate) want: u32,
    /// Seconds until its lease expires unless renewed.
    pub(crate) expires_in: f64,
}

/// The fleet as Redis holds it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct FleetFacts {
    /// The Redis key prefix.
    pub(crate) key: String,
    /// The budget (`None`: `server`, computed by each instance from the server).
    pub(crate) budget: Option<u32>,
    /// Live instances, by id.
    pub(crate) instances: Vec<Instance>,
    /// The sum of the shares.
    pub(crate) total: u32,
}

/// Reads the fleet's leases.
///
/// # Errors
/// The Redis error, as text.
pub(crate) async fn read(fc: &FleetConfig) -> Result<FleetFacts, String> {
    let client = redis::Client::open(fc.redis_url.expose()).map_err(|e| e.to_string())?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    let k = &fc.key;
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let now_ms = secs * 1000 + micros / 1000;
    let alive: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(format!("{{{k}}}:alive"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let grants: std::collections::HashMap<String, u32> = redis::cmd("HGETALL")
        .arg(format!("{{{k}}}:held"))
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let wants: std::collections::HashMap<String, u32> = redis::cmd("HGETALL")
        .arg(format!("{{{k}}}:wants"))
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    #[allow(clippy::cast_precision_loss)]
    let instances: Vec<Instance> = alive
        .into_iter()
        .filter(|(_, exp)| *exp > now_ms)
        .map(|(id, exp)| Instance {
            share: grants.get(&id).copied().unwrap_or(0),
            want: wants.get(&id).copied().unwrap_or(0),
            expires_in: (exp - now_ms) as f64 / 1e3,
            id,
        })
        .collect();
    Ok(FleetFacts {
        key: k.clone(),
        budget: match fc.budget {
            FleetBudget::Fixed(n) => Some(n),
            _ => None,
        },
        total: instances.iter().map(|i| i.share).sum(),
        instances,
    })
}

/// Rows for the check's server table.
pub(crate) fn rows(f: &FleetFacts, max_connections: Option<i64>) -> Vec<(String, String)> {
    let mut rows = vec![(
        "fleet".to_owned(),
        format!(
            "{} at {} hold {} of budget {}{}",
            crate::format::instances(i64::try_from(f.instances.len()).unwrap_or(i64::MAX)),
            f.key,
            f.total,
            f.budget
                .map_or_else(|| "server".to_owned(), |b| b.to_string()),
            max_connections.map_or_else(String::new, |m| format!(" (max_connections {m})"))
        ),
    )];
    for i in &f.instances {
        rows.push((
            format!("  {}", i.id),
            format!(
                "share {} (wants {}), lease expires in {:.1}s",
                i.share, i.want, i.expires_in
            ),
        ));
    }
    rows
}
