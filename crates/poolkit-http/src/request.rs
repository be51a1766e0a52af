//! `RequestBuilder` and `Response`: one REST call with its body in memory.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use poolkit_core::Secret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::exchange::{Prepared, execute};
use crate::url::resolve;
use crate::{Error, Pool};

/// A request being built; send it with [`RequestBuilder::send`].
#[must_use]
pub struct RequestBuilder {
    pool: Pool,
    method: Method,
    url: String,
    query: Vec<(String, String)>,
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
    pub(crate) fn new(pool: Pool, method: Method, url: &str) -> Self {
        Self {
            pool,
            method,
            url: url.to_owned(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: None,
            idempotent: None,
            error: None,
        }
    }

    fn insert(mut self, name: &str, value: &str, sensitive: bool) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(sensitive);
                self.headers.insert(n, v);
            }
            _ => {
                self.error = Some(format!(
                    "header {name:?} has an invalid name or value (value not shown)"
                ));
            }
        }
        self
    }

    /// Sets a header (replacing a default header of the same name).
    pub fn header(self, name: &str, value: &str) -> Self {
        self.insert(name, value, false)
    }

    /// Sets a secret header; its value never appears in `Debug` or errors.
    pub fn secret_header(self, name: &str, value: &Secret) -> Self {
        self.insert(name, value.expose(), true)
    }

    /// Sets `Authorization: Bearer <token>` as a secret header.
    pub fn bearer_auth(self, token: &Secret) -> Self {
        let value = format!("Bearer {}", token.expose());
        self.insert(AUTHORIZATION.as_str(), &value, true)
    }

    /// Appends query parameters (percent-encoded).
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        self.query.extend(
            pairs
                .iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
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

    /// Sends the request and reads the whole response.
    ///
    /// # Errors
    /// [`Error::Timeout`] after `P_POOL_TIMEOUT` in the queue, [`Error::RequestTimeout`]
    /// after `P_TIMEOUT`, [`Error::Connect`], [`Error::Backend`], [`Error::Closed`] and
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
            let encoded = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&self.query)
                .finish();
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&encoded);
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
        };
        execute(shared, prepared).await
    }
}

/// A complete response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    new_connection: bool,
    pool: String,
    origin: String,
}

impl Response {
    pub(crate) fn new(
        parts: http::response::Parts,
        body: Bytes,
        new_connection: bool,
        pool: String,
        origin: String,
    ) -> Self {
        Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
            new_connection,
            pool,
            origin,
        }
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The HTTP version the exchange used.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The response headers.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Whether the request opened a new connection (`false`: it reused a kept-alive one).
    #[must_use]
    pub fn new_connection(&self) -> bool {
        self.new_connection
    }

    /// The body.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`Error::Decode`] when the body is not that JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(Error::Decode)
    }

    /// `Ok(self)` for a 1xx–3xx status, else [`Error::Status`] with the start of the body.
    ///
    /// # Errors
    /// [`Error::Status`] for a 4xx or 5xx status.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.status.is_client_error() || self.status.is_server_error() {
            let text = self.text();
            let mut end = text.len().min(512);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            return Err(Error::Status {
                pool: self.pool,
                origin: self.origin,
                status: self.status,
                body: text[..end].to_owned(),
            });
        }
        Ok(self)
    }
}
