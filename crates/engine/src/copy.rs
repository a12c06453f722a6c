//! Copying snapshots between repositories: only the blobs the destination lacks travel,
//! decrypted from the source and sealed again under the destination's keys.
//!
//! Blob ids are keyed (a MAC under each repository's id key), so the same data has other
//! ids in a repository with another key. When both repositories share the id key (one was
//! made with `init --copy-chunker-params-from` the other), ids, trees and chunk boundaries
//! are identical: a blob the destination has is neither read nor sent, and snapshots of
//! the same files taken into either repository deduplicate. Otherwise every data blob is
//! read once to compute its destination id and every tree is rewritten with the new ids;
//! chunk boundaries stay the source's.
//!
//! Interrupted copies resume: what was uploaded and indexed is known to the destination
//! on the next run, and a snapshot is written only after everything it references.

use std::collections::HashMap;

use cairn_format::tree::{NodeKind, Tree};
use cairn_format::{BlobId, BlobType, TreeId};
use cairn_repo::{BlobSaver, Index, Repository, WorkerSaver};

use crate::{Error, Result};

#[derive(Debug, Default, Clone, Copy)]
pub struct CopyStats {
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    pub blobs_skipped: u64,
}

pub struct Copier<'a, 's, 'r> {
    src: &'a Repository,
    src_index: &'a Index,
    saver: &'s BlobSaver<'r>,
    same_ids: bool,
    /// Source blob id -> destination blob id (for trees: the rewritten tree).
    map: HashMap<BlobId, BlobId>,
    pub stats: CopyStats,
}

impl<'a, 's, 'r> Copier<'a, 's, 'r> {
    pub fn new(src: &'a Repository, src_index: &'a Index, saver: &'s BlobSaver<'r>) -> Self {
        let same_ids = src.id_key().as_bytes() == saver.repo().id_key().as_bytes();
        Copier { src, src_index, saver, same_ids, map: HashMap::new(), stats: CopyStats::default() }
    }

    fn blob(&mut self, w: &mut WorkerSaver<'_, '_>, kind: BlobType, id: BlobId) -> Result<BlobId> {
        if let Some(n) = self.map.get(&id) {
            return Ok(*n);
        }
        if self.same_ids && self.saver.is_known(&id) {
            self.stats.blobs_skipped += 1;
            self.map.insert(id, id);
            return Ok(id);
        }
        let data = self.src.read_blob(self.src_index, &id)?;
        let new = self.saver.repo().blob_id(&data);
        if w.save(kind, new, &data)? {
            self.stats.blobs_copied += 1;
            self.stats.bytes_copied += data.len() as u64;
        } else {
            self.stats.blobs_skipped += 1;
        }
        self.map.insert(id, new);
        Ok(new)
    }

    /// Copies the tree `root` and everything below it; returns its id in the destination.
    pub fn tree(&mut self, w: &mut WorkerSaver<'_, '_>, root: TreeId, depth: usize) -> Result<TreeId> {
        if depth > cairn_repo::check::MAX_DEPTH {
            return Err(Error::Invalid(format!("trees nested deeper than {}", cairn_repo::check::MAX_DEPTH)));
        }
        if let Some(n) = self.map.get(&root.blob()) {
            return Ok(n.tree());
        }
        if self.same_ids && self.saver.is_known(&root.blob()) {
            // The destination has this tree, hence (write ordering) everything below it.
            self.stats.blobs_skipped += 1;
            self.map.insert(root.blob(), root.blob());
            return Ok(root);
        }
        let t = self.src.load_tree(self.src_index, root)?;
        let mut nodes = Vec::with_capacity(t.nodes.len());
        for mut n in t.nodes {
            match n.kind {
                NodeKind::Dir => {
                    if let Some(st) = n.subtree {
                        n.subtree = Some(self.tree(w, st, depth + 1)?);
                    }
                }
                NodeKind::File => {
                    let mut content = Vec::with_capacity(n.content.len());
                    for b in &n.content {
                        content.push(self.blob(w, BlobType::Data, *b)?);
                    }
                    n.content = content;
                }
                _ => {}
            }
            nodes.push(n);
        }
        let bytes = Tree::new(nodes).encode();
        let id = self.saver.repo().blob_id(&bytes);
        if w.save(BlobType::Tree, id, &bytes)? {
            self.stats.blobs_copied += 1;
            self.stats.bytes_copied += bytes.len() as u64;
        }
        self.map.insert(root.blob(), id);
        Ok(id.tree())
    }
}
