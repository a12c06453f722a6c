//! Reading many trees: [`TreeReader`] reads each tree pack whole, once, and serves every
//! tree in it from memory.
//!
//! An unchanged re-backup loads one parent tree per directory and a restore plan loads
//! every tree of the snapshot, and a backup writes its trees together: thousands of trees
//! come from a few packs. Reading each pack once replaces thousands of small reads (random
//! reads on a cold disk, requests to an object store) with a few sequential ones. For one
//! tree (`ls` of a directory) [`Repository::load_tree`] reads only that tree.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use cairn_format::tree::Tree;
use cairn_format::{PackId, TreeId};

use crate::{Error, Index, Location, Repository, Result};

/// Bytes of tree packs a [`TreeReader`] keeps read whole.
const TREE_PACKS_BYTES: usize = 64 << 20;
/// Packs larger than this (a repository made with a large `--pack-size`) are not read
/// whole for one tree: each tree is read on its own.
const TREE_PACK_WHOLE_MAX: u32 = 32 << 20;

/// A tree pack's bytes once read; its lock is held while it is being read, so threads
/// wanting the same pack wait for the one read instead of making their own.
type PackSlot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

/// Tree packs read whole, newest last, within [`TREE_PACKS_BYTES`].
#[derive(Default)]
struct TreePacks {
    slots: HashMap<PackId, PackSlot>,
    loaded: VecDeque<(PackId, usize)>,
    bytes: usize,
}

pub struct TreeReader<'r> {
    repo: &'r Repository,
    packs: Mutex<TreePacks>,
}

impl<'r> TreeReader<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        TreeReader { repo, packs: Mutex::new(TreePacks::default()) }
    }

    /// A tree found through `index`.
    pub fn load(&self, index: &Index, id: TreeId) -> Result<Tree> {
        let loc = *index.get(&id.blob()).ok_or(Error::BlobNotIndexed(id.blob()))?;
        let (pack, salt) = index.pack(loc.pack);
        self.load_at(id, &loc, pack, &salt)
    }

    /// A tree at `loc` in `pack` (sealed with `salt`).
    pub fn load_at(&self, id: TreeId, loc: &Location, pack: PackId, salt: &[u8; 32]) -> Result<Tree> {
        let data = if self.repo.config().pack_size <= TREE_PACK_WHOLE_MAX {
            let whole = self.pack(pack)?;
            let range = loc.offset as usize..loc.offset as usize + loc.length as usize;
            let ct = whole.get(range).ok_or_else(|| Error::BadPack {
                pack,
                detail: format!("{} bytes, shorter than the tree {} it should hold", whole.len(), id.to_hex()),
            })?;
            self.repo.open_blob(&id.blob(), salt, loc.offset, loc.raw_length, ct.to_vec())?
        } else {
            self.repo.read_blob_at(&id.blob(), pack, salt, loc)?
        };
        Tree::decode(&data).map_err(|e| Error::Damaged { what: "tree", id: id.to_hex(), detail: e.to_string() })
    }

    /// A tree pack's bytes, read whole once.
    fn pack(&self, pack: PackId) -> Result<Arc<Vec<u8>>> {
        let slot = {
            let mut c = self.packs.lock().unwrap_or_else(|p| p.into_inner());
            c.slots.entry(pack).or_default().clone()
        };
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = &*s {
            return Ok(b.clone());
        }
        let b = Arc::new(self.repo.read_pack(pack)?);
        *s = Some(b.clone());
        drop(s);
        let mut c = self.packs.lock().unwrap_or_else(|p| p.into_inner());
        c.loaded.push_back((pack, b.len()));
        c.bytes += b.len();
        while c.bytes > TREE_PACKS_BYTES && c.loaded.len() > 1 {
            if let Some((old, len)) = c.loaded.pop_front() {
                c.slots.remove(&old);
                c.bytes -= len;
            }
        }
        Ok(b)
    }
}
