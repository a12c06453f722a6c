//! Live counters an edge reads to draw progress: how much of what it knows it will do a
//! long operation (check --read-data, copy, prune's repack) has done. Relaxed atomics,
//! approximate by design; the operation never waits for its reader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Meter {
    /// Packs (check, prune) or snapshots (copy) to do, and done.
    pub items_total: AtomicU64,
    pub items_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    /// The totals are known (set by [`Meter::plan`], also when there is nothing to do).
    pub planned: AtomicBool,
}

impl Meter {
    /// Sets what is to be done (once it is known).
    pub fn plan(&self, items: u64, bytes: u64) {
        self.items_total.store(items, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.planned.store(true, Ordering::Relaxed);
    }

    /// Counts work done.
    pub fn done(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
}
