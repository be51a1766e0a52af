//! The one sizing rule behind health, alerts and `poolctl size`: the connections the
//! queue says are busy (Little's law: arrival rate × hold time), times headroom, capped by
//! what the server grants (`max_connections`, `P_MAX_CONNECTIONS`, a fleet share). When
//! the server is the limit, the advice says so instead of "raise the size".

use std::fmt;

/// Headroom over the busy connections: a pool about 80 % used on average.
pub const HEADROOM: f64 = 1.25;

/// The most connections the server grants this pool, and what says so.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ServerCap {
    /// Connections.
    pub connections: u32,
    /// What sets it: `max_connections 100 − 3 reserved`, `DATABASE_MAX_CONNECTIONS`,
    /// `the fleet share (DATABASE_FLEET_BUDGET)`.
    pub source: String,
}

impl ServerCap {
    /// A cap of `connections` set by `source`.
    #[must_use]
    pub fn new(connections: u32, source: impl Into<String>) -> Self {
        Self {
            connections,
            source: source.into(),
        }
    }

    /// The lowest of several caps.
    #[must_use]
    pub fn lowest(caps: impl IntoIterator<Item = Self>) -> Option<Self> {
        caps.into_iter().min_by_key(|c| c.connections)
    }
}

/// What the rule says about one pool's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeAdvice {
    /// The size covers the demand with headroom.
    Enough,
    /// Raise the variable to `to` (`capped` when the server's cap lowered it).
    Raise {
        /// The variable to set.
        var: String,
        /// The size now.
        from: u32,
        /// The size the rule gives.
        to: u32,
        /// The server cap that lowered it, if one did.
        capped: Option<ServerCap>,
    },
    /// The pool already holds all the server grants: a larger pool would not get more
    /// connections. Hold connections for less time, put a pooler in front, or raise the
    /// server's limit.
    ServerLimit {
        /// The variable that would have been raised.
        var: String,
        /// The size now.
        from: u32,
        /// The size the demand asks for.
        wanted: u32,
        /// The server's cap.
        cap: ServerCap,
    },
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn ceil_u32(x: f64) -> u32 {
    x.ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The size for `busy` connections busy on average (Little's law), with [`HEADROOM`].
#[must_use]
pub fn wanted(busy: f64) -> u32 {
    ceil_u32(busy * HEADROOM).max(1)
}

/// The rule: `busy` connections busy on average (arrival rate × hold time) × [`HEADROOM`],
/// capped by `cap`, against the pool's size `current` set by `var`.
#[must_use]
pub fn advise(busy: f64, current: u32, var: &str, cap: Option<&ServerCap>) -> SizeAdvice {
    let want = wanted(busy);
    if want <= current {
        return SizeAdvice::Enough;
    }
    match cap {
        Some(cap) if cap.connections <= current => SizeAdvice::ServerLimit {
            var: var.to_owned(),
            from: current,
            wanted: want,
            cap: cap.clone(),
        },
        Some(cap) if cap.connections < want => SizeAdvice::Raise {
            var: var.to_owned(),
            from: current,
            to: cap.connections,
            capped: Some(cap.clone()),
        },
        _ => SizeAdvice::Raise {
            var: var.to_owned(),
            from: current,
            to: want,
            capped: None,
        },
    }
}

impl fmt::Display for SizeAdvice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Enough => f.write_str("the pool size covers the demand"),
            Self::Raise {
                var,
                from,
                to,
                capped: None,
            } => write!(f, "raise {var} from {from} to {to}"),
            Self::Raise {
                var,
                from,
                to,
                capped: Some(cap),
            } => write!(
                f,
                "raise {var} from {from} to {to} (the demand asks for more, but {} grants {to})",
                cap.source
            ),
            Self::ServerLimit {
                var,
                from,
                wanted,
                cap,
            } => write!(
                f,
                "the server is the limit, not the pool: the demand asks for {wanted} connections but {} grants {}, and {var} is {from} already; hold connections for less time, put a transaction-mode pooler in front, or raise the server's limit",
                cap.source, cap.connections
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn littles_law_with_headroom_capped_by_the_server() {
        assert_eq!(advise(10.0, 20, "MAX_POOL_SIZE", None), SizeAdvice::Enough);
        let raise = advise(24.0, 20, "MAX_POOL_SIZE", None);
        assert_eq!(raise.to_string(), "raise MAX_POOL_SIZE from 20 to 30");
        let cap = ServerCap::new(25, "max_connections 100 − 3 reserved, shared");
        let capped = advise(24.0, 20, "MAX_POOL_SIZE", Some(&cap));
        assert!(
            capped
                .to_string()
                .starts_with("raise MAX_POOL_SIZE from 20 to 25"),
            "{capped}"
        );
        let limit = advise(
            200.0,
            97,
            "MAX_POOL_SIZE",
            Some(&ServerCap::new(97, "max_connections 100 − 3 reserved")),
        );
        assert!(
            limit.to_string().starts_with("the server is the limit"),
            "{limit}"
        );
    }
}
