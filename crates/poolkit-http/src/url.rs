//! Origins (scheme, host, port) and joining request paths to the base URL.

use std::fmt;

use http::Uri;

/// Where connections go: one pool of connections per origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Origin {
    /// The origin of an absolute `http://` or `https://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
        Self::of(&uri)
    }

    pub(crate) fn of(uri: &Uri) -> Result<Self, String> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("scheme {other:?} is not http or https")),
            None => return Err("no scheme (http:// or https://)".to_owned()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "no host".to_owned())?;
        // `http::Uri` is lenient: `http://ht[::1]tp:/` has the host `ht[` (found by the
        // `http_inputs` fuzz target). Brackets are for IPv6 literals only.
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => {
                let addr = inner.split('%').next().unwrap_or(inner);
                addr.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("host {host:?} is not an IPv6 address"))?;
                inner.to_owned()
            }
            None if host.contains(['[', ']']) => {
                return Err(format!("host {host:?} is not a valid host name"));
            }
            None => host.to_owned(),
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { tls, host, port })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The absolute URI for `url`: as is when absolute, else joined to `base`.
pub(crate) fn resolve(base: Option<&str>, url: &str) -> Result<Uri, String> {
    let full = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        let base = base.ok_or_else(|| {
            "a relative URL needs a base URL (set P_URL or Config::base_url)".to_owned()
        })?;
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            url.trim_start_matches('/')
        )
    };
    let uri: Uri = full.parse().map_err(|_| "not a valid URL".to_owned())?;
    Origin::of(&uri)?;
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_joining() {
        let o = Origin::parse("https://user:pw@api.example.com/x?y=1").unwrap();
        assert_eq!(o.to_string(), "https://api.example.com:443");
        assert_eq!(Origin::parse("http://127.0.0.1:8080").unwrap().port, 8080);
        assert!(Origin::parse("ftp://x").is_err());
        assert!(Origin::parse("/relative").is_err());
        let u = resolve(Some("http://h:1/rest/"), "/v1/items?select=*").unwrap();
        assert_eq!(u.to_string(), "http://h:1/rest/v1/items?select=*");
        assert_eq!(
            resolve(None, "https://a/b").unwrap().to_string(),
            "https://a/b"
        );
        assert!(resolve(None, "/b").is_err());
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().host, "::1");
    }

    #[test]
    fn brackets_only_around_an_ipv6_address() {
        // Regression: found by the `http_inputs` fuzz target (the origin's text did not
        // parse back).
        for url in [
            "http://ht[::1]tp:/",
            "http://[nothost]/",
            "http://a]b/",
            "http://[::1/",
        ] {
            assert!(Origin::parse(url).is_err(), "{url}");
        }
    }
}
