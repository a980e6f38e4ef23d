//! Thread per core: with more than one worker, each is a thread with a single-threaded runtime
//! of its own, and a connection lives on one worker from accept to close. Its requests never
//! wait for work stealing or for a wake-up sent from another core, and what they touch per
//! worker (the upstream keep-alive pools) takes no lock another core holds. The main runtime
//! accepts and deals the connections round-robin; it also runs the control plane, the admin
//! listener and HTTP/3. With one worker, the main runtime does all of it.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use tokio::runtime::Handle;

thread_local! {
    /// The worker this thread is (1-based), or 0 on any other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker running the calling thread, 1 to `count`; 0 outside the workers (the main
/// runtime, where everything runs with a single worker).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The worker threads' runtimes, and which takes the next connection. Workers run until the
/// process exits: by then the drain has waited for every connection.
#[derive(Default)]
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// `count` worker threads, each running a single-threaded runtime; none for a count of 1
    /// (the caller's runtime serves).
    pub fn start(count: usize) -> Result<Self> {
        let threads = if count > 1 { count } else { 0 };
        let mut handles = Vec::with_capacity(threads);
        for index in 1..=threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a worker's runtime")?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    INDEX.with(|cell| cell.set(index));
                    runtime.block_on(std::future::pending::<()>());
                })
                .context("starting a worker thread")?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Slots for state kept per thread that serves requests: the main runtime's (0) and one
    /// per worker, as [`current`] numbers them.
    pub fn slots(&self) -> usize {
        self.handles.len() + 1
    }

    /// The runtime of the worker that takes the next connection; `None` when the caller's
    /// runtime serves everything.
    pub fn next(&self) -> Option<&Handle> {
        if self.handles.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(&self.handles[turn % self.handles.len()])
    }
}
