//! `MonitorConfig`: where the monitor listens, its token and which endpoints are open.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use poolkit_core::env::{Env, parse_duration, process_lookup};
use poolkit_core::{ConfigError, Secret, Thresholds};

/// The variable holding the listening address.
pub const ADDR_VAR: &str = "POOLKIT_MONITOR_ADDR";
/// The variable holding the bearer token.
pub const TOKEN_VAR: &str = "POOLKIT_MONITOR_TOKEN";
/// The variable listing endpoints served without a token.
pub const OPEN_VAR: &str = "POOLKIT_MONITOR_OPEN";
/// The variable bounding one live health ping.
pub const PING_TIMEOUT_VAR: &str = "POOLKIT_MONITOR_PING_TIMEOUT";

/// The `POOLKIT_*` variables poolkit reads (the rest are warned about, with the nearest
/// known name). `POOLKIT_BLESS` regenerates `docs/alerts.yml` in the crate's tests.
const KNOWN_SUFFIXES: [&str; 8] = [
    "MONITOR_ADDR",
    "MONITOR_TOKEN",
    "MONITOR_OPEN",
    "MONITOR_PING_TIMEOUT",
    "HEALTH_MODERATE",
    "HEALTH_WARNING",
    "HEALTH_CRITICAL",
    "BLESS",
];

/// An endpoint group that can be served with or without the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /metrics`.
    Metrics,
    /// `GET /health`.
    Health,
    /// `GET /pools` and `GET /pools/{name}`.
    Pools,
    /// `GET /alerts`.
    Alerts,
}

impl Endpoint {
    /// Every endpoint group.
    pub const ALL: [Endpoint; 4] = [Self::Metrics, Self::Health, Self::Pools, Self::Alerts];

    /// The name used in `POOLKIT_MONITOR_OPEN`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Health => "health",
            Self::Pools => "pools",
            Self::Alerts => "alerts",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The monitor's settings.
///
/// `Debug` never shows the token.
#[derive(Clone)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// Where [`serve`](crate::serve) listens. Default: `127.0.0.1:9464`. Env: `POOLKIT_MONITOR_ADDR`.
    pub addr: SocketAddr,
    /// The bearer token protected endpoints require. Default: none, so protected endpoints
    /// answer 401 until it is set. Env: `POOLKIT_MONITOR_TOKEN`.
    pub token: Option<Secret>,
    /// Endpoints served without a token. Default: `health,metrics`. Env: `POOLKIT_MONITOR_OPEN`
    /// (a comma list of `metrics`, `health`, `pools`, `alerts`; `none` or `all`).
    open: u8,
    /// The longest a live ping of one pool may take in `/health` and `/alerts` before the pool
    /// counts as down. Default: 3 s. Env: `POOLKIT_MONITOR_PING_TIMEOUT`.
    pub ping_timeout: Duration,
    /// The utilization thresholds of the alert rules served at `GET /alerts.yml` (a pool's
    /// own health uses the thresholds in its config, read from the same variables).
    /// Default: 50 / 70 / 90 %. Env: `POOLKIT_HEALTH_MODERATE`, `POOLKIT_HEALTH_WARNING`,
    /// `POOLKIT_HEALTH_CRITICAL` (percent).
    pub thresholds: Thresholds,
}

impl fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open: Vec<&str> = Endpoint::ALL
            .iter()
            .filter(|e| self.is_open(**e))
            .map(|e| e.as_str())
            .collect();
        f.debug_struct("MonitorConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("open", &open)
            .field("ping_timeout", &self.ping_timeout)
            .field("thresholds", &self.thresholds)
            .finish()
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: None,
            open: Endpoint::Metrics.bit() | Endpoint::Health.bit(),
            ping_timeout: Duration::from_secs(3),
            thresholds: Thresholds::default(),
        }
    }
}

impl MonitorConfig {
    /// The settings from the process environment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable, its value and what was expected.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = poolkit_core::env::warn_unknown("POOLKIT", &KNOWN_SUFFIXES, &[]);
        Self::from_lookup(&process_lookup)
    }

    /// The settings from a lookup function (tests pass a map).
    ///
    /// # Errors
    /// As [`MonitorConfig::from_env`].
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new("POOLKIT_MONITOR", lookup);
        let mut c = Self::default();
        if let Some(v) = env.raw(ADDR_VAR) {
            c.addr = v.trim().parse().map_err(|_| ConfigError::Invalid {
                var: ADDR_VAR.into(),
                value: v.clone(),
                expected: "an IP address and port such as 127.0.0.1:9464 or 0.0.0.0:9464".into(),
            })?;
        }
        if let Some(v) = env.raw(TOKEN_VAR) {
            let t = v.trim();
            if t.len() < 16 || t.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                return Err(ConfigError::Invalid {
                    var: TOKEN_VAR.into(),
                    value: "***".into(),
                    expected: "at least 16 characters with no spaces (for example the output of `openssl rand -hex 32`)".into(),
                });
            }
            c.token = Some(Secret::new(t));
        }
        if let Some(v) = env.raw(OPEN_VAR) {
            c.open = parse_open(&v)?;
        }
        if let Some(v) = env.raw(PING_TIMEOUT_VAR) {
            let d = parse_duration(PING_TIMEOUT_VAR, &v)?;
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    var: PING_TIMEOUT_VAR.into(),
                    value: v,
                    expected: "a duration above zero such as 3s or 500ms".into(),
                });
            }
            c.ping_timeout = d;
        }
        c.thresholds = Thresholds::from_lookup(None, lookup)?;
        Ok(c)
    }

    /// Whether `endpoint` is served without a token.
    #[must_use]
    pub fn is_open(&self, endpoint: Endpoint) -> bool {
        self.open & endpoint.bit() != 0
    }

    /// Serves `endpoint` without a token (`true`) or only with it (`false`).
    #[must_use]
    pub fn with_open(mut self, endpoint: Endpoint, open: bool) -> Self {
        if open {
            self.open |= endpoint.bit();
        } else {
            self.open &= !endpoint.bit();
        }
        self
    }

    /// Sets the token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<Secret>) -> Self {
        self.token = Some(token.into());
        self
    }
}

fn parse_open(value: &str) -> Result<u8, ConfigError> {
    let mut bits = 0;
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.to_ascii_lowercase().as_str() {
            "none" => {}
            "all" => bits = u8::MAX,
            name => match Endpoint::ALL.iter().find(|e| e.as_str() == name) {
                Some(e) => bits |= e.bit(),
                None => {
                    return Err(ConfigError::Invalid {
                        var: OPEN_VAR.into(),
                        value: value.into(),
                        expected: "a comma list of metrics, health, pools, alerts (or none, all)"
                            .into(),
                    });
                }
            },
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<MonitorConfig, ConfigError> {
        let map: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        MonitorConfig::from_lookup(&move |k| {
            map.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn a_typo_under_poolkit_gets_the_nearest_name() {
        let names = vec!["POOLKIT_MONITOR_TOKN".to_owned(), TOKEN_VAR.to_owned()];
        let found = poolkit_core::env::unknown_vars("POOLKIT", &KNOWN_SUFFIXES, &[], &names);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].1,
            "POOLKIT_MONITOR_TOKN is not a poolkit variable; did you mean POOLKIT_MONITOR_TOKEN?"
        );
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:9464");
        assert!(c.token.is_none());
        assert!(c.is_open(Endpoint::Health) && c.is_open(Endpoint::Metrics));
        assert!(!c.is_open(Endpoint::Pools) && !c.is_open(Endpoint::Alerts));
        assert_eq!(c.ping_timeout, Duration::from_secs(3));
    }

    #[test]
    fn reads_every_variable() {
        let c = cfg(&[
            (ADDR_VAR, "0.0.0.0:9000"),
            (TOKEN_VAR, "tok_SECRETMARKER_0123456789"),
            (OPEN_VAR, "pools, health"),
            (PING_TIMEOUT_VAR, "500ms"),
        ])
        .unwrap();
        assert_eq!(c.addr.to_string(), "0.0.0.0:9000");
        assert_eq!(
            c.token.as_ref().map(Secret::expose),
            Some("tok_SECRETMARKER_0123456789")
        );
        assert!(c.is_open(Endpoint::Pools) && c.is_open(Endpoint::Health));
        assert!(!c.is_open(Endpoint::Metrics));
        assert_eq!(c.ping_timeout, Duration::from_millis(500));
        assert!(!format!("{c:?}").contains("SECRETMARKER"), "{c:?}");
        assert!(cfg(&[(OPEN_VAR, "none")]).unwrap().open.eq(&0));
        let all = cfg(&[(OPEN_VAR, "all")]).unwrap();
        assert!(Endpoint::ALL.iter().all(|e| all.is_open(*e)));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = cfg(&[(ADDR_VAR, "localhost")]).unwrap_err().to_string();
        assert_eq!(
            e,
            "POOLKIT_MONITOR_ADDR=\"localhost\" is invalid: expected an IP address and port such as 127.0.0.1:9464 or 0.0.0.0:9464"
        );
        let e = cfg(&[(TOKEN_VAR, "short SECRETMARKER")]).unwrap_err();
        assert_eq!(e.var(), TOKEN_VAR);
        assert!(!e.to_string().contains("SECRETMARKER"), "{e}");
        let e = cfg(&[(OPEN_VAR, "metrics,dashboard")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("POOLKIT_MONITOR_OPEN=\"metrics,dashboard\" is invalid"),
            "{e}"
        );
        let e = cfg(&[(PING_TIMEOUT_VAR, "0")]).unwrap_err();
        assert_eq!(e.var(), PING_TIMEOUT_VAR);
        let e = cfg(&[(PING_TIMEOUT_VAR, "soon")]).unwrap_err();
        assert_eq!(e.var(), PING_TIMEOUT_VAR);
    }
}
