//! HTTP/2 on the multiplexed core (`poolkit_core::mux`): one connection per origin carrying
//! up to `P_HTTP2_MAX_STREAMS` requests at once. The core routes, queues callers first come
//! first served, reconnects in the background with back-off and jitter (a connect outlives
//! a caller who gives up), and retires the connection when its task ends or its lifetime
//! (with jitter) is up. This module opens the connection and hands out its sender.
//!
//! No sender is kept while a response is awaited (docs/reliability.md, "the HTTP/2
//! hang"): the socket keeps the connection's sender only while the connection's task
//! runs, and each request clones it, queues its request and drops the clone at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use hyper::client::conn::http2;
use poolkit_core::mux::{Multiplexer, MuxPool, Opened};

use crate::connect::{Body, Dial, Sender};
use crate::h1::{self, ConnectFailed, Ended};

/// One HTTP/2 connection, as the core holds it.
pub(crate) struct H2Socket {
    /// The connection's sender while its task runs; taken (and dropped) when it ends.
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    ended: Arc<Ended>,
    /// Requests sent on it so far (the first one counts as a new connection).
    uses: AtomicU64,
}

impl H2Socket {
    /// A sender for one request, while the connection runs.
    pub(crate) fn sender(&self) -> Option<http2::SendRequest<Body>> {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts one request; `true` for the connection's first.
    pub(crate) fn first_use(&self) -> bool {
        self.uses.fetch_add(1, Relaxed) == 0
    }

    /// Requests sent on it so far.
    pub(crate) fn uses(&self) -> u64 {
        self.uses.load(Relaxed)
    }

    fn end(&self) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropping what may be the connection's last sender answers what is left in its
        // queue: outside the lock.
        drop(sender);
    }
}

/// Opens an origin's HTTP/2 connections for the multiplexed core.
pub(crate) struct H2Mux {
    dial: Dial,
    /// The connection opened by the caller that learned the origin speaks HTTP/2 (ALPN),
    /// installed by the first connect instead of opening another.
    stash: Mutex<Option<Opened<Arc<H2Socket>>>>,
}

/// An origin's HTTP/2 pool.
pub(crate) type H2Pool = MuxPool<H2Mux>;

/// What a connect gave: an HTTP/2 socket, or an HTTP/1.1 connection (ALPN chose it).
pub(crate) enum Connected {
    H2(Opened<Arc<H2Socket>>),
    H1(h1::H1),
}

impl H2Mux {
    pub(crate) fn new(dial: Dial) -> Self {
        Self {
            dial,
            stash: Mutex::new(None),
        }
    }

    /// Keeps a connection opened outside the core for its first connect.
    pub(crate) fn stash(&self, opened: Opened<Arc<H2Socket>>) {
        *self.stash.lock().unwrap_or_else(PoisonError::into_inner) = Some(opened);
    }

    /// Opens a connection to the origin under `P_CONNECT_TIMEOUT`, in whichever protocol
    /// the server chose.
    pub(crate) async fn open(&self) -> Result<Connected, ConnectFailed> {
        let ended = Arc::new(Ended::default());
        let socket = Arc::new(H2Socket {
            sender: Mutex::new(None),
            ended: Arc::clone(&ended),
            uses: AtomicU64::new(0),
        });
        let on_end = {
            let ended = Arc::clone(&ended);
            let socket = Arc::downgrade(&socket);
            move || {
                ended.set();
                if let Some(socket) = socket.upgrade() {
                    socket.end();
                }
            }
        };
        match self.dial.open(on_end).await? {
            (Sender::H2(sender), _task) => {
                *socket.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
                if ended.is_set() {
                    socket.end(); // it ended before the sender was stored
                }
                let closed = async move { ended.wait().await };
                Ok(Connected::H2(Opened::new(socket, closed)))
            }
            (Sender::H1(sender), task) => Ok(Connected::H1(h1::Manager::wrap(sender, task, ended))),
        }
    }
}

impl Multiplexer for H2Mux {
    type Socket = Arc<H2Socket>;
    type Error = ConnectFailed;

    async fn connect(&self) -> Result<Opened<Arc<H2Socket>>, ConnectFailed> {
        let stashed = self
            .stash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(opened) = stashed {
            return Ok(opened);
        }
        match self.open().await? {
            Connected::H2(opened) => Ok(opened),
            Connected::H1(_) => Err(ConnectFailed(
                "the server chose HTTP/1.1 (ALPN) on an origin that spoke HTTP/2".into(),
            )),
        }
    }

    fn usable(&self, socket: &Arc<H2Socket>) -> bool {
        !socket.ended.is_set()
    }
}
