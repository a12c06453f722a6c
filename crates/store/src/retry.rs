//! A decorator that retries transient failures with exponential backoff and jitter.
//!
//! Only errors a store marks transient ([`Error::is_transient`]) are retried, and only for
//! operations that are safe to repeat: every method is idempotent except a create-only
//! put, whose retry after an ambiguous failure may find its own object already there:
//! that `AlreadyExists` is success only if the object holds exactly our bytes (read back).
//! Deletes are idempotent by the trait's contract, as on object stores.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::{BoxFuture, Capabilities, Error, ObjectMeta, PutMode, Result, Store};

#[derive(Debug, Clone)]
pub struct RetryStore {
    inner: Arc<dyn Store>,
    attempts: u32,
    base: Duration,
    max: Duration,
}

impl RetryStore {
    /// Up to `attempts` tries, waiting `base * 2^n` (capped at 30 s) with full jitter.
    pub fn new(inner: Arc<dyn Store>, attempts: u32, base: Duration) -> Self {
        RetryStore { inner, attempts: attempts.max(1), base, max: Duration::from_secs(30) }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(16)).min(self.max);
        // Full jitter from the clock's nanoseconds: no RNG dependency, and retries of
        // concurrent requests spread out.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        exp.mul_f64((nanos % 1000) as f64 / 1000.0)
    }

    async fn run<T, F>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> BoxFuture<'static, Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt + 1 < self.attempts => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

impl Store for RetryStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>> {
        let data = Arc::new(data);
        Box::pin(async move {
            let mut first = true;
            let r = self
                .run(|| {
                    let (inner, path, data, retry) = (self.inner.clone(), path.to_string(), data.clone(), !first);
                    first = false;
                    Box::pin(async move {
                        match inner.put(&path, data.as_ref().clone(), mode).await {
                            // Our earlier attempt may have landed before its reply was lost:
                            // success if what is there is exactly what we wrote.
                            Err(Error::AlreadyExists { path: p }) if retry && mode == PutMode::Create => {
                                if inner.get(&path, None).await? == *data {
                                    Ok(())
                                } else {
                                    Err(Error::AlreadyExists { path: p })
                                }
                            }
                            r => r,
                        }
                    })
                })
                .await;
            r
        })
    }
    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(self.run(move || {
            let (inner, path, range) = (self.inner.clone(), path.to_string(), range.clone());
            Box::pin(async move { inner.get(&path, range).await })
        }))
    }
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        Box::pin(self.run(move || {
            let (inner, path) = (self.inner.clone(), path.to_string());
            Box::pin(async move { inner.head(&path).await })
        }))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        Box::pin(self.run(move || {
            let (inner, prefix) = (self.inner.clone(), prefix.to_string());
            Box::pin(async move { inner.list(&prefix).await })
        }))
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        // Deletes are idempotent (a missing object is success), so a retry is safe as is.
        Box::pin(self.run(move || {
            let (inner, path) = (self.inner.clone(), path.to_string());
            Box::pin(async move { inner.delete(&path).await })
        }))
    }
}
