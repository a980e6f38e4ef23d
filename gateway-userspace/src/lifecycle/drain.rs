//! The drain: the phases a stopping process goes through, which every accept loop, connection
//! and response follows, and the tasks it waits for.
//!
//! 1. `Draining`: `/readyz` is unready (load balancers take the node out), HTTP/1 responses
//!    carry `Connection: close` so that keep-alive clients move to a new connection on their
//!    next request; listeners keep accepting after SIGTERM, and stop at once after a hand-off
//!    (the new process accepts from the same sockets).
//! 2. `Stopped`: nothing is accepted; every connection shuts down gracefully (idle HTTP/1
//!    connections close, in-flight requests finish, HTTP/2 gets GOAWAY).
//! 3. The process waits for connections and tunnels to end, up to a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::workers::Workers;

/// Where the process is in its drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainState {
    Serving,
    Draining { accepting: bool },
    Stopped,
}

impl DrainState {
    /// Whether listeners accept new connections.
    pub fn accepting(self) -> bool {
        matches!(self, Self::Serving | Self::Draining { accepting: true })
    }
}

/// The drain state and the tasks that must end before the process does, and the workers
/// that run connections.
pub struct Drain {
    state: watch::Sender<DrainState>,
    tasks: TaskTracker,
    workers: Workers,
}

impl Default for Drain {
    /// A drain whose connections run on the caller's runtime.
    fn default() -> Self {
        Self::new(Workers::default())
    }
}

impl Drain {
    /// A drain whose connections run on `workers`.
    pub fn new(workers: Workers) -> Self {
        Self {
            state: watch::Sender::new(DrainState::Serving),
            tasks: TaskTracker::new(),
            workers,
        }
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    pub fn state(&self) -> DrainState {
        *self.state.borrow()
    }

    /// A receiver that sees every change of state.
    pub fn watch(&self) -> watch::Receiver<DrainState> {
        self.state.subscribe()
    }

    /// Runs `task` (a connection, a tunnel) as one the drain waits for.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Runs `serve` on an accepted connection as a task the drain waits for, on the worker
    /// whose turn it is: the socket moves to the worker's poller (or, without workers, is
    /// registered with this runtime's where it is not yet).
    pub fn spawn_connection<S, F>(&self, stream: impl Into<Accepted>, serve: S)
    where
        S: FnOnce(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self.workers.next();
        let stream = match (stream.into(), worker) {
            (Accepted::Polled(stream), None) => return self.spawn(serve(stream)),
            (Accepted::Polled(stream), Some(_)) => match stream.into_std() {
                Ok(stream) => stream,
                Err(_) => return,
            },
            (Accepted::Unpolled(stream), _) => stream,
        };
        let task = async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve(stream).await;
            }
        };
        match worker {
            Some(worker) => drop(self.tasks.spawn_on(task, worker)),
            None => self.spawn(task),
        }
    }

    /// Enters phase 1.
    pub fn start(&self, accepting: bool) {
        self.state.send_replace(DrainState::Draining { accepting });
    }

    /// Enters phase 2.
    pub fn stop(&self) {
        self.state.send_replace(DrainState::Stopped);
    }

    /// Waits for the tracked tasks up to `deadline`; returns how many were still running then.
    pub async fn wait(&self, deadline: Duration) -> usize {
        self.tasks.close();
        match tokio::time::timeout(deadline, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        }
    }
}

/// A connection's socket as it is handed to [`Drain::spawn_connection`]: registered with the
/// calling runtime's poller (from an accept loop), or with none (a parked connection that woke).
pub enum Accepted {
    Polled(TcpStream),
    Unpolled(std::net::TcpStream),
}

impl From<TcpStream> for Accepted {
    fn from(stream: TcpStream) -> Self {
        Self::Polled(stream)
    }
}

impl From<std::net::TcpStream> for Accepted {
    fn from(stream: std::net::TcpStream) -> Self {
        Self::Unpolled(stream)
    }
}

/// Resolves when `state` reaches `Stopped` (or its sender is gone).
pub async fn stopped(mut state: watch::Receiver<DrainState>) {
    let _ = state.wait_for(|s| *s == DrainState::Stopped).await;
}

/// Resolves when `state` no longer accepts connections.
pub async fn not_accepting(mut state: watch::Receiver<DrainState>) {
    let _ = state.wait_for(|s| !s.accepting()).await;
}

/// The next connection of `listener`, or `None` once `stop` resolves (see [`not_accepting`]).
/// A failed accept (out of file descriptors and the like) is logged and retried after a
/// pause, instead of spinning.
pub async fn next_connection<F: std::future::Future<Output = ()>>(
    listener: &tokio::net::TcpListener,
    stop: &mut std::pin::Pin<&mut F>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.as_mut() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
