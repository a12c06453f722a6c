//! Local-disk store. Blocking file I/O runs on tokio's blocking pool.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{BoxFuture, Capabilities, Error, ObjectMeta, PutMode, Result, Store};

/// Objects at least this large (packs) are written with O_DIRECT when durable writes are
/// asked for anyway: they go from the buffer to the disk without first being copied into
/// the page cache, which for a backup is pure cost (the packs are not read back), about a
/// third of the kernel time of a large initial backup on this project's VM.
const DIRECT_MIN: usize = 1 << 20;
const DIRECT_ALIGN: usize = 4096;

/// Writes `data` to the new file `tmp` with O_DIRECT (the aligned bulk) and a plain write
/// for the tail, then fsyncs. `None` when the file system refuses O_DIRECT (older tmpfs,
/// some FUSE file systems): `tmp` is gone again and the caller writes the plain way.
fn write_direct(tmp: &Path, data: &[u8]) -> Option<std::io::Result<()>> {
    use std::os::unix::fs::OpenOptionsExt;
    // EINVAL, at the open or at a write (an alignment this file system will not take),
    // means "not here": the file (which the open may have created) goes, and the caller
    // writes the plain way.
    let refused = |e: &std::io::Error| e.raw_os_error() == Some(libc::EINVAL);
    let f = match fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_DIRECT).open(tmp) {
        Ok(f) => f,
        Err(e) if refused(&e) => {
            let _ = fs::remove_file(tmp);
            return None;
        }
        Err(e) => return Some(Err(e)),
    };
    let bulk = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    let r = (|| -> std::io::Result<()> {
        // O_DIRECT needs an aligned buffer: one copy in memory, instead of the kernel's
        // copy into fresh page-cache pages.
        let buf = match DIRECT_BUFS.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            Some(b) => b,
            None => AlignedBuf::new(
                std::alloc::Layout::from_size_align(DIRECT_CHUNK, DIRECT_ALIGN).map_err(std::io::Error::other)?,
            )?,
        };
        let mut written = Ok(());
        for part in data[..bulk].chunks(DIRECT_CHUNK) {
            // SAFETY: buf holds DIRECT_CHUNK writable bytes, part at most as many.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), buf.ptr, part.len()) };
            // SAFETY: the first part.len() bytes were initialized just above.
            written = (&f).write_all(unsafe { std::slice::from_raw_parts(buf.ptr, part.len()) });
            if written.is_err() {
                break;
            }
        }
        let mut pool = DIRECT_BUFS.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(buf);
        }
        drop(pool);
        written?;
        let mut fw = &f;
        if bulk < data.len() {
            use std::os::fd::AsRawFd;
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                if fl < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_DIRECT) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            fw.write_all(&data[bulk..])?;
        }
        f.sync_all()
    })();
    match r {
        Err(e) if refused(&e) => {
            drop(f);
            let _ = fs::remove_file(tmp);
            None
        }
        r => Some(r),
    }
}

/// Aligned buffers of finished direct writes, for the next ones (allocating an aligned
/// block per pack fragments the heap).
static DIRECT_BUFS: std::sync::Mutex<Vec<AlignedBuf>> = std::sync::Mutex::new(Vec::new());
/// A pack goes to the disk through an aligned buffer this large, a part at a time: a
/// whole-pack copy cost 8 MiB of memory per upload in flight.
const DIRECT_CHUNK: usize = 1 << 20;

/// A heap buffer with a given alignment, freed on drop.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(layout: std::alloc::Layout) -> std::io::Result<AlignedBuf> {
        if layout.size() == 0 {
            return Err(std::io::Error::other("empty direct write"));
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        Ok(AlignedBuf { ptr, layout })
    }
}

// SAFETY: the buffer is plain memory owned by the value; nothing else points into it.
unsafe impl Send for AlignedBuf {}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Objects as files under `root`; `a/b/c` is `root/a/b/c`. Temporary files are named
/// `.tmp-*` and never listed; a killed writer leaves at most such a file behind.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
    fsync: bool,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number unique within this process, for temporary file names.
pub(crate) fn next_tmp() -> u64 {
    TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: Arc::new(root.into()), fsync: true }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes `.tmp-*` files not modified for `older_than`: what killed writers left.
    /// A live writer's temporary file is written within seconds, so an old one is dead.
    /// Returns the number of files and bytes removed.
    pub fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        let mut stack = vec![self.root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir.display().to_string(), e)),
            };
            for ent in rd.flatten() {
                let Ok(ft) = ent.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(ent.path());
                } else if ft.is_file() && ent.file_name().to_string_lossy().starts_with(".tmp-") {
                    let Ok(m) = ent.metadata() else { continue };
                    let age = m.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
                    if age >= older_than && fs::remove_file(ent.path()).is_ok() {
                        n += 1;
                        bytes += m.len();
                    }
                }
            }
        }
        Ok((n, bytes))
    }

    fn full(&self, path: &str) -> Result<PathBuf> {
        if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(Error::Other { path: path.into(), message: "invalid object key".into() });
        }
        Ok(self.root.join(path))
    }

    fn put_sync(&self, path: &str, data: &[u8], mode: PutMode) -> Result<()> {
        let full = self.full(path)?;
        let dir = full.parent().unwrap_or(&self.root).to_path_buf();
        if mode == PutMode::Create && full.exists() {
            return Err(Error::AlreadyExists { path: path.into() });
        }
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| Error::io(path, e))?;
            // A new fan-out directory must itself be durable before objects in it count.
            if let (true, Some(parent)) = (self.fsync, dir.parent()) {
                if let Ok(d) = fs::File::open(parent) {
                    let _ = d.sync_all();
                }
            }
        }
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
        let write = || -> std::io::Result<()> {
            if self.fsync && data.len() >= DIRECT_MIN {
                if let Some(r) = write_direct(&tmp, data) {
                    return r;
                }
            }
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            if self.fsync {
                f.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        let res = match mode {
            // link(2) fails if the target exists: create-only without a race.
            PutMode::Create => fs::hard_link(&tmp, &full).map_err(|e| Error::io(path, e)),
            PutMode::Overwrite => fs::rename(&tmp, &full).map_err(|e| Error::io(path, e)),
        };
        let _ = fs::remove_file(&tmp);
        // The new name must be durable before anything that refers to it is written
        // (pack -> index -> snapshot ordering survives a power loss).
        if res.is_ok() && self.fsync {
            if let Ok(d) = fs::File::open(&dir) {
                let _ = d.sync_all();
            }
        }
        res
    }

    fn get_sync(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let full = self.full(path)?;
        let mut f = fs::File::open(&full).map_err(|e| Error::io(path, e))?;
        match range {
            None => {
                let mut v = Vec::new();
                f.read_to_end(&mut v).map_err(|e| Error::io(path, e))?;
                Ok(v)
            }
            Some(r) => {
                let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
                let len = r
                    .end
                    .checked_sub(r.start)
                    .ok_or_else(|| Error::Other { path: path.into(), message: "bad range".into() })?;
                // Never allocate for a range the object does not have (a hostile index).
                if r.end > size {
                    return Err(Error::Other {
                        path: path.into(),
                        message: format!("range {}..{} beyond the object's {size} bytes", r.start, r.end),
                    });
                }
                // Read into spare capacity: zeroing the buffer first cost 3% of a restore.
                let mut v = Vec::with_capacity(len as usize);
                f.seek(SeekFrom::Start(r.start)).map_err(|e| Error::io(path, e))?;
                (&mut f).take(len).read_to_end(&mut v).map_err(|e| Error::io(path, e))?;
                if v.len() as u64 != len {
                    let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the object ended before the range");
                    return Err(Error::io(path, e));
                }
                Ok(v)
            }
        }
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut stack = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(p) = stack.pop() {
            let dir = if p.is_empty() { self.root.to_path_buf() } else { self.full(&p)? };
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&p, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(&p, e))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") {
                    continue;
                }
                let key = if p.is_empty() { name } else { format!("{p}/{name}") };
                let ft = ent.file_type().map_err(|e| Error::io(&key, e))?;
                if ft.is_dir() {
                    stack.push(key);
                } else if ft.is_file() {
                    // A file removed between readdir and stat (concurrent prune) is skipped.
                    if let Ok(m) = ent.metadata() {
                        out.push(ObjectMeta { path: key, size: m.len(), modified: Some(m.mtime()) });
                    }
                }
            }
        }
        Ok(out)
    }
}

fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> BoxFuture<'static, Result<T>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(Error::Other { path: String::new(), message: format!("I/O task failed: {e}") }))
    })
}

impl Store for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities { atomic_create: true, delete: true }
    }
    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>> {
        let (s, p) = (self.clone(), path.to_string());
        blocking(move || s.put_sync(&p, &data, mode))
    }
    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>> {
        let (s, p) = (self.clone(), path.to_string());
        blocking(move || s.get_sync(&p, range))
    }
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        let (s, p) = (self.clone(), path.to_string());
        blocking(move || {
            let m = fs::metadata(s.full(&p)?).map_err(|e| Error::io(&p, e))?;
            if !m.is_file() {
                return Err(Error::NotFound { path: p });
            }
            Ok(ObjectMeta { path: p, size: m.len(), modified: Some(m.mtime()) })
        })
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        let (s, p) = (self.clone(), prefix.to_string());
        blocking(move || s.list_sync(&p))
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        let (s, p) = (self.clone(), path.to_string());
        blocking(move || match fs::remove_file(s.full(&p)?) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| Error::io(&p, e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_writes_store_every_byte_whatever_the_length() {
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [DIRECT_MIN, DIRECT_MIN + 123, 3 * DIRECT_CHUNK + 1, 2 * DIRECT_CHUNK - 4096].iter().enumerate()
        {
            let data: Vec<u8> = (0..*len).map(|j| (j * 31 + i) as u8).collect();
            let tmp = dir.path().join(format!("t{i}"));
            match write_direct(&tmp, &data) {
                // The file system takes O_DIRECT (ext4, xfs): what it holds is the data.
                Some(r) => {
                    r.unwrap();
                    assert!(std::fs::read(&tmp).unwrap() == data, "length {len}");
                }
                // tmpfs refuses it; the caller writes the plain way.
                None => assert!(!tmp.exists() || std::fs::metadata(&tmp).unwrap().len() == 0),
            }
        }
        // Through the store: a pack-sized object round-trips.
        let store = LocalStore::new(dir.path());
        let data: Vec<u8> = (0..5_000_000u32).map(|j| (j % 251) as u8).collect();
        store.put_sync("data/ab/pack", &data, PutMode::Create).unwrap();
        assert!(store.get_sync("data/ab/pack", None).unwrap() == data);
        assert!(store.get_sync("data/ab/pack", Some(4095..1_048_577)).unwrap() == data[4095..1_048_577]);
    }

    #[test]
    fn local_store_passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        rt.block_on(crate::conformance::run(&LocalStore::new(dir.path()))).unwrap();
    }
}
