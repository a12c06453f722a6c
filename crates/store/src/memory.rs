//! In-memory store for tests and as the reference behaviour of the trait.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::{BoxFuture, Capabilities, Error, ObjectMeta, PutMode, Result, Store};

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T) -> T {
        let mut g = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl Store for MemoryStore {
    fn location(&self) -> String {
        "memory".into()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities { atomic_create: true, delete: true }
    }
    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|m| {
                if mode == PutMode::Create && m.contains_key(path) {
                    return Err(Error::AlreadyExists { path: path.into() });
                }
                m.insert(path.to_string(), data);
                Ok(())
            })
        })
    }
    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            self.with(|m| {
                let v = m.get(path).ok_or_else(|| Error::NotFound { path: path.into() })?;
                match range {
                    None => Ok(v.clone()),
                    Some(r) if r.start <= r.end && r.end <= v.len() as u64 => {
                        Ok(v[r.start as usize..r.end as usize].to_vec())
                    }
                    Some(_) => Err(Error::Other { path: path.into(), message: "range beyond object".into() }),
                }
            })
        })
    }
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        Box::pin(async move {
            self.with(|m| {
                m.get(path)
                    .map(|v| ObjectMeta { path: path.into(), size: v.len() as u64, modified: None })
                    .ok_or_else(|| Error::NotFound { path: path.into() })
            })
        })
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        Box::pin(async move {
            let p = format!("{}/", prefix.trim_end_matches('/'));
            self.with(|m| {
                Ok(m.iter()
                    .filter(|(k, _)| k.starts_with(&p))
                    .map(|(k, v)| ObjectMeta { path: k.clone(), size: v.len() as u64, modified: None })
                    .collect())
            })
        })
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|m| m.remove(path));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_passes_conformance() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(crate::conformance::run(&super::MemoryStore::new())).unwrap();
    }
}
