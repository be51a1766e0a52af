//! Following redirects: up to `P_MAX_REDIRECTS` (default 10), on the same scheme only,
//! never carrying credentials to another host.

use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION, PROXY_AUTHORIZATION,
};
use http::{HeaderName, Method, StatusCode, Uri};

use crate::exchange::Prepared;

/// Headers that carry credentials and are dropped when a redirect changes host.
#[must_use]
pub(crate) fn is_credential(name: &HeaderName) -> bool {
    name == AUTHORIZATION
        || name == PROXY_AUTHORIZATION
        || name == COOKIE
        || name.as_str() == "apikey"
        || name.as_str() == "api-key"
        || name.as_str() == "x-api-key"
}

/// The absolute URL a `Location` value points to, relative to `base`.
fn join(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let full = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    full.parse().ok()
}

fn same_host(a: &Uri, b: &Uri) -> bool {
    a.host() == b.host() && a.port_u16() == b.port_u16()
}

/// What to do with a response: `None` to hand it to the caller, or the next request.
pub(crate) fn next(status: StatusCode, location: Option<&str>, req: &Prepared) -> Option<Prepared> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let next_uri = join(&req.uri, location?)?;
    if next_uri.scheme() != req.uri.scheme() {
        // Same-scheme only: no https -> http downgrade, no surprise upgrade.
        return None;
    }
    let mut next = req.clone();
    if status == StatusCode::SEE_OTHER
        || (matches!(status.as_u16(), 301 | 302) && req.method == Method::POST)
    {
        next.method = Method::GET;
        next.body = bytes::Bytes::new();
        next.headers.remove(CONTENT_TYPE);
        next.headers.remove(CONTENT_LENGTH);
        next.idempotent = true;
    }
    if !same_host(&next_uri, &req.uri) {
        next.keep_secrets = false;
        let names: Vec<HeaderName> = next
            .headers
            .iter()
            .filter(|(n, v)| v.is_sensitive() || is_credential(n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            next.headers.remove(n);
        }
    }
    next.uri = next_uri;
    Some(next)
}

/// The `Location` header as text.
pub(crate) fn location(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(LOCATION).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn req(uri: &str) -> Prepared {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_static("Bearer k");
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert("x-trace", HeaderValue::from_static("1"));
        Prepared {
            method: Method::POST,
            uri: uri.parse().unwrap(),
            headers,
            body: bytes::Bytes::from_static(b"{}"),
            idempotent: false,
            timeout: None,
            keep_secrets: true,
        }
    }

    #[test]
    fn redirects_keep_scheme_and_drop_credentials_across_hosts() {
        let r = req("http://a:1/x/y?q=1");
        assert!(next(StatusCode::OK, Some("/z"), &r).is_none());
        let same = next(StatusCode::TEMPORARY_REDIRECT, Some("z"), &r).unwrap();
        assert_eq!(same.uri.to_string(), "http://a:1/x/z");
        assert_eq!(same.method, Method::POST);
        assert!(same.headers.contains_key(AUTHORIZATION) && same.keep_secrets);
        let other = next(StatusCode::FOUND, Some("http://b:2/w"), &r).unwrap();
        assert_eq!(other.method, Method::GET);
        assert!(other.body.is_empty());
        assert!(!other.headers.contains_key(AUTHORIZATION) && !other.keep_secrets);
        assert!(other.headers.contains_key("x-trace"));
        assert!(next(StatusCode::FOUND, Some("https://a:1/"), &r).is_none());
        assert_eq!(
            next(StatusCode::MOVED_PERMANENTLY, Some("//a:1/p"), &r)
                .unwrap()
                .uri
                .to_string(),
            "http://a:1/p"
        );
        assert!(next(StatusCode::FOUND, None, &r).is_none());
    }
}
