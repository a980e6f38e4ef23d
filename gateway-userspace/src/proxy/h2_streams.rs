//! Runs an HTTP/2 connection's streams inside the connection's own task.
//!
//! hyper hands every stream it accepts (and every upgraded stream) to its executor. With a
//! runtime executor each one becomes a task: an allocation, a lock on the runtime's task list
//! at spawn and at exit, and a cross-task wake-up each way (the connection wakes the stream
//! when its request arrives, the stream wakes the connection when its response is ready). Here
//! the executor queues the stream, and the connection's task polls its streams beside the
//! connection itself, as nginx and HAProxy serve a connection's streams in one place. A stream
//! that panics now ends its connection's task (tokio catches it there), not only its own.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Queued by hyper, taken by `Streams::drive`.
#[derive(Default)]
struct Queue {
    streams: Mutex<Vec<Stream>>,
    waker: AtomicWaker,
}

/// The executor hyper's HTTP/2 server is given: it queues streams for the connection's task.
#[derive(Clone, Default)]
pub struct StreamExecutor(Arc<Queue>);

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let queue = &self.0;
        queue
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(stream));
        // Wakes the driving task only when it is not polling (it takes the waker meanwhile).
        queue.waker.wake();
    }
}

/// One connection's streams, polled by the task that serves the connection.
pub struct Streams {
    queue: Arc<Queue>,
    running: FuturesUnordered<Stream>,
    taken: Vec<Stream>,
}

impl Streams {
    /// The streams `executor` queues.
    pub fn of(executor: &StreamExecutor) -> Self {
        Self {
            queue: executor.0.clone(),
            running: FuturesUnordered::new(),
            taken: Vec::new(),
        }
    }

    /// Polls `connection` and the streams it started until `connection` is done. Streams still
    /// running then are dropped with it (hyper has reset them; their backend requests are
    /// cancelled, as they are when a client resets a stream).
    pub async fn drive<C: Future + Unpin>(&mut self, mut connection: C) -> C::Output {
        std::future::poll_fn(|cx| self.poll_with(&mut connection, cx)).await
    }

    fn poll_with<C: Future + Unpin>(
        &mut self,
        connection: &mut C,
        cx: &mut Context<'_>,
    ) -> Poll<C::Output> {
        // hyper queues streams from the polls below, which take them before returning: no
        // wake-up (and no second poll of the task) for those.
        self.queue.waker.take();
        if let Poll::Ready(output) = Pin::new(connection).poll(cx) {
            return Poll::Ready(output);
        }
        self.take_queued();
        loop {
            // Ready(None) is an empty set; Ready(Some) a stream that ended.
            while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
            // Registered before the last look: a stream queued after it wakes the task.
            self.queue.waker.register(cx.waker());
            if !self.take_queued() {
                return Poll::Pending;
            }
            self.queue.waker.take();
        }
    }

    /// Moves the queued streams to the running ones; whether there were any.
    fn take_queued(&mut self) -> bool {
        // Swapped out under the lock, pushed outside it.
        mem::swap(
            &mut *self
                .queue
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            &mut self.taken,
        );
        let any = !self.taken.is_empty();
        self.running.extend(self.taken.drain(..));
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::rt::Executor;

    /// Streams queued before and while the connection runs are all polled to their end, and
    /// the connection's output is what `drive` returns.
    #[tokio::test]
    async fn drives_queued_streams_beside_the_connection() {
        let executor = StreamExecutor::default();
        let ended = Arc::new(AtomicUsize::new(0));
        let spawn = |executor: &StreamExecutor, ended: &Arc<AtomicUsize>| {
            let ended = ended.clone();
            executor.execute(async move {
                tokio::task::yield_now().await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        };
        spawn(&executor, &ended);
        let mut streams = Streams::of(&executor);
        let connection = {
            let (executor, ended) = (executor.clone(), ended.clone());
            Box::pin(async move {
                // A stream started by a stream (hyper's upgrades) runs too.
                let nested = executor.clone();
                let counted = ended.clone();
                executor.execute(async move {
                    spawn(&nested, &counted);
                });
                while ended.load(Ordering::SeqCst) < 2 {
                    tokio::task::yield_now().await;
                }
                "done"
            })
        };
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(5), streams.drive(connection))
                .await;
        assert_eq!(output, Ok("done"));
        assert_eq!(ended.load(Ordering::SeqCst), 2);
    }
}
