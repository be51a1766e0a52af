//! Why one attempt failed, and whether the request may go out again.
//!
//! HTTP/2 tells a client which requests the server never processed: a stream reset with
//! `REFUSED_STREAM`, and every stream above the last stream id of a graceful `GOAWAY`
//! (RFC 9113 §8.7, §6.8). A refused stream is safe to send again for any method. A
//! connection that breaks or goes away while a request is in flight leaves it unknown
//! whether the server acted on it (see [`is_refused`] for why a `GOAWAY` is in this
//! group): only idempotent requests go out again.

use std::error::Error as _;

use crate::Error;

/// Why one attempt failed.
pub(crate) enum Failure {
    /// The request never left (the connection was closed before it was written): safe to
    /// send again for any method.
    NotSent(Error),
    /// The server said it did not process the request (HTTP/2 `REFUSED_STREAM`): safe to
    /// send again for any method, on another connection.
    Refused(Error),
    /// The connection failed while the request was under way: the server may have
    /// processed it.
    Broken(Error),
    /// Anything else (a response already started, a protocol error on a healthy
    /// connection).
    Other(Error),
}

/// The HTTP/2 error under a hyper error, if there is one.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = s.source();
    }
    None
}

/// Whether the server said it did not process this request: a `RST_STREAM` with
/// `REFUSED_STREAM` on its own stream (RFC 9113 §8.7).
///
/// A graceful `GOAWAY` also marks the streams above its last stream id as unprocessed, but
/// hyper can report the connection's `GOAWAY` to a request whose HEADERS already left (its
/// dispatcher checks the connection after opening the stream), and the server may process
/// that one: the fault suite saw 1–3 POSTs in 4,000 processed twice when `GOAWAY` counted
/// as refused. So a `GOAWAY` counts as a broken connection: idempotent requests are sent
/// again, others fail with [`Error::Interrupted`].
pub(crate) fn is_refused(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h2| {
        h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
    })
}

/// Whether the connection broke under the request: closed, reset, cut mid-message, or
/// ended by the server with an error `GOAWAY`.
pub(crate) fn is_broken(e: &hyper::Error) -> bool {
    if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        return true;
    }
    if h2_error(e).is_some_and(|h2| h2.is_go_away() && h2.is_remote()) {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// A hyper error shown with its causes: hyper's own message for an HTTP/2 failure is just
/// "http2 error" (hyper#2500); the h2 cause says what happened ("stream error received:
/// refused stream before processing any application logic").
#[derive(Debug)]
pub(crate) struct Described(pub(crate) hyper::Error);

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl std::error::Error for Described {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Turns the `Backend` error of a non-idempotent request cut off in flight into
/// [`Error::Interrupted`], which says why it was not retried.
pub(crate) fn interrupted(e: Error, method: &http::Method) -> Error {
    match e {
        Error::Backend {
            pool,
            origin,
            source,
        } => Error::Interrupted {
            pool,
            origin,
            method: method.to_string(),
            source,
        },
        other => other,
    }
}
