//! The in-memory index: blob id -> location. About 64 bytes per blob (32-byte key,
//! 20-byte location, hash-table overhead), independent of file sizes.

use std::collections::HashMap;

use cairn_format::index::{IndexFile, IndexedPack};
use cairn_format::pack::BlobEntry;
use cairn_format::{BlobId, BlobType, PackId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub kind: BlobType,
}

#[derive(Default, Debug)]
pub struct Index {
    blobs: HashMap<BlobId, Location>,
    packs: Vec<(PackId, [u8; 32])>,
    pack_pos: HashMap<PackId, u32>,
}

impl Index {
    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            self.add_pack(p.id, p.salt, &p.blobs);
        }
    }

    pub fn add_pack(&mut self, id: PackId, salt: [u8; 32], blobs: &[BlobEntry]) {
        let pos = match self.pack_pos.get(&id) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push((id, salt));
                self.pack_pos.insert(id, p);
                p
            }
        };
        for b in blobs {
            self.blobs.entry(b.id).or_insert(Location {
                pack: pos,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
            });
        }
    }

    pub fn get(&self, id: &BlobId) -> Option<&Location> {
        self.blobs.get(id)
    }
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }
    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_pos.contains_key(id)
    }
    pub fn pack(&self, pos: u32) -> (PackId, [u8; 32]) {
        self.packs[pos as usize]
    }
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &Location)> {
        self.blobs.iter()
    }
    pub fn packs(&self) -> impl Iterator<Item = &(PackId, [u8; 32])> {
        self.packs.iter()
    }
    pub fn indexed_pack(id: PackId, salt: [u8; 32], blobs: Vec<BlobEntry>) -> IndexedPack {
        IndexedPack { id, salt, blobs }
    }
}
