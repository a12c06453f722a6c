//! A decorator that reads through and discards every write: `--dry-run` for any command.

use std::ops::Range;
use std::sync::Arc;

use crate::{BoxFuture, Capabilities, ObjectMeta, PutMode, Result, Store};

#[derive(Debug, Clone)]
pub struct DryRunStore {
    inner: Arc<dyn Store>,
}

impl DryRunStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        DryRunStore { inner }
    }
}

impl Store for DryRunStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn put<'a>(&'a self, _path: &'a str, _data: Vec<u8>, _mode: PutMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        self.inner.get(path, range)
    }
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        self.inner.head(path)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        self.inner.list(prefix)
    }
    fn delete<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
