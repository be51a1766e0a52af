//! `Response`: the head at once, the body read as reqwest reads it (`bytes().await`,
//! `text().await`, `json().await`, `bytes_stream()`), capped by `P_MAX_BODY`.
//!
//! Until its body is read to the end the response holds its connection (HTTP/1.1) or
//! stream (HTTP/2), its place under the per-origin cap and its in-use count; the end
//! returns the connection to the pool. A response dropped half-read closes an HTTP/1.1
//! connection (its state is unknown) and ends an HTTP/2 stream.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderMap, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::exchange::{Lease, backend, request_timeout};
use crate::host::Host;
use crate::pool::Shared;

/// A body still on the wire, with everything its connection needs returned at the end.
pub(crate) struct Streaming {
    pub(crate) body: hyper::body::Incoming,
    pub(crate) lease: Option<Lease>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) host: Arc<Host>,
    pub(crate) deadline: Option<tokio::time::Instant>,
    pub(crate) timeout: Option<Duration>,
}

impl Streaming {
    /// The next piece of the body; `None` at the end, where the connection goes back.
    async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let frame = match self.deadline {
                None => self.body.frame().await,
                Some(at) => match tokio::time::timeout_at(at, self.body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => {
                        self.lease = None; // closes an HTTP/1.1 connection mid-body
                        return Err(request_timeout(
                            &self.shared,
                            &self.host.origin,
                            self.timeout.unwrap_or_default(),
                        ));
                    }
                },
            };
            match frame {
                None => {
                    if let Some(lease) = self.lease.take() {
                        lease.finish(&self.host);
                    }
                    return Ok(None);
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
                Some(Err(e)) => {
                    self.lease = None;
                    self.shared
                        .count_error(poolkit_core::metrics::ErrorKind::Request);
                    return Err(backend(&self.shared, &self.host, e));
                }
            }
        }
    }
}

enum Body {
    Full(Bytes),
    Wire(Box<Streaming>),
    Done,
}

/// A response: status and headers, then the body, read once.
pub struct Response {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    url: Uri,
    new_connection: bool,
    pool: String,
    origin: String,
    max_body: Option<u64>,
    max_body_var: String,
    body: Body,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("origin", &self.origin)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Response {
    pub(crate) fn streaming(
        parts: http::response::Parts,
        url: Uri,
        body: Streaming,
        new_connection: bool,
    ) -> Self {
        let config = &body.shared.config;
        Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            url,
            new_connection,
            pool: config.pool.name.clone(),
            origin: body.host.origin.to_string(),
            max_body: config.max_body,
            max_body_var: config.max_body_var(),
            body: Body::Wire(Box::new(body)),
        }
    }

    pub(crate) fn full(
        parts: http::response::Parts,
        url: Uri,
        body: Bytes,
        new_connection: bool,
        shared: &Shared,
        host: &Host,
    ) -> Self {
        let config = &shared.config;
        Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            url,
            new_connection,
            pool: config.pool.name.clone(),
            origin: host.origin.to_string(),
            max_body: config.max_body,
            max_body_var: config.max_body_var(),
            body: Body::Full(body),
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

    /// The URL that answered (after redirects).
    #[must_use]
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The `Content-Length` the server announced, if any.
    #[must_use]
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// Whether the request opened a new connection (`false`: it reused a kept-alive one).
    #[must_use]
    pub fn new_connection(&self) -> bool {
        self.new_connection
    }

    fn too_large(&self, limit: u64) -> Error {
        Error::BodyTooLarge {
            pool: self.pool.clone(),
            origin: self.origin.clone(),
            limit,
            var: self.max_body_var.clone(),
        }
    }

    /// The next piece of the body, `None` at its end (reqwest's `chunk`).
    ///
    /// # Errors
    /// [`Error::Backend`] when the connection fails mid-body, [`PoolError::Deadline`](crate::PoolError::Deadline)
    /// after `P_TIMEOUT`.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        match &mut self.body {
            Body::Done => Ok(None),
            Body::Full(_) => match std::mem::replace(&mut self.body, Body::Done) {
                Body::Full(bytes) if !bytes.is_empty() => Ok(Some(bytes)),
                _ => Ok(None),
            },
            Body::Wire(s) => {
                let next = s.chunk().await;
                if !matches!(next, Ok(Some(_))) {
                    self.body = Body::Done;
                }
                next
            }
        }
    }

    /// The whole body, at most `P_MAX_BODY` bytes.
    ///
    /// # Errors
    /// [`Error::BodyTooLarge`] above `P_MAX_BODY`, and as [`Response::chunk`].
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        let limit = self.max_body;
        if let Body::Full(bytes) = &self.body {
            return match limit {
                Some(limit) if bytes.len() as u64 > limit => Err(self.too_large(limit)),
                _ => Ok(bytes.clone()),
            };
        }
        if let (Some(limit), Some(len)) = (limit, self.content_length())
            && len > limit
        {
            return Err(self.too_large(limit));
        }
        let mut all = BytesMut::new();
        while let Some(piece) = self.chunk().await? {
            if let Some(limit) = limit
                && (all.len() + piece.len()) as u64 > limit
            {
                return Err(self.too_large(limit));
            }
            all.extend_from_slice(&piece);
        }
        Ok(all.freeze())
    }

    /// The body as text (invalid UTF-8 replaced), at most `P_MAX_BODY` bytes.
    ///
    /// # Errors
    /// As [`Response::bytes`].
    pub async fn text(self) -> Result<String, Error> {
        let bytes = self.bytes().await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The body parsed as JSON, at most `P_MAX_BODY` bytes.
    ///
    /// # Errors
    /// [`Error::Decode`] when the body is not that JSON, and as [`Response::bytes`].
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(Error::Decode)
    }

    /// The body as a stream of pieces, for bodies too large for memory (no `P_MAX_BODY`
    /// cap). The connection goes back to the pool when the stream reaches its end.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut response = state?;
            match response.chunk().await {
                Ok(Some(piece)) => Some((Ok(piece), Some(response))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// `Ok(self)` for a 1xx–3xx status, else [`Error::Status`] (reqwest's shape: the body
    /// is not read; see [`Response::error_for_status_with_body`]).
    ///
    /// # Errors
    /// [`Error::Status`] for a 4xx or 5xx status.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.status.is_client_error() || self.status.is_server_error() {
            return Err(Error::Status {
                pool: self.pool.clone(),
                origin: self.origin.clone(),
                status: self.status,
                body: String::new(),
            });
        }
        Ok(self)
    }

    /// Like [`Response::error_for_status`], with the start of the body (at most 512
    /// bytes) in the error: APIs explain their 4xx there.
    ///
    /// # Errors
    /// [`Error::Status`] for a 4xx or 5xx status.
    pub async fn error_for_status_with_body(self) -> Result<Self, Error> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return Ok(self);
        }
        let (pool, origin, status) = (self.pool.clone(), self.origin.clone(), self.status);
        let text = self.text().await.unwrap_or_default();
        let mut end = text.len().min(512);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Err(Error::Status {
            pool,
            origin,
            status,
            body: text[..end].to_owned(),
        })
    }
}
