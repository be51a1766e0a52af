//! HTTP/1.1 connections in the pool engine, one engine per origin: the engine owns the
//! idle stack, the FIFO queue, connects (tasks that outlive a caller who gives up, with
//! back-off and jitter), lifetime with jitter, idle timeout, max uses and upkeep. This
//! module only says how to open an HTTP/1.1 connection and whether one still works.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::http1;
use poolkit_core::engine::{Engine, ManageConnection};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use crate::connect::{Body, Connector, Sender};
use crate::error::BoxError;
use crate::url::Origin;

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

/// Why a connect failed (the engine's manager error; shown with its causes).
#[derive(Debug)]
pub(crate) struct ConnectFailed(pub(crate) BoxError);

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Opens HTTP/1.1 connections to one origin for its engine.
pub(crate) struct Manager {
    connector: Arc<Connector>,
    origin: Origin,
    connect_timeout: Duration,
    connect_timeout_var: String,
    /// A connection opened by the caller that learned the origin speaks HTTP/1.1 (ALPN),
    /// given to the engine by the next connect instead of opening another.
    stash: Mutex<Vec<H1>>,
    /// The last connect failure, for callers who should not wait out the acquire timeout
    /// when nothing is open to come back (see `exchange::checkout`).
    pub(crate) failed: watch::Sender<Option<Arc<ConnectFailed>>>,
    /// Connection tasks that ended (see [`crate::Pool::tasks_ended`]).
    tasks_ended: Arc<AtomicU64>,
}

impl Manager {
    pub(crate) fn new(
        connector: Arc<Connector>,
        origin: Origin,
        connect_timeout: Duration,
        connect_timeout_var: String,
        tasks_ended: Arc<AtomicU64>,
    ) -> Self {
        Self {
            connector,
            origin,
            connect_timeout,
            connect_timeout_var,
            stash: Mutex::new(Vec::new()),
            failed: watch::channel(None).0,
            tasks_ended,
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

    /// What runs when a connection's task ends.
    pub(crate) fn on_end(&self, ended: &Arc<Ended>) -> impl FnOnce() + Send + 'static {
        let ended = Arc::clone(ended);
        let count = Arc::clone(&self.tasks_ended);
        move || {
            count.fetch_add(1, Relaxed);
            ended.set();
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
        let opening = self.connector.connect(&self.origin, self.on_end(&ended));
        match tokio::time::timeout(self.connect_timeout, opening).await {
            Ok(Ok((Sender::H1(sender), task))) => Ok(Self::wrap(sender, task, ended)),
            Ok(Ok((Sender::H2(_), task))) => {
                task.abort();
                Err(ConnectFailed(
                    "the server switched to HTTP/2 (ALPN) on an origin that spoke HTTP/1.1".into(),
                ))
            }
            Ok(Err(e)) => Err(ConnectFailed(e)),
            Err(_) => Err(ConnectFailed(
                format!(
                    "no connection within {:?} (raise {})",
                    self.connect_timeout, self.connect_timeout_var
                )
                .into(),
            )),
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
