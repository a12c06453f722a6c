//! A fault-injecting decorator for tests: fails a share of requests with a transient
//! error (before or after the operation took effect) and adds latency. Deterministic for a
//! given seed, so a failing run can be replayed.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{BoxFuture, Capabilities, Error, ObjectMeta, PutMode, Result, Store};

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn Store>,
    /// Failures per 1000 requests.
    per_mille: u64,
    latency: Duration,
    state: AtomicU64,
    pub injected: AtomicU64,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn Store>, per_mille: u64, latency: Duration, seed: u64) -> Self {
        FaultStore { inner, per_mille, latency, state: AtomicU64::new(seed | 1), injected: AtomicU64::new(0) }
    }

    /// (fail, fail after the operation took effect)
    fn roll(&self) -> (bool, bool) {
        let mut x = self.state.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        let fail = x % 1000 < self.per_mille;
        if fail {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        (fail, (x >> 32) & 1 == 1)
    }

    fn fault(path: &str) -> Error {
        Error::Io {
            path: path.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "injected fault"),
        }
    }

    async fn wrap<T>(&self, path: &str, op: BoxFuture<'_, Result<T>>) -> Result<T> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let (fail, after) = self.roll();
        if fail && !after {
            return Err(Self::fault(path));
        }
        let r = op.await;
        if fail {
            return Err(Self::fault(path));
        }
        r
    }
}

impl Store for FaultStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.wrap(path, self.inner.put(path, data, mode)))
    }
    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(self.wrap(path, self.inner.get(path, range)))
    }
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        Box::pin(self.wrap(path, self.inner.head(path)))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        Box::pin(self.wrap(prefix, self.inner.list(prefix)))
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.wrap(path, self.inner.delete(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, RetryStore};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn faults_break_the_conformance_suite_and_retries_repair_it() {
        let rt = rt();
        let faulty = Arc::new(FaultStore::new(Arc::new(MemoryStore::new()), 200, Duration::ZERO, 7));
        assert!(rt.block_on(crate::conformance::run(faulty.as_ref())).is_err(), "20% faults went unnoticed");
        for seed in 1..20 {
            let faulty = Arc::new(FaultStore::new(Arc::new(MemoryStore::new()), 200, Duration::from_micros(50), seed));
            let retry = RetryStore::new(faulty.clone(), 12, Duration::from_micros(100));
            rt.block_on(crate::conformance::run(&retry)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(faulty.injected.load(Ordering::Relaxed) > 0);
        }
    }

    #[test]
    fn retry_store_passes_conformance_over_a_healthy_store() {
        let retry = RetryStore::new(Arc::new(MemoryStore::new()), 3, Duration::from_millis(1));
        rt().block_on(crate::conformance::run(&retry)).unwrap();
    }
}
