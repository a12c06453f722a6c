//! What prune reads: every pack and, per blob, its one home pack; the blobs reachable from
//! snapshots.

use std::collections::{HashMap, HashSet};

use cairn_format::pack::BlobEntry;
use cairn_format::tree::{NodeKind, Tree};
use cairn_format::{BlobId, IndexId, PackId, TreeId};

use super::PruneDocs;
use crate::{layout, Error, Repository, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Named by an index file that this run read.
    Indexed,
    /// Not indexed and not marked: adopted from its header (left by a killed writer, or
    /// being written by a running one).
    Adopted,
    /// Named by a marker and by no index file.
    Marked,
}

pub(super) struct PackRec {
    pub(super) id: PackId,
    pub(super) salt: [u8; 32],
    pub(super) size: u64,
    pub(super) blobs: Vec<BlobEntry>,
    pub(super) source: Source,
}

/// Every pack prune knows about and, per blob, the one pack that is its home.
#[derive(Default)]
pub(super) struct Catalog {
    pub(super) packs: Vec<PackRec>,
    pub(super) pos: HashMap<PackId, usize>,
    pub(super) home: HashMap<BlobId, (u32, u32)>,
    /// Marked packs not yet read (their headers are read only when needed).
    pub(super) marked_unread: Vec<PackId>,
}

impl Catalog {
    pub(super) fn add(&mut self, rec: PackRec) {
        if self.pos.contains_key(&rec.id) {
            return;
        }
        let p = self.packs.len() as u32;
        for (i, b) in rec.blobs.iter().enumerate() {
            self.home.entry(b.id).or_insert((p, i as u32));
        }
        self.pos.insert(rec.id, p as usize);
        self.packs.push(rec);
    }

    pub(super) fn locate(&self, id: &BlobId) -> Option<(&PackRec, &BlobEntry)> {
        let &(p, i) = self.home.get(id)?;
        let rec = &self.packs[p as usize];
        Some((rec, &rec.blobs[i as usize]))
    }

    /// Reads the headers of the marked packs, so that their blobs have a home when nothing
    /// else holds them.
    pub(super) fn read_marked(&mut self, repo: &Repository, sizes: &HashMap<PackId, u64>, warnings: &mut Vec<String>) {
        for p in std::mem::take(&mut self.marked_unread) {
            match repo.read_pack_header(p) {
                Ok((salt, blobs)) => self.add(PackRec {
                    id: p,
                    salt,
                    size: sizes.get(&p).copied().unwrap_or(0),
                    blobs,
                    source: Source::Marked,
                }),
                // Deleted meanwhile by another prune's sweep of the same marker.
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) => warnings.push(format!("marked pack {}: {e}", p.short())),
            }
        }
    }
}

/// What the repository holds right now: index files, packs, snapshots, referenced blobs.
pub(super) struct State {
    /// Every index file listed (superseded ones included): a consolidation supersedes all.
    pub(super) index_ids: Vec<IndexId>,
    /// When each index file was written (object-lock periods run from it).
    pub(super) index_modified: HashMap<IndexId, Option<i64>>,
    pub(super) sizes: HashMap<PackId, u64>,
    pub(super) modified: HashMap<PackId, Option<i64>>,
    pub(super) catalog: Catalog,
    pub(super) snapshots: usize,
}

/// The blobs reachable from snapshots. Grows only: walking again after new snapshots
/// appeared costs only their new trees.
#[derive(Default)]
pub(super) struct Used {
    pub(super) trees: HashSet<TreeId>,
    pub(super) blobs: HashSet<BlobId>,
}

impl Used {
    pub(super) fn walk(
        &mut self,
        repo: &Repository,
        snaps: &[(cairn_format::SnapshotId, cairn_format::snapshot::Snapshot)],
        cat: &mut Catalog,
        sizes: &HashMap<PackId, u64>,
        warnings: &mut Vec<String>,
    ) -> Result<usize> {
        // Level by level, each level's trees fetched concurrently: on an object store every
        // tree is a request, and one at a time would make prune wait on latency.
        let mut level: Vec<TreeId> = snaps.iter().map(|(_, s)| s.tree).collect();
        let mut missing_data = 0usize;
        while !level.is_empty() {
            let mut wanted = Vec::new();
            for t in std::mem::take(&mut level) {
                if !self.trees.insert(t) {
                    continue;
                }
                self.blobs.insert(t.blob());
                if cat.locate(&t.blob()).is_none() {
                    cat.read_marked(repo, sizes, warnings);
                }
                let Some((rec, e)) = cat.locate(&t.blob()) else {
                    return Err(Error::Damaged {
                        what: "tree",
                        id: t.to_hex(),
                        detail: "a snapshot references it but it is in no pack; prune cannot tell what it references and stops (run 'cairn check')".into(),
                    });
                };
                wanted.push((t.blob(), rec.id, rec.salt, location(e)));
            }
            for chunk in wanted.chunks(16) {
                for ((id, ..), data) in chunk.iter().zip(repo.read_blobs_at(chunk)?) {
                    let tree = Tree::decode(&data).map_err(|err| Error::Damaged {
                        what: "tree",
                        id: id.to_hex(),
                        detail: err.to_string(),
                    })?;
                    for n in &tree.nodes {
                        match n.kind {
                            NodeKind::Dir => level.extend(n.subtree),
                            NodeKind::File => {
                                for b in &n.content {
                                    if self.blobs.insert(*b) && cat.locate(b).is_none() {
                                        missing_data += 1;
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if missing_data > 0 {
            warnings.push(format!("{missing_data} referenced data blobs are in no pack (run 'cairn check')"));
        }
        Ok(snaps.len())
    }
}

pub(super) fn location(e: &BlobEntry) -> crate::Location {
    crate::Location { pack: 0, offset: e.offset, length: e.length, raw_length: e.raw_length, kind: e.kind }
}

pub(super) fn load_state(repo: &Repository, docs: &PruneDocs, warnings: &mut Vec<String>) -> Result<State> {
    let (index_metas, files) = repo.load_index_files_listed()?;
    let index_ids: Vec<IndexId> = index_metas.iter().filter_map(|m| layout::id_of(&m.path).map(IndexId)).collect();
    let index_modified =
        index_metas.iter().filter_map(|m| layout::id_of(&m.path).map(|i| (IndexId(i), m.modified))).collect();
    let packs = repo.block_on(repo.store().list(layout::DATA))?;
    let sizes: HashMap<PackId, u64> =
        packs.iter().filter_map(|m| layout::id_of(&m.path).map(|i| (PackId(i), m.size))).collect();
    let modified: HashMap<PackId, Option<i64>> =
        packs.iter().filter_map(|m| layout::id_of(&m.path).map(|i| (PackId(i), m.modified))).collect();
    let mut cat = Catalog::default();
    for (_, f) in files {
        for p in f.packs {
            let Some(&size) = sizes.get(&p.id) else {
                warnings.push(format!("pack {} is indexed but missing (run 'cairn check')", p.id.short()));
                continue;
            };
            cat.add(PackRec { id: p.id, salt: p.salt, size, blobs: p.blobs, source: Source::Indexed });
        }
    }
    let marked = docs.marked_packs();
    let mut unindexed: Vec<PackId> = sizes.keys().filter(|p| !cat.pos.contains_key(p)).copied().collect();
    unindexed.sort();
    for p in unindexed {
        if marked.contains(&p) {
            cat.marked_unread.push(p);
            continue;
        }
        match repo.read_pack_header(p) {
            Ok((salt, blobs)) => cat.add(PackRec { id: p, salt, size: sizes[&p], blobs, source: Source::Adopted }),
            // Being written is impossible (uploads are atomic); damaged: left for check.
            Err(e) => warnings.push(format!("unindexed pack {} left alone: {e}", p.short())),
        }
    }
    Ok(State { index_ids, index_modified, sizes, modified, catalog: cat, snapshots: 0 })
}
