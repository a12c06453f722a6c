//! A decorator that limits upload and download bandwidth (`--limit-upload`,
//! `--limit-download`), shared by every request through it.
//!
//! Each transfer reserves its slot on a virtual timeline (`next_free += bytes / rate`) and
//! waits until that slot ends, so concurrent requests share the rate fairly and no
//! background task is needed.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{BoxFuture, Capabilities, ObjectMeta, PutMode, Result, Store};

#[derive(Debug)]
struct Bucket {
    bytes_per_sec: f64,
    next_free: Mutex<Instant>,
}

impl Bucket {
    fn new(bytes_per_sec: u64) -> Self {
        Bucket { bytes_per_sec: bytes_per_sec.max(1) as f64, next_free: Mutex::new(Instant::now()) }
    }

    async fn take(&self, bytes: u64) {
        let until = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
            *next
        };
        tokio::time::sleep_until(until.into()).await;
    }
}

#[derive(Debug)]
pub struct LimitStore {
    inner: Arc<dyn Store>,
    up: Option<Bucket>,
    down: Option<Bucket>,
}

impl LimitStore {
    /// Limits in bytes per second; `None` leaves that direction unlimited.
    pub fn new(inner: Arc<dyn Store>, upload: Option<u64>, download: Option<u64>) -> Self {
        LimitStore { inner, up: upload.map(Bucket::new), down: download.map(Bucket::new) }
    }
}

impl Store for LimitStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(b) = &self.up {
                b.take(data.len() as u64).await;
            }
            self.inner.put(path, data, mode).await
        })
    }
    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let data = self.inner.get(path, range).await?;
            if let Some(b) = &self.down {
                b.take(data.len() as u64).await;
            }
            Ok(data)
        })
    }
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        self.inner.head(path)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        self.inner.list(prefix)
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        self.inner.delete(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn limit_store_passes_conformance() {
        let s = LimitStore::new(Arc::new(MemoryStore::new()), Some(100 << 20), Some(100 << 20));
        rt().block_on(crate::conformance::run(&s)).unwrap();
    }

    #[test]
    fn uploads_and_downloads_are_held_to_the_rate() {
        let s = LimitStore::new(Arc::new(MemoryStore::new()), Some(4 << 20), Some(8 << 20));
        let rt = rt();
        let t = Instant::now();
        for i in 0..4 {
            rt.block_on(s.put(&format!("x/{i}"), vec![0u8; 1 << 20], PutMode::Create)).unwrap();
        }
        let up = t.elapsed();
        // 4 MiB at 4 MiB/s: about one second (the first slot starts immediately).
        assert!(up >= Duration::from_millis(900) && up < Duration::from_millis(2500), "upload took {up:?}");
        let t = Instant::now();
        for i in 0..4 {
            rt.block_on(s.get(&format!("x/{i}"), None)).unwrap();
        }
        let down = t.elapsed();
        assert!(down >= Duration::from_millis(400) && down < Duration::from_millis(1500), "download took {down:?}");
    }
}
