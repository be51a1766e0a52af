//! Shared mode: a few multiplexed connections that every caller uses at once, on the
//! multiplexed core ([`poolkit_core::mux`]): each command goes to the least-loaded live
//! socket under the in-flight cap (first come, first served), sockets reconnect in the
//! background with the shared back-off, a socket that shows itself dead is retired and
//! drained, and the counts (open, in flight, waiting) are the core's. This file only says
//! how a Redis socket is opened and when it is no longer the one to use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use poolkit_core::Telemetry;
use poolkit_core::metrics::CloseReason;
use poolkit_core::mux::{Multiplexer, MuxConfig, MuxPool, Opened, Routing};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::connector::Connector;

/// How often a shared socket checks that its connection task still runs (see [`Life`]).
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// One shared socket: redis-rs's multiplexed connection (cheap to clone: a channel to its
/// driver task), the pool generation it was opened in, and whether its connection ended.
#[derive(Clone)]
pub(crate) struct RedisSocket {
    pub(crate) conn: MultiplexedConnection,
    generation: u64,
    pub(crate) life: Arc<Life>,
}

/// Whether a shared socket's connection task has ended, for the commands waiting on it.
///
/// redis-rs hands each command to the connection's task through a bounded tokio channel,
/// with a `oneshot` sender for the answer. When the task ends (the server closed the
/// socket), it drops the channel's receiver, which drains what is queued, so those
/// commands fail at once. But a command whose send took its channel permit just before
/// that drain and stores its message just after is never drained (tokio documents this:
/// a permit's send after the receiver is dropped is kept until the last sender goes):
/// its `oneshot` sender stays in the channel, the command itself holds a sender, and it
/// waits for the command timeout (30 s by default). `tests/dead_socket.rs` hits this.
///
/// So every shared command also waits for [`Life::ended`], which fires when the socket
/// is found dead: a command on it failed with the connection dropped
/// ([`Shared::failed`]), or the socket's probe (every [`PROBE_EVERY`], a `PING` sent
/// without waiting for its answer, which fails at once when the task is gone) failed.
/// The same signal is the socket's `closed` future, so the core retires it at once and
/// no later command is routed to it.
#[derive(Debug, Default)]
pub(crate) struct Life {
    ended: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Life {
    /// The connection task ended: wakes every command still waiting on the socket.
    pub(crate) fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Completes once [`Life::end`] was called (at once if it already was).
    pub(crate) async fn ended(&self) {
        // Created before the flag is read: an `end` after the read still wakes it.
        let notified = self.notify.notified();
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// Probes the connection every [`PROBE_EVERY`] until it is found dead (or another
    /// caller of [`Life::end`] found it first).
    async fn watch(&self, conn: MultiplexedConnection) {
        let mut ping = redis::cmd("PING");
        ping.set_no_response(true);
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now
        loop {
            tokio::select! {
                () = self.ended() => return,
                _ = tick.tick() => {}
            }
            let mut probe = conn.clone();
            // Sent without waiting for the answer: it fails at once when the task is
            // gone; a full channel (a busy, live task) is not a death.
            if let Ok(Err(e)) =
                tokio::time::timeout(PROBE_EVERY, probe.send_packed_command(&ping)).await
                && e.is_connection_dropped()
            {
                self.end();
                return;
            }
        }
    }
}

/// The error a command gets when its socket's connection ended while it waited for its
/// answer (one the connection task never saw, see [`Life`]).
pub(crate) fn ended_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the shared connection ended while the command waited for its answer",
    ))
}

/// Opens shared sockets through the pool's connector (re-resolving the name or asking the
/// Sentinels each time, with the credentials read at connect time).
pub(crate) struct RedisMux {
    connector: Arc<Connector>,
    connect_config: AsyncConnectionConfig,
    /// Bumped by [`Shared::reconnect_all`]: a socket of an older generation may lead to
    /// the old server and takes no more commands.
    generation: Arc<AtomicU64>,
    /// Set when the pool closes: a connect under way gives up at once instead of running
    /// to its timeout (a black-holed server holds no connects for a closed pool).
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Multiplexer for RedisMux {
    type Socket = RedisSocket;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Opened<RedisSocket>, redis::RedisError> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut closing = self.closing.subscribe();
        let conn = tokio::select! {
            conn = self.connector.open(&self.connect_config) => conn?,
            _ = closing.wait_for(|closed| *closed) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "the pool closed while connecting",
                )));
            }
        };
        // redis-rs gives no signal when the connection's task ends (only to a RESP3 push
        // sender): the socket's `Life` learns it from failed commands and from its probe.
        let life = Arc::new(Life::default());
        let closed = {
            let (life, conn) = (Arc::clone(&life), conn.clone());
            async move { life.watch(conn).await }
        };
        Ok(Opened::new(
            RedisSocket {
                conn,
                generation,
                life,
            },
            closed,
        ))
    }

    fn usable(&self, socket: &RedisSocket) -> bool {
        socket.generation == self.generation.load(Ordering::Acquire)
    }
}

/// A command's claim on a shared socket.
pub(crate) type Lease = poolkit_core::mux::Lease<RedisMux>;

/// The shared connections of one pool.
pub(crate) struct Shared {
    pub(crate) mux: MuxPool<RedisMux>,
    generation: Arc<AtomicU64>,
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("mux", &self.mux)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Starts `size` shared sockets (they open in the background) under a cap of
    /// `max_in_flight` commands; `telemetry` gets the events and reads its gauges here.
    pub(crate) fn start(
        connector: Arc<Connector>,
        connect_config: AsyncConnectionConfig,
        size: usize,
        max_in_flight: usize,
        connect_timeout: Duration,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        let generation = Arc::new(AtomicU64::new(0));
        let name = telemetry.config().name.clone();
        let mut config = MuxConfig::new(&name, size.max(1));
        // Commands go to the first socket with room: a batch of commands written at once
        // stays one write on one socket, which is where a multiplexed Redis connection's
        // cost is (docs/benchmarks.md, "Redis shared mode on the multiplexed core"). The
        // next socket takes what passes `max_in_flight / size` and everything while the
        // first reconnects.
        config.routing = Routing::FirstWithRoom;
        config.per_socket = max_in_flight.div_ceil(size.max(1));
        config.max_in_flight = max_in_flight;
        config.connect_timeout = connect_timeout;
        let closing = Arc::new(tokio::sync::watch::Sender::new(false));
        let mux = RedisMux {
            connector,
            connect_config,
            generation: Arc::clone(&generation),
            closing: Arc::clone(&closing),
        };
        Arc::new(Self {
            mux: MuxPool::start(mux, config, Some(telemetry)),
            generation,
            closing,
        })
    }

    /// A command on `lease` failed with `e`: a socket that shows itself dead is retired
    /// (its slot reconnects in the background). Returns whether it was.
    pub(crate) fn failed(&self, lease: &Lease, e: &redis::RedisError) -> bool {
        if e.is_connection_dropped() {
            // The connection task is gone: a command it never saw would wait on it for
            // the command timeout (see `Life`).
            lease.life.end();
        }
        if is_broken(e) {
            tracing::warn!(pool = %self.mux.config().name, "a shared Redis connection dropped; reconnecting");
            self.mux.retire(lease, CloseReason::Broken);
            return true;
        }
        false
    }

    /// Whether `lease` is on a socket of the pool's generation now (not one opened before
    /// the last [`Shared::reconnect_all`]).
    pub(crate) fn is_current(&self, lease: &Lease) -> bool {
        lease.generation == self.generation.load(Ordering::Acquire)
    }

    /// Retires every socket at once and reconnects each in the background (re-resolving
    /// through the connector): the server moved. Commands in flight on the old sockets
    /// finish on them; a socket that was opening meanwhile is refused at its first lease.
    pub(crate) fn reconnect_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.mux.retire_all(CloseReason::ServerMoved);
    }

    /// Closes every socket (commands in flight finish first).
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
        self.mux.close();
    }

    /// Whether the pool was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.mux.is_closed()
    }
}

/// Whether an error shows that the connection itself is gone (not just a bad command).
pub(crate) fn is_broken(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_unrecoverable_error() || (e.is_io_error() && !e.is_timeout())
}
