//! `RequestBuilder`: one call, built the way reqwest builds it (URLs as `&str`, `String`
//! or `Url`; headers as `HeaderName`/`HeaderValue` or anything convertible; `query` and
//! `form` from serializable values; `basic_auth` and `bearer_auth`), redirects followed.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use poolkit_core::Secret;
use serde::Serialize;

use crate::exchange::{Prepared, execute};
use crate::url::resolve;
use crate::{Error, Pool, Response};

/// A request being built; send it with [`RequestBuilder::send`].
#[must_use]
pub struct RequestBuilder {
    pool: Pool,
    method: Method,
    url: String,
    query: Vec<String>,
    headers: HeaderMap,
    body: Bytes,
    timeout: Option<Option<Duration>>,
    idempotent: Option<bool>,
    error: Option<String>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("pool", &self.pool.name())
            .field("method", &self.method)
            .field("url", &poolkit_core::redact_url(&self.url))
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    pub(crate) fn new(pool: Pool, method: Method, url: String) -> Self {
        Self {
            pool,
            method,
            url,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: None,
            idempotent: None,
            error: None,
        }
    }

    fn insert<K, V>(mut self, name: K, value: V, sensitive: bool) -> Self
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(sensitive || v.is_sensitive());
                self.headers.insert(n, v);
            }
            (Ok(n), Err(_)) => {
                self.error = Some(format!("header {n}: invalid value (not shown)"));
            }
            (Err(_), _) => {
                self.error = Some("a header has an invalid name".to_owned());
            }
        }
        self
    }

    /// Sets a header (replacing a default header of the same name): a `HeaderName` and
    /// `HeaderValue`, or anything convertible (`&str`, `String`, `http::header::ACCEPT`).
    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.insert(key, value, false)
    }

    /// Sets every header of `headers` (replacing ones of the same name).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        let mut last = None;
        for (name, value) in headers {
            if let Some(n) = name {
                last = Some(n);
            }
            if let Some(n) = &last {
                self.headers.insert(n.clone(), value);
            }
        }
        self
    }

    /// Sets a secret header; its value never appears in `Debug` or errors.
    pub fn secret_header(self, name: &str, value: &Secret) -> Self {
        self.insert(name, value.expose(), true)
    }

    /// Sets `Authorization: Bearer <token>` as a secret header (a `&str`, `String` or
    /// [`Secret`]).
    pub fn bearer_auth<T: Token>(self, token: T) -> Self {
        let value = format!("Bearer {}", token.reveal());
        self.insert(AUTHORIZATION, value, true)
    }

    /// Sets `Authorization: Basic …` from a user name and optional password, as a secret
    /// header.
    pub fn basic_auth<U: fmt::Display, P: fmt::Display>(
        self,
        username: U,
        password: Option<P>,
    ) -> Self {
        let pair = match password {
            Some(p) => format!("{username}:{p}"),
            None => format!("{username}:"),
        };
        let value = format!("Basic {}", base64(pair.as_bytes()));
        self.insert(AUTHORIZATION, value, true)
    }

    /// Appends query parameters from a serializable value (`&[("k", "v")]`, a struct, a
    /// map), percent-encoded.
    pub fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        match serde_urlencoded::to_string(query) {
            Ok(q) if q.is_empty() => {}
            Ok(q) => self.query.push(q),
            Err(e) => self.error = Some(format!("the query cannot be encoded: {e}")),
        }
        self
    }

    /// Sets a form body (`application/x-www-form-urlencoded`) from a serializable value.
    pub fn form<T: Serialize + ?Sized>(mut self, form: &T) -> Self {
        match serde_urlencoded::to_string(form) {
            Ok(body) => {
                self.body = body.into();
                self.headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
            }
            Err(e) => self.error = Some(format!("the form cannot be encoded: {e}")),
        }
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = body.into();
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Err(e) => self.error = Some(format!("the JSON body cannot be serialized: {e}")),
        }
        self
    }

    /// Overrides `P_TIMEOUT` for this request (`None`: no deadline).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Marks the request safe to send twice (default: true for `GET`, `HEAD`, `PUT`,
    /// `DELETE`, `OPTIONS`, `TRACE`). Idempotent requests are retried once when a reused
    /// keep-alive connection breaks under them.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Sends the request and returns the response head (read the body with
    /// [`Response::bytes`], [`Response::text`], [`Response::json`] or
    /// [`Response::bytes_stream`]). Redirects are followed up to `P_MAX_REDIRECTS`.
    ///
    /// # Errors
    /// [`PoolError::Timeout`](crate::PoolError::Timeout) after `P_POOL_TIMEOUT` in the queue, [`PoolError::Deadline`](crate::PoolError::Deadline)
    /// after `P_TIMEOUT`, [`PoolError::Connect`](crate::PoolError::Connect), [`Error::Backend`], [`PoolError::Closed`](crate::PoolError::Closed) and
    /// [`Error::InvalidRequest`]. A non-2xx status is not an error here: see
    /// [`Response::error_for_status`].
    pub async fn send(self) -> Result<Response, Error> {
        let shared = &self.pool.shared;
        let pool = shared.config.pool.name.clone();
        let invalid = |reason: String| Error::InvalidRequest {
            pool: pool.clone(),
            reason,
        };
        if let Some(reason) = self.error {
            return Err(invalid(reason));
        }
        let mut url = self.url;
        if !self.query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&self.query.join("&"));
        }
        let uri = resolve(shared.config.base_url.as_deref(), &url).map_err(invalid)?;
        let idempotent = self.idempotent.unwrap_or(matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::PUT
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
        ));
        let prepared = Prepared {
            method: self.method,
            uri,
            headers: self.headers,
            body: self.body,
            idempotent,
            timeout: self.timeout.unwrap_or(shared.config.timeout),
            keep_secrets: true,
        };
        follow(shared, prepared).await
    }
}

/// Sends, following redirects the policy allows.
async fn follow(
    shared: &std::sync::Arc<crate::pool::Shared>,
    first: Prepared,
) -> Result<Response, Error> {
    let limit = shared.config.max_redirects;
    let mut req = first;
    let mut hops = 0;
    loop {
        let response = execute(shared, req.clone()).await?;
        if limit == 0 {
            return Ok(response);
        }
        let location = crate::redirect::location(response.headers());
        let Some(next) = crate::redirect::next(response.status(), location, &req) else {
            return Ok(response);
        };
        hops += 1;
        if hops > limit {
            return Err(Error::TooManyRedirects {
                pool: shared.config.pool.name.clone(),
                origin: crate::url::Origin::of(&req.uri)
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                limit,
                var: format!("{}_MAX_REDIRECTS", shared.config.pool.prefix),
            });
        }
        // Read a small redirect body so its keep-alive connection is reused.
        if response.content_length().is_some_and(|n| n <= 64 * 1024) {
            let _ = response.bytes().await;
        }
        tracing::debug!(pool = %shared.config.pool.name, to = %crate::url::Origin::of(&next.uri).map(|o| o.to_string()).unwrap_or_default(), "following a redirect");
        req = next;
    }
}

/// A bearer token: text, or a [`Secret`] (whose `Display` shows `***`).
pub trait Token {
    /// The token's text.
    fn reveal(&self) -> String;
}

impl Token for &str {
    fn reveal(&self) -> String {
        (*self).to_owned()
    }
}

impl Token for String {
    fn reveal(&self) -> String {
        self.clone()
    }
}

impl Token for &String {
    fn reveal(&self) -> String {
        (*self).clone()
    }
}

impl Token for Secret {
    fn reveal(&self) -> String {
        self.expose().to_owned()
    }
}

impl Token for &Secret {
    fn reveal(&self) -> String {
        self.expose().to_owned()
    }
}

/// Standard base64 with padding (for `basic_auth`).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a URL can be given as: `&str`, `String`, `http::Uri` or (feature `url`/`reqwest`)
/// `url::Url`, absolute or relative to the base URL.
pub trait IntoUrl {
    /// The URL as text.
    fn into_url_string(self) -> String;
}

impl IntoUrl for &str {
    fn into_url_string(self) -> String {
        self.to_owned()
    }
}

impl IntoUrl for String {
    fn into_url_string(self) -> String {
        self
    }
}

impl IntoUrl for &String {
    fn into_url_string(self) -> String {
        self.clone()
    }
}

impl IntoUrl for http::Uri {
    fn into_url_string(self) -> String {
        self.to_string()
    }
}

impl IntoUrl for &http::Uri {
    fn into_url_string(self) -> String {
        self.to_string()
    }
}

#[cfg(feature = "url")]
impl IntoUrl for url::Url {
    fn into_url_string(self) -> String {
        self.into()
    }
}

#[cfg(feature = "url")]
impl IntoUrl for &url::Url {
    fn into_url_string(self) -> String {
        self.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pa ss", "dXNlcjpwYSBzcw=="),
        ] {
            assert_eq!(super::base64(input.as_bytes()), want);
        }
    }
}
