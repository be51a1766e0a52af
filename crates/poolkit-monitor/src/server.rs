//! Serving the monitor on its own address.

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Error, Monitor, exporter};

/// A monitor served in a background task (see [`Monitor::spawn`]).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Server {
    /// The address it listens on (the real port when the configured one was 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, finishes the requests in flight and waits for the task.
    ///
    /// # Errors
    /// [`Error::Serve`] when the server had failed.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::Serve(std::io::Error::other(e))),
        }
    }
}

impl Monitor {
    async fn bind(&self) -> Result<tokio::net::TcpListener, Error> {
        let addr = self.config().addr;
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    }

    /// Serves the router on the configured address until the task is dropped.
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound; [`Error::Serve`] on an I/O failure.
    pub async fn serve(self) -> Result<(), Error> {
        let listener = self.bind().await?;
        tracing::info!(addr = %self.config().addr, "poolkit monitor listening");
        axum::serve(listener, self.router())
            .await
            .map_err(Error::Serve)
    }

    /// Binds the configured address and serves the router in a background task.
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound.
    pub async fn spawn(&self) -> Result<Server, Error> {
        let listener = self.bind().await?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.config().addr,
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .map_err(Error::Serve)
        });
        tracing::info!(%addr, "poolkit monitor listening");
        Ok(Server {
            addr,
            stop: Some(stop),
            task,
        })
    }
}

/// Installs the Prometheus recorder (see [`install`](crate::install)), reads the
/// `POOLKIT_MONITOR_*` variables and serves the monitor on `POOLKIT_MONITOR_ADDR`.
///
/// Call it (or [`install`](crate::install)) before building pools; serve it in a task:
/// `tokio::spawn(poolkit_monitor::serve())`.
///
/// # Errors
/// [`Error::Recorder`], [`Error::Config`], [`Error::Bind`] or [`Error::Serve`].
pub async fn serve() -> Result<(), Error> {
    exporter::install()?;
    Monitor::from_env()?.serve().await
}
