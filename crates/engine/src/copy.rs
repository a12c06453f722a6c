//! Copying snapshots between repositories: only the blobs the destination lacks travel,
//! decrypted from the source and sealed again under the destination's keys.
//!
//! Blob ids are keyed (a MAC under each repository's id key), so the same data has other
//! ids in a repository with another key. When both repositories share the id key (one was
//! made with `init --copy-chunker-params-from` the other), ids, trees and chunk boundaries
//! are identical: a data blob the destination has is neither read nor sent, trees are
//! stored as the source's exact bytes, and snapshots of the same files taken into either
//! repository deduplicate. Otherwise every data blob is read once to compute its
//! destination id and every tree is rewritten with the new ids; chunk boundaries stay the
//! source's.
//!
//! **What the destination's contents prove.** A data blob that the destination's index
//! lists (or that an adopted pack's header lists) is there: packs are written whole and
//! create-only. A *tree* the destination has proves nothing about what lies beneath it.
//! Index files are written as packs land, in no particular order, and a killed run leaves
//! finished packs that the next run adopts: a tree pack can be indexed while the data pack
//! its trees reference never arrived. So the copier walks every tree of what it copies,
//! from the source, and decides blob by blob; it never prunes the walk at a tree the
//! destination "has". Only trees this run has walked to the bottom are skipped when seen
//! again (shared subtrees, the same tree in several snapshots). This costs reading the
//! source's trees of every copied snapshot, as restic's copy does; data is still read and
//! sent only where missing. (Issue 9: a copy rerun after a kill trusted an adopted tree
//! pack and saved snapshots whose data was never sent.)
//!
//! Ordering: every blob is uploaded and indexed ([`BlobSaver::finish`]) before any
//! snapshot is written, and before writing them [`copy_snapshots`] checks that every blob
//! the walk reached is in the destination's final index; so an interrupted copy leaves at
//! worst packs that the next run adopts, never a snapshot with missing data.

use std::collections::{HashMap, HashSet};

use cairn_format::snapshot::Snapshot;
use cairn_format::tree::{NodeKind, Tree};
use cairn_format::{BlobId, BlobType, SnapshotId, TreeId};
use cairn_repo::{BlobSaver, Index, Repository, WorkerSaver};

use crate::{Error, Result};

#[derive(Debug, Default, Clone, Copy)]
pub struct CopyStats {
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    pub blobs_skipped: u64,
}

/// The identity a snapshot keeps across copies and rewrites: the id it was first saved
/// under (its `original` once copied or rewritten) and its time.
pub fn identity(id: SnapshotId, s: &Snapshot) -> (SnapshotId, String) {
    (s.original.unwrap_or(id), s.time.clone())
}

/// The snapshots of `wanted` whose identity no snapshot of `have` carries, in order.
pub fn missing(wanted: Vec<(SnapshotId, Snapshot)>, have: &[(SnapshotId, Snapshot)]) -> Vec<(SnapshotId, Snapshot)> {
    let have: HashSet<(SnapshotId, String)> = have.iter().map(|(id, s)| identity(*id, s)).collect();
    wanted.into_iter().filter(|(id, s)| !have.contains(&identity(*id, s))).collect()
}

#[derive(Debug)]
pub struct CopyOutcome {
    /// (source snapshot, its copy in the destination), in the order given.
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    pub stats: CopyStats,
}

/// Copies `snaps` (snapshots of `src`) into `dst`, with at most `uploads` uploads in
/// flight. The caller holds a writer lease on `dst`. A copied snapshot records its origin
/// (`original`) and has no parent in the destination.
pub fn copy_snapshots(
    src: &Repository,
    dst: &Repository,
    snaps: &[(SnapshotId, Snapshot)],
    uploads: usize,
) -> Result<CopyOutcome> {
    copy_snapshots_metered(src, dst, snaps, uploads, &cairn_repo::Meter::default())
}

/// [`copy_snapshots`], counting on `meter` the snapshots walked and the bytes of their
/// files (the snapshots' logical size: a subtree walked before counts again in full).
pub fn copy_snapshots_metered(
    src: &Repository,
    dst: &Repository,
    snaps: &[(SnapshotId, Snapshot)],
    uploads: usize,
    meter: &cairn_repo::Meter,
) -> Result<CopyOutcome> {
    meter.plan(snaps.len() as u64, snaps.iter().map(|(_, s)| s.summary.total_bytes).sum());
    if snaps.is_empty() {
        return Ok(CopyOutcome { copied: Vec::new(), stats: CopyStats::default() });
    }
    let src_index = src.load_index()?;
    let mut dst_index = dst.load_index_for_writing()?;
    let recovered = dst.recover_unindexed(&mut dst_index)?;
    let saver = BlobSaver::new(dst, dst_index, recovered, uploads);
    let (trees, stats, reached) = std::thread::scope(|s| -> Result<_> {
        let _close = saver.close_on_drop();
        s.spawn(|| saver.run_uploader());
        let mut w = saver.worker()?;
        let mut c = Copier::new(src, &src_index, &saver);
        c.meter = Some(meter);
        let mut trees = Vec::with_capacity(snaps.len());
        for (id, snap) in snaps {
            let t = c.tree(&mut w, snap.tree, 0).map_err(|e| match e {
                Error::Invalid(m) => Error::Invalid(format!("copying snapshot {}: {m}", id.short())),
                Error::Damaged(m) => Error::Damaged(format!("copying snapshot {}: {m}", id.short())),
                e => e,
            })?;
            trees.push(t);
            meter.done(1, 0);
        }
        w.flush()?;
        Ok((trees, c.stats, c.into_reached()))
    })?;
    let (_, index) = saver.finish()?;
    // Belt and braces for the rule above: nothing the snapshots reference may be missing
    // from the index that readers will see.
    if let Some(b) = reached.iter().find(|b| !index.contains(b)) {
        return Err(Error::Internal(format!(
            "blob {} is not indexed in the destination after copying; no snapshot written",
            b.short()
        )));
    }
    let mut copied = Vec::with_capacity(snaps.len());
    for ((id, snap), tree) in snaps.iter().zip(trees) {
        let mut n = snap.clone();
        n.tree = tree;
        n.parent = None;
        n.original = Some(snap.original.unwrap_or(*id));
        copied.push((*id, dst.save_snapshot(&n)?));
    }
    Ok(CopyOutcome { copied, stats })
}

/// The tree walk of one copy run; see the module docs for what it may skip.
pub struct Copier<'a, 's, 'r> {
    src: &'a Repository,
    src_index: &'a Index,
    saver: &'s BlobSaver<'r>,
    same_ids: bool,
    /// Source blob id -> destination blob id, for every blob this run has dealt with (for
    /// trees: once the whole subtree has been dealt with).
    map: HashMap<BlobId, BlobId>,
    /// The logical size (file bytes) of each tree walked, so a subtree met again counts.
    sizes: HashMap<BlobId, u64>,
    pub stats: CopyStats,
    pub meter: Option<&'a cairn_repo::Meter>,
}

impl<'a, 's, 'r> Copier<'a, 's, 'r> {
    pub fn new(src: &'a Repository, src_index: &'a Index, saver: &'s BlobSaver<'r>) -> Self {
        let same_ids = src.id_key().as_bytes() == saver.repo().id_key().as_bytes();
        Copier {
            src,
            src_index,
            saver,
            same_ids,
            map: HashMap::new(),
            sizes: HashMap::new(),
            stats: CopyStats::default(),
            meter: None,
        }
    }

    /// The destination ids of every blob the walk reached (data and trees).
    pub fn into_reached(self) -> HashSet<BlobId> {
        self.map.into_values().collect()
    }

    fn blob(&mut self, w: &mut WorkerSaver<'_, '_>, kind: BlobType, id: BlobId) -> Result<BlobId> {
        if let Some(n) = self.map.get(&id) {
            return Ok(*n);
        }
        // A data blob the destination lists is there (packs are whole); see the docs.
        if self.same_ids && self.saver.is_known(&id) {
            self.stats.blobs_skipped += 1;
            self.map.insert(id, id);
            return Ok(id);
        }
        let data = self.src.read_blob(self.src_index, &id)?;
        let new = self.saver.repo().blob_id(&data);
        self.save(w, kind, new, &data)?;
        self.map.insert(id, new);
        Ok(new)
    }

    fn save(&mut self, w: &mut WorkerSaver<'_, '_>, kind: BlobType, id: BlobId, data: &[u8]) -> Result<()> {
        if w.save(kind, id, data)? {
            self.stats.blobs_copied += 1;
            self.stats.bytes_copied += data.len() as u64;
        } else {
            self.stats.blobs_skipped += 1;
        }
        Ok(())
    }

    /// Copies the tree `root` and everything below it; returns its id in the destination.
    /// Walks the whole subtree even when the destination has `root` (see the docs).
    pub fn tree(&mut self, w: &mut WorkerSaver<'_, '_>, root: TreeId, depth: usize) -> Result<TreeId> {
        if depth > cairn_repo::check::MAX_DEPTH {
            return Err(Error::Damaged(format!("trees nested deeper than {}", cairn_repo::check::MAX_DEPTH)));
        }
        if let Some(n) = self.map.get(&root.blob()) {
            if let Some(m) = self.meter {
                m.done(0, self.sizes.get(&root.blob()).copied().unwrap_or(0));
            }
            return Ok(n.tree());
        }
        let mut size = 0u64;
        let raw = self.src.read_blob(self.src_index, &root.blob())?;
        let t = Tree::decode(&raw).map_err(|e| {
            Error::Repo(cairn_repo::Error::Damaged { what: "tree", id: root.to_hex(), detail: e.to_string() })
        })?;
        let mut nodes = Vec::with_capacity(if self.same_ids { 0 } else { t.nodes.len() });
        for mut n in t.nodes {
            match n.kind {
                NodeKind::Dir => {
                    if let Some(st) = n.subtree {
                        let new = self.tree(w, st, depth + 1)?;
                        size = size.saturating_add(self.sizes.get(&st.blob()).copied().unwrap_or(0));
                        n.subtree = Some(new);
                    }
                }
                NodeKind::File => {
                    let mut content = Vec::with_capacity(n.content.len());
                    for b in &n.content {
                        content.push(self.blob(w, BlobType::Data, *b)?);
                    }
                    n.content = content;
                    size = size.saturating_add(n.size);
                    if let Some(m) = self.meter {
                        m.done(0, n.size);
                    }
                }
                _ => {}
            }
            if !self.same_ids {
                nodes.push(n);
            }
        }
        let id = if self.same_ids {
            // The source's exact bytes, so the id stays the one the parent tree names
            // (re-encoding could differ from an older encoder's output).
            self.save(w, BlobType::Tree, root.blob(), &raw)?;
            root.blob()
        } else {
            let bytes = Tree::new(nodes).encode();
            let id = self.saver.repo().blob_id(&bytes);
            self.save(w, BlobType::Tree, id, &bytes)?;
            id
        };
        self.map.insert(root.blob(), id);
        self.sizes.insert(root.blob(), size);
        Ok(id.tree())
    }
}
