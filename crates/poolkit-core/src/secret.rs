//! Redaction of secrets: a string newtype that never prints, and URL redaction.

use std::fmt;

/// A secret string (password, API key, URL with a password).
///
/// `Debug` and `Display` print `***`; read the value with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Do not log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Returns `url` with the password of its userinfo (`scheme://user:PASSWORD@host`)
/// and the values of `password=` / `key=` style query parameters replaced by `***`.
///
/// Works on malformed input too (it never fails), so it is safe to use in error messages.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let looks_like_kv = url.split_whitespace().all(|kv| {
        kv.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
    });
    if !url.contains("://") && url.contains('=') && looks_like_kv {
        // A key=value connection string: `host=db password=x port=5432`.
        return url
            .split(' ')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    // The userinfo ends at the LAST '@': a password may hold '/', '?', '#' or '@' that
    // the user did not percent-encode, and a redaction must not stop at them. (This may
    // over-redact a URL whose query holds an '@'; in an error message that is the safe side.)
    let (head, rest) = match url.rfind('@') {
        Some(at) => {
            // The scheme counts only before the first '@' (a password may hold "://").
            let first_at = url.find('@').unwrap_or(at);
            let start = url[..first_at].find("://").map_or(0, |i| i + 3);
            let userinfo = &url[start..at];
            let mut head = url[..start].to_owned();
            match userinfo.find(':') {
                Some(colon) => {
                    head.push_str(&userinfo[..colon]);
                    head.push_str(":***");
                }
                None => head.push_str(userinfo),
            }
            (head, &url[at..])
        }
        None => (String::new(), url),
    };
    let mut out = head;
    match rest.find('?') {
        Some(q) => {
            out.push_str(&rest[..q]);
            out.push('?');
            let parts: Vec<String> = rest[q + 1..]
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&parts.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password", "passwd", "pass", "secret", "key", "token", "apikey", "api_key",
    ]
    .iter()
    .any(|s| key == *s || key.ends_with(&format!("_{s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_password() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/test"),
            "postgres://app:***@db:5432/test"
        );
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact_url("postgres://app@db/test"),
            "postgres://app@db/test"
        );
        assert_eq!(
            redact_url("postgres://db/test?user=a&password=zz&sslmode=require"),
            "postgres://db/test?user=a&password=***&sslmode=require"
        );
        assert_eq!(redact_url("p:a@b@c"), "p:***@c");
        // Unencoded '?', '/', '#' and '@' in a password are still hidden.
        for pw in ["a?b", "a/b", "a#b", "a@b", "?", "/x@y?z"] {
            let url = format!("postgres://app:{pw}@db:5432/test?sslmode=require");
            assert_eq!(
                redact_url(&url),
                "postgres://app:***@db:5432/test?sslmode=require",
                "{pw}"
            );
        }
        assert_eq!(redact_url("redis:hunter2=@h:1/"), "redis:***@h:1/");
        assert_eq!(redact_url("redis:hunter2@://"), "redis:***@://");
        assert_eq!(redact_url("redis:hunter2@://@h:/"), "redis:***@h:/");
        assert_eq!(redact_url("redis://:a://b@h:1"), "redis://:***@h:1");
        assert_eq!(
            redact_url("host=db password=zz port=1"),
            "host=db password=*** port=1"
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
