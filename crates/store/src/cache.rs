//! A local cache in front of a remote store, for what repository readers fetch again and
//! again: index files, snapshots and key files (whole objects), and small
//! ranged reads of packs (trees and pack headers, the blobs `snapshots`, `ls`, `find` and a
//! backup's dedup lookups need). After one run, those commands cost only listings.
//!
//! Why it is safe: every cached object is immutable under its name (content-addressed and
//! written create-only), so a cached copy can only be stale by existing after the original
//! was deleted, and readers are driven by fresh listings, so they never ask for it. What
//! is read from the cache is authenticated exactly like what comes from the store (names
//! are hashes, blobs are AEAD-sealed), so a tampered cache is detected, not trusted.
//! Writers' leases (`writers/`), WAL objects and whole packs pass through uncached.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{BoxFuture, Capabilities, ObjectMeta, PutMode, Result, Store};

/// Ranged reads up to this size are cached: below the smallest chunk, so trees, pack
/// headers and the data of small files, never the bulk of the data.
pub const MAX_CACHED_RANGE: u64 = 256 * 1024;

#[derive(Debug)]
pub struct CacheStore {
    inner: Arc<dyn Store>,
    dir: PathBuf,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// Objects named by the hash of their bytes. Not `config`: a repository deleted and made
/// again at the same location has another config under the same name.
fn whole_cacheable(path: &str) -> bool {
    ["index/", "snapshots/", "keys/"].iter().any(|p| path.starts_with(p))
}

/// A relative path that stays below the cache directory (object names are ids and fixed
/// words; anything else is not cached).
fn safe(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(".tmp"))
}

impl CacheStore {
    pub fn new(inner: Arc<dyn Store>, dir: impl Into<PathBuf>) -> Self {
        CacheStore { inner, dir: dir.into(), hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    fn whole(&self, path: &str) -> PathBuf {
        self.dir.join("objects").join(path)
    }

    fn ranged(&self, path: &str, r: &Range<u64>) -> PathBuf {
        self.dir.join("ranges").join(path).join(format!("{}-{}", r.start, r.end))
    }

    fn read(p: &Path) -> Option<Vec<u8>> {
        std::fs::read(p).ok()
    }

    /// Best effort: a cache that cannot be written only costs downloads.
    fn write(p: &Path, data: &[u8]) {
        let Some(dir) = p.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), crate::local::next_tmp()));
        if std::fs::write(&tmp, data).is_ok() && std::fs::rename(&tmp, p).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

impl Store for CacheStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Written through: a backup's own index files are not downloaded again.
            let copy = (whole_cacheable(path) && safe(path)).then(|| data.clone());
            self.inner.put(path, data, mode).await?;
            if let Some(c) = copy {
                Self::write(&self.whole(path), &c);
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let slot = match &range {
                None if whole_cacheable(path) && safe(path) => Some(self.whole(path)),
                Some(r)
                    if path.starts_with("data/")
                        && safe(path)
                        && r.end > r.start
                        && r.end - r.start <= MAX_CACHED_RANGE =>
                {
                    Some(self.ranged(path, r))
                }
                _ => None,
            };
            let Some(slot) = slot else { return self.inner.get(path, range).await };
            if let Some(d) = Self::read(&slot) {
                if range.as_ref().is_none_or(|r| d.len() as u64 == r.end - r.start) {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(d);
                }
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
            let d = self.inner.get(path, range).await?;
            Self::write(&slot, &d);
            Ok(d)
        })
    }

    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        self.inner.head(path)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        self.inner.list(prefix)
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.inner.delete(path).await?;
            if safe(path) {
                let _ = std::fs::remove_file(self.whole(path));
                let _ = std::fs::remove_dir_all(self.dir.join("ranges").join(path));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn cache_store_passes_conformance_and_serves_repeat_reads_locally() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("cairn-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mem: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = CacheStore::new(mem.clone(), &dir);
        rt.block_on(crate::conformance::run(&c)).unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            mem.put("snapshots/abc", b"snap".to_vec(), PutMode::Create).await.unwrap_or_else(|e| panic!("{e}"));
            mem.put("data/ab/cd", vec![7u8; 1000], PutMode::Create).await.unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..3 {
                assert_eq!(c.get("snapshots/abc", None).await.unwrap_or_default(), b"snap");
                assert_eq!(c.get("data/ab/cd", Some(10..20)).await.unwrap_or_default(), vec![7u8; 10]);
            }
            // Whole packs and leases are never cached.
            c.get("data/ab/cd", None).await.unwrap_or_default();
            mem.put("writers/w", b"1".to_vec(), PutMode::Create).await.unwrap_or_else(|e| panic!("{e}"));
            c.get("writers/w", None).await.unwrap_or_default();
        });
        assert_eq!(c.misses.load(Ordering::Relaxed), 2, "one download each, then the cache");
        assert!(c.hits.load(Ordering::Relaxed) >= 4);
        // Deleting through the cache drops the cached copies.
        rt.block_on(c.delete("snapshots/abc")).unwrap_or_else(|e| panic!("{e}"));
        assert!(rt.block_on(c.get("snapshots/abc", None)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
