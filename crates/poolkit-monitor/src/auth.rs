//! Bearer-token checks, compared in constant time.

use axum::http::{HeaderMap, header};
use poolkit_core::Secret;
use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token is configured, so protected endpoints stay closed.
    NoTokenConfigured,
    /// The request has no `Authorization: Bearer` header.
    Missing,
    /// The request's token is not the configured one.
    Wrong,
}

impl Denied {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::NoTokenConfigured => {
                "this endpoint needs a token: set POOLKIT_MONITOR_TOKEN, or list the endpoint in POOLKIT_MONITOR_OPEN"
            }
            Self::Missing => "missing `Authorization: Bearer <POOLKIT_MONITOR_TOKEN>` header",
            Self::Wrong => "invalid bearer token",
        }
    }
}

/// Checks the request's bearer token against `expected`.
pub(crate) fn check(headers: &HeaderMap, expected: Option<&Secret>) -> Result<(), Denied> {
    let Some(expected) = expected else {
        return Err(Denied::NoTokenConfigured);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(Denied::Missing)?;
    if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_rules() {
        let token = Secret::new("0123456789abcdef0123");
        let t = Some(&token);
        assert_eq!(check(&HeaderMap::new(), t), Err(Denied::Missing));
        assert_eq!(
            check(&headers("Basic 0123456789abcdef0123"), t),
            Err(Denied::Missing)
        );
        assert_eq!(check(&headers("Bearer"), t), Err(Denied::Missing));
        assert_eq!(
            check(&headers("Bearer 0123456789abcdef012"), t),
            Err(Denied::Wrong)
        );
        assert_eq!(
            check(&headers("Bearer 0123456789abcdef01234"), t),
            Err(Denied::Wrong)
        );
        assert_eq!(check(&headers("Bearer 0123456789abcdef0123"), t), Ok(()));
        assert_eq!(check(&headers("bearer  0123456789abcdef0123 "), t), Ok(()));
        assert_eq!(
            check(&headers("Bearer 0123456789abcdef0123"), None),
            Err(Denied::NoTokenConfigured)
        );
    }
}
