//! Concurrent saving of blobs: dedup against the index, compress, encrypt, pack, upload,
//! and write index files as packs land.
//!
//! Each worker thread owns a [`WorkerSaver`] with its own packer and zstd context, so the
//! hot path takes one short lock (the dedup check). Full packs go through a bounded channel
//! to [`BlobSaver::run_uploader`], which keeps up to `uploads` puts in flight on the
//! runtime; the bound is the back-pressure that keeps memory flat. Ordering: a pack is
//! added to an index file only after its upload succeeded, and [`BlobSaver::finish`]
//! returns only after every index file is written, so the snapshot written after it never
//! names a blob that is not indexed.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cairn_format::index::{IndexFile, IndexedPack};
use cairn_format::{BlobId, BlobType};
use cairn_store::PutMode;
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::{layout, BlobCodec, Error, FinishedPack, Index, Packer, Repository, Result, TreeReader};

/// Packs per index file written during a backup.
const PACKS_PER_INDEX: usize = 32;

#[derive(Debug, Default, Clone, Copy)]
pub struct SaverStats {
    pub blobs_added: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Bytes of new packs (what the repository grew by, before index files).
    pub bytes_added: u64,
    pub packs_added: u64,
}

struct State {
    index: Index,
    pending: HashSet<BlobId>,
}

pub struct BlobSaver<'r> {
    repo: &'r Repository,
    state: Mutex<State>,
    tx: Mutex<Option<Sender<FinishedPack>>>,
    rx: Mutex<Option<Receiver<FinishedPack>>>,
    recovered: Mutex<Vec<IndexedPack>>,
    error: Mutex<Option<Error>>,
    blobs_added: AtomicU64,
    data_added: AtomicU64,
    bytes_added: AtomicU64,
    packs_added: AtomicU64,
    uploads: usize,
    /// zstd level of the data blobs this saver writes (0: none).
    level: i32,
    trees: TreeReader<'r>,
}

impl<'r> BlobSaver<'r> {
    /// `recovered`: packs adopted by [`Repository::recover_unindexed`], recorded in the
    /// first index file this saver writes.
    pub fn new(repo: &'r Repository, index: Index, recovered: Vec<IndexedPack>, uploads: usize) -> Self {
        let (tx, rx) = bounded(0);
        BlobSaver {
            repo,
            state: Mutex::new(State { index, pending: HashSet::new() }),
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
            recovered: Mutex::new(recovered),
            error: Mutex::new(None),
            blobs_added: AtomicU64::new(0),
            data_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
            packs_added: AtomicU64::new(0),
            uploads: uploads.max(1),
            level: repo.config().compression_level,
            trees: TreeReader::new(repo),
        }
    }

    /// Compresses new data blobs at `level` (0: not at all) instead of the repository's
    /// `compression_level`: a reader needs neither (each blob says whether it is zstd).
    pub fn with_compression(mut self, level: Option<i32>) -> Self {
        if let Some(l) = level {
            self.level = l;
        }
        self
    }

    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the blob is indexed or being saved (never saved twice by this process).
    pub fn is_known(&self, id: &BlobId) -> bool {
        let s = self.lock();
        s.index.contains(id) || s.pending.contains(id)
    }

    /// Claims `id` for saving; false when it is already known.
    fn claim(&self, id: BlobId) -> bool {
        let mut s = self.lock();
        !s.index.contains(&id) && s.pending.insert(id)
    }

    /// Loads a tree through the saver's index (the parent snapshot's trees during backup),
    /// its pack read whole once (see [`TreeReader`]).
    pub fn load_tree(&self, id: cairn_format::TreeId) -> Result<cairn_format::tree::Tree> {
        let found = {
            let s = self.lock();
            s.index.get(&id.blob()).map(|l| (*l, s.index.pack(l.pack)))
        };
        let (loc, (pack, salt)) = found.ok_or(Error::BlobNotIndexed(id.blob()))?;
        self.trees.load_at(id, &loc, pack, &salt)
    }

    /// Raw length of an indexed blob.
    pub fn raw_length(&self, id: &BlobId) -> Option<u32> {
        self.lock().index.get(id).map(|l| l.raw_length)
    }

    pub fn worker(&self) -> Result<WorkerSaver<'_, 'r>> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Error::Internal("saver closed".into()))?;
        Ok(WorkerSaver { saver: self, codec: BlobCodec::new(self.level), data: None, tree: None, tx })
    }

    pub fn failed(&self) -> bool {
        self.error.lock().map(|e| e.is_some()).unwrap_or(true)
    }

    /// Records the first error; workers see [`BlobSaver::failed`] and stop early.
    pub fn fail(&self, e: Error) {
        let mut g = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// The hand-over channel is a rendezvous: a packer waits while the previous pack uploads,
    /// so at most `uploads` packs beyond the open ones are in memory.
    /// Uploads packs until every [`WorkerSaver`] is dropped and [`BlobSaver::close`] was
    /// called. Run it on its own thread.
    pub fn run_uploader(&self) {
        let mut inflight = VecDeque::new();
        let mut done: Vec<IndexedPack> = std::mem::take(&mut *self.recovered.lock().unwrap_or_else(|p| p.into_inner()));
        type Inflight = VecDeque<(tokio::task::JoinHandle<cairn_store::Result<()>>, IndexedPack, u64)>;
        let wait_one = |inflight: &mut Inflight, done: &mut Vec<IndexedPack>| {
            if let Some((h, p, size)) = inflight.pop_front() {
                match self.repo.block_on(h) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.kind() == cairn_store::ErrorKind::AlreadyExists => {}
                    Ok(Err(e)) => return self.fail(e.into()),
                    Err(e) => return self.fail(Error::Internal(format!("upload task failed: {e}"))),
                }
                self.bytes_added.fetch_add(size, Ordering::Relaxed);
                self.packs_added.fetch_add(1, Ordering::Relaxed);
                done.push(p);
            }
        };
        // Owning the receiver here means that if this thread dies, the channel closes and
        // packers get an error instead of blocking forever on the rendezvous.
        let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        for pack in rx.iter() {
            if self.failed() {
                continue; // drain so workers never block on a dead uploader
            }
            let store = self.repo.store().clone();
            let path = layout::pack(&pack.id);
            let size = pack.data.len() as u64;
            let data = pack.data;
            let h = self.repo.runtime().spawn(async move { store.put(&path, data, PutMode::Create).await });
            inflight.push_back((h, IndexedPack { id: pack.id, salt: pack.salt, blobs: pack.entries }, size));
            while inflight.len() >= self.uploads {
                wait_one(&mut inflight, &mut done);
            }
            // Drain finished uploads without waiting.
            while inflight.front().map(|(h, ..)| h.is_finished()).unwrap_or(false) {
                wait_one(&mut inflight, &mut done);
            }
            if done.len() >= PACKS_PER_INDEX {
                self.write_index(&mut done);
            }
        }
        while !inflight.is_empty() {
            wait_one(&mut inflight, &mut done);
        }
        if !self.failed() {
            self.write_index(&mut done);
        }
    }

    fn write_index(&self, done: &mut Vec<IndexedPack>) {
        if done.is_empty() {
            return;
        }
        let packs = std::mem::take(done);
        if let Err(e) = self.repo.save_index(&IndexFile { supersedes: Vec::new(), packs: packs.clone() }) {
            return self.fail(e);
        }
        let mut s = self.lock();
        for p in &packs {
            s.index.add_pack(p.id, p.salt, &p.blobs);
            for b in &p.blobs {
                s.pending.remove(&b.id);
            }
        }
    }

    /// A guard that [`close`](BlobSaver::close)s the saver when dropped: create it first in
    /// the scope that runs [`BlobSaver::run_uploader`], so every way out of that scope,
    /// panics included, lets the uploader end and the scope join.
    pub fn close_on_drop(&self) -> CloseOnDrop<'_, 'r> {
        CloseOnDrop(self)
    }

    /// Drops the saver's own sender: once every worker is dropped too, the uploader ends.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// After the uploader returned: the first error, or the stats and the updated index.
    pub fn finish(self) -> Result<(SaverStats, Index)> {
        if let Some(e) = self.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let stats = SaverStats {
            blobs_added: self.blobs_added.into_inner(),
            data_added: self.data_added.into_inner(),
            bytes_added: self.bytes_added.into_inner(),
            packs_added: self.packs_added.into_inner(),
        };
        Ok((stats, self.state.into_inner().unwrap_or_else(|p| p.into_inner()).index))
    }
}

fn send_pack(tx: &Sender<FinishedPack>, p: Packer) -> Result<()> {
    let f = p.finish()?;
    tx.send(f).map_err(|_| Error::Internal("uploader stopped".into()))
}

/// See [`BlobSaver::close_on_drop`].
pub struct CloseOnDrop<'s, 'r>(&'s BlobSaver<'r>);

impl Drop for CloseOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// One thread's packers. Dropping it without [`WorkerSaver::flush`] loses its open packs,
/// which is what a failed backup wants.
pub struct WorkerSaver<'s, 'r> {
    saver: &'s BlobSaver<'r>,
    codec: BlobCodec,
    data: Option<Packer>,
    tree: Option<Packer>,
    tx: Sender<FinishedPack>,
}

impl WorkerSaver<'_, '_> {
    /// Saves a blob unless the repository (or this backup) already has it. Returns whether
    /// it was new. `id` must be `repo.blob_id(data)`.
    pub fn save(&mut self, kind: BlobType, id: BlobId, data: &[u8]) -> Result<bool> {
        if data.len() > cairn_format::MAX_BLOB_LEN as usize {
            // Only a tree can be this large (a directory of some 400,000 entries): readers
            // would refuse it, so it is never written.
            return Err(Error::Invalid(format!(
                "a {} blob of {} bytes is over the format's {} MiB limit (a directory with too many entries?)",
                if kind == BlobType::Tree { "tree" } else { "data" },
                data.len(),
                cairn_format::MAX_BLOB_LEN >> 20
            )));
        }
        if !self.saver.claim(id) {
            return Ok(false);
        }
        let repo = self.saver.repo;
        let target = repo.config().pack_size as usize;
        let slot = match kind {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.tree,
        };
        // Close the open pack first if this blob would push it past the target, so packs
        // stay within their preallocated size (no doubling reallocation of pack buffers).
        // The encoded blob is at most one byte longer than the data.
        let bound = 1 + data.len() + cairn_crypto::TAG_LEN;
        if slot.as_ref().is_some_and(|p| !p.is_empty() && p.len() + bound > target) {
            if let Some(p) = slot.take() {
                send_pack(&self.tx, p)?;
            }
        }
        if slot.is_none() {
            *slot = Some(Packer::new(repo.master(), kind, target)?);
        }
        if let Some(p) = slot.as_mut() {
            let codec = &mut self.codec;
            p.add_with(id, data.len() as u32, |buf| codec.encode_into(data, buf))?;
        }
        self.saver.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.saver.data_added.fetch_add(data.len() as u64, Ordering::Relaxed);
        if slot.as_ref().is_some_and(|p| p.len() >= target) {
            if let Some(p) = slot.take() {
                send_pack(&self.tx, p)?;
            }
        }
        Ok(true)
    }

    fn send(&self, p: Packer) -> Result<()> {
        send_pack(&self.tx, p)
    }

    /// Sends the open packs for upload.
    pub fn flush(mut self) -> Result<()> {
        for p in [self.data.take(), self.tree.take()].into_iter().flatten() {
            if !p.is_empty() {
                self.send(p)?;
            }
        }
        Ok(())
    }
}
