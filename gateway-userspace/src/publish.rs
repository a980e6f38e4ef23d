//! The one place the current route table lives. A new snapshot replaces the old one atomically:
//! requests already routed keep the table they started with, the next request sees the new one.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::watch;

use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::translate::{TranslateOptions, translate};
use crate::warning::Warning;

/// The published route table.
pub struct RouteTable {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    ready: AtomicBool,
    /// Tells followers (the kernel maps) the generation just published.
    published: watch::Sender<u64>,
    /// How long each `apply` took (translate and publish), in seconds.
    pub apply_seconds: Histogram,
    /// The objects of the last table applied, when the console asked to keep them.
    sources: ArcSwapOption<Store>,
    keep_sources: AtomicBool,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self {
            current: ArcSwap::default(),
            generation: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            published: watch::Sender::new(0),
            // 100 µs to 1.6 s: from a handful of routes to tens of thousands.
            apply_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            sources: ArcSwapOption::empty(),
            keep_sources: AtomicBool::new(false),
        }
    }
}

impl RouteTable {
    /// The snapshot to route the next request with.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Translates `store` against the table served now (whose certificates it may keep) and
    /// publishes the result.
    pub fn apply(
        &self,
        store: Arc<Store>,
        options: &TranslateOptions,
        source_warnings: Vec<Warning>,
    ) {
        let started = std::time::Instant::now();
        let previous = self.current();
        let next = translate(
            &store,
            options,
            source_warnings,
            &previous,
            SystemTime::now(),
        );
        drop(previous);
        // Before publishing: whoever is woken by the new generation reads its objects.
        if self.keep_sources.load(Ordering::Relaxed) {
            self.sources.store(Some(store));
        }
        self.publish(next);
        self.apply_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// Keeps the objects of every table applied from now on (the console reads them); without
    /// it they are dropped once translated.
    pub fn keep_sources(&self) {
        self.keep_sources.store(true, Ordering::Relaxed);
    }

    /// The objects of the last table applied, if they are kept.
    pub fn sources(&self) -> Option<Arc<Store>> {
        self.sources.load_full()
    }

    /// Makes `snapshot` the table that new requests are routed with, logging the warnings that
    /// were not in the previous one.
    pub fn publish(&self, snapshot: Snapshot) {
        let previous = self.current.load();
        let known: HashSet<&Warning> = previous.warnings.iter().collect();
        for warning in snapshot.warnings.iter().filter(|w| !known.contains(w)) {
            tracing::warn!(object = %warning.object, field = %warning.field,
                source = warning.source.as_deref().unwrap_or(""), "{}", warning.message);
        }
        let hosts = snapshot.exact_hosts.len() + snapshot.wildcard_hosts.len();
        let routes: usize = snapshot
            .virtual_hosts()
            .iter()
            .map(|h| h.routes.len())
            .sum();
        drop(previous);
        self.current.store(Arc::new(snapshot));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(generation, hosts, routes, "route table published");
        self.ready.store(true, Ordering::Release);
        self.published.send_replace(generation);
    }

    /// A receiver that wakes whenever a new table is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Whether a table from the source has been published (until then only the empty one is).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// How many tables have been published.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}
