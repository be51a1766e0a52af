//! HTTP/1.1 connections in the pool engine, one engine per origin: the engine owns the
//! idle stack, the FIFO queue, connects (tasks that outlive a caller who gives up, with
//! back-off and jitter), lifetime with jitter, idle timeout, max uses and upkeep. This
//! module only says how to open an HTTP/1.1 connection and whether one still works.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use hyper::client::conn::http1;
use poolkit_core::engine::{Engine, ManageConnection};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

pub(crate) use crate::connect::ConnectFailed;
use crate::connect::{Body, Dial, Sender};

/// Set once a connection's task has ended (the server closed it, or it broke), with a
/// wake-up for whoever waits on it.
#[derive(Debug, Default)]
pub(crate) struct Ended {
    done: AtomicBool,
    notify: Notify,
}

impl Ended {
    /// The connection's task has ended.
    pub(crate) fn set(&self) {
        self.done.store(true, SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.done.load(SeqCst)
    }

    /// Resolves once the connection's task has ended.
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

/// One open HTTP/1.1 connection: its request half, its I/O task, and whether that ended.
pub(crate) struct H1 {
    pub(crate) sender: http1::SendRequest<Body>,
    pub(crate) ended: Arc<Ended>,
    task: AbortHandle,
}

impl Drop for H1 {
    /// A connection the engine closes (idle timeout, lifetime, broken, abandoned
    /// mid-exchange) closes its socket now, not whenever hyper's task notices.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens HTTP/1.1 connections to one origin for its engine.
pub(crate) struct Manager {
    dial: Dial,
    /// A connection opened by the caller that learned the origin speaks HTTP/1.1 (ALPN),
    /// given to the engine by the next connect instead of opening another.
    stash: Mutex<Vec<H1>>,
    /// The last connect failure, for callers who should not wait out the acquire timeout
    /// when nothing is open to come back (see `exchange::checkout`).
    pub(crate) failed: watch::Sender<Option<Arc<ConnectFailed>>>,
}

impl Manager {
    pub(crate) fn new(dial: Dial) -> Self {
        Self {
            dial,
            stash: Mutex::new(Vec::new()),
            failed: watch::channel(None).0,
        }
    }

    /// Keeps a connection opened outside the engine for its next connect.
    pub(crate) fn stash(&self, conn: H1) {
        self.stash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    /// Wraps an HTTP/1.1 sender and its task (from [`Connector::connect`]).
    pub(crate) fn wrap(
        sender: http1::SendRequest<Body>,
        task: AbortHandle,
        ended: Arc<Ended>,
    ) -> H1 {
        H1 {
            sender,
            ended,
            task,
        }
    }

    async fn open(&self) -> Result<H1, ConnectFailed> {
        let stashed = self
            .stash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(conn) = stashed {
            return Ok(conn);
        }
        let ended = Arc::new(Ended::default());
        let on_end = {
            let ended = Arc::clone(&ended);
            move || ended.set()
        };
        match self.dial.open(on_end).await? {
            (Sender::H1(sender), task) => Ok(Self::wrap(sender, task, ended)),
            (Sender::H2(_), task) => {
                task.abort();
                Err(ConnectFailed(
                    "the server switched to HTTP/2 (ALPN) on an origin that spoke HTTP/1.1".into(),
                ))
            }
        }
    }
}

impl ManageConnection for Manager {
    type Connection = H1;
    type Error = ConnectFailed;

    async fn connect(&self) -> Result<H1, ConnectFailed> {
        let outcome = self.open().await;
        match &outcome {
            Ok(_) => {
                self.failed.send_replace(None);
            }
            Err(e) => {
                self.failed
                    .send_replace(Some(Arc::new(ConnectFailed(e.0.to_string().into()))));
            }
        }
        outcome
    }

    /// No round trip: an HTTP/1.1 connection is usable while its task runs.
    async fn is_valid(&self, conn: &mut H1) -> Result<(), ConnectFailed> {
        if self.has_broken(conn) {
            return Err(ConnectFailed("the connection closed while idle".into()));
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut H1) -> bool {
        conn.ended.is_set() || conn.sender.is_closed()
    }
}

/// An origin's HTTP/1.1 engine.
pub(crate) type H1Engine = Engine<Manager>;
