//! The in-memory index: blob id -> location, independent of file sizes.
//!
//! Memory per blob is what bounds a backup of many blobs (10 million blobs in one
//! repository is a plain file server with small chunks), so the bulk of the index is a
//! vector of 52-byte entries (32-byte id, 20-byte location) sorted by id, with no
//! hash-table slack: a hash map at its load factor costs 60 to 120 bytes per blob and,
//! while it doubles, both tables at once. A lookup finds the entries whose ids share the
//! first bits through a table of bucket starts (about one `u32` per four blobs), then
//! searches that bucket. Blobs added one pack at a time (a running backup) go to a small
//! hash map, merged into the vector once it holds an eighth as many, so adding N blobs
//! moves about 8·N entries in all and the steady cost stays near 60 bytes per blob
//! (measured in `bench/SCALE.md`).

use std::collections::HashMap;

use cairn_format::index::{IndexFile, IndexedPack};
use cairn_format::pack::BlobEntry;
use cairn_format::{BlobId, BlobType, IndexId, PackId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub kind: BlobType,
}

/// Below this many recent blobs no merge happens: small indexes stay a hash map.
const MIN_RECENT: usize = 1 << 16;

#[derive(Default, Debug)]
pub struct Index {
    /// Sorted by id, each id once.
    sorted: Vec<(BlobId, Location)>,
    /// Bucket `b` (the first `bits` bits of an id) is `sorted[starts[b]..starts[b + 1]]`.
    starts: Vec<u32>,
    bits: u32,
    /// Added since the last merge; never an id that `sorted` holds.
    recent: HashMap<BlobId, Location>,
    packs: Vec<(PackId, [u8; 32])>,
    pack_pos: HashMap<PackId, u32>,
}

impl Index {
    /// The index of these files (a repository's unsuperseded index files), built in one
    /// sort rather than blob by blob. A blob listed more than once keeps one of its
    /// locations (every listed copy is a valid one).
    pub fn from_files<'a>(files: impl IntoIterator<Item = &'a IndexFile> + Clone) -> Index {
        let total: usize = files.clone().into_iter().flat_map(|f| &f.packs).map(|p| p.blobs.len()).sum();
        let mut index = Index::default();
        index.sorted.reserve_exact(total);
        for f in files {
            for p in &f.packs {
                let pos = index.pack_position(p.id, p.salt);
                index.sorted.extend(p.blobs.iter().map(|b| (b.id, location(pos, b))));
            }
        }
        index.sorted.sort_unstable_by_key(|a| a.0);
        index.sorted.dedup_by(|a, b| a.0 == b.0);
        index.sorted.shrink_to_fit();
        index.rebuild_starts();
        index
    }

    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            self.add_pack(p.id, p.salt, &p.blobs);
        }
    }

    pub fn add_pack(&mut self, id: PackId, salt: [u8; 32], blobs: &[BlobEntry]) {
        let pos = self.pack_position(id, salt);
        for b in blobs {
            if self.find_sorted(&b.id).is_none() {
                self.recent.entry(b.id).or_insert(location(pos, b));
            }
        }
        if self.recent.len() >= MIN_RECENT.max(self.sorted.len() / 8) {
            self.merge();
        }
    }

    fn pack_position(&mut self, id: PackId, salt: [u8; 32]) -> u32 {
        match self.pack_pos.get(&id) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push((id, salt));
                self.pack_pos.insert(id, p);
                p
            }
        }
    }

    /// Moves the recent blobs into the sorted vector: sorted among themselves, appended,
    /// then merged from the back in place (the vector grows by exactly their number, which
    /// for a large vector is a remap of its pages, not a copy).
    fn merge(&mut self) {
        let mut new: Vec<(BlobId, Location)> = self.recent.drain().collect();
        new.sort_unstable_by_key(|a| a.0);
        let n = self.sorted.len();
        self.sorted.reserve_exact(new.len());
        self.sorted.extend_from_slice(&new);
        let (mut i, mut j, mut k) = (n, new.len(), self.sorted.len());
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1].0 > new[j - 1].0 {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = new[j - 1];
                j -= 1;
            }
        }
        self.rebuild_starts();
    }

    /// About four blobs per bucket: the table costs a byte per blob and a lookup reads
    /// one or two cache lines of entries.
    fn rebuild_starts(&mut self) {
        let want = self.sorted.len() / 4;
        self.bits = if want < 2 { 0 } else { (usize::BITS - 1 - want.leading_zeros()).min(28) };
        let buckets = 1usize << self.bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut at = 0;
        for b in 0..buckets {
            starts.push(at as u32);
            while at < self.sorted.len() && bucket(&self.sorted[at].0, self.bits) == b {
                at += 1;
            }
        }
        starts.push(self.sorted.len() as u32);
        self.starts = starts;
    }

    fn find_sorted(&self, id: &BlobId) -> Option<&Location> {
        let b = bucket(id, self.bits);
        let (from, to) = (*self.starts.get(b)? as usize, *self.starts.get(b + 1)? as usize);
        // A binary search, not a scan: a hostile index could crowd one bucket. Ids compare
        // by their first 8 bytes as a number first (the same order as bytewise), which
        // settles almost every comparison without a call to memcmp.
        let slice = self.sorted.get(from..to)?;
        let key = prefix(id);
        slice.binary_search_by(|e| prefix(&e.0).cmp(&key).then_with(|| e.0.cmp(id))).ok().map(|i| &slice[i].1)
    }

    pub fn get(&self, id: &BlobId) -> Option<&Location> {
        self.find_sorted(id).or_else(|| self.recent.get(id))
    }
    pub fn contains(&self, id: &BlobId) -> bool {
        self.get(id).is_some()
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
        self.sorted.len() + self.recent.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &Location)> {
        self.sorted.iter().map(|(id, l)| (id, l)).chain(self.recent.iter())
    }
    pub fn packs(&self) -> impl Iterator<Item = &(PackId, [u8; 32])> {
        self.packs.iter()
    }
    pub fn indexed_pack(id: PackId, salt: [u8; 32], blobs: Vec<BlobEntry>) -> IndexedPack {
        IndexedPack { id, salt, blobs }
    }
}

/// Builds an [`Index`] from index files read one after another, holding each file only
/// while it is added: the entries go straight into the index's vector, so loading costs
/// the index itself plus one file, not every decoded file at once (at 10 million blobs
/// that was half a gigabyte more at the start of every backup). Which files are
/// superseded is known only once all are read: their entries are dropped then.
#[derive(Default)]
pub struct IndexBuilder {
    /// Entries whose `pack` is a position in `packs` (this builder's, not the index's).
    entries: Vec<(BlobId, Location)>,
    packs: Vec<(PackId, [u8; 32])>,
    /// Each file: its id, what it supersedes, and its packs' positions in `packs`.
    files: Vec<(IndexId, Vec<IndexId>, std::ops::Range<usize>)>,
}

impl IndexBuilder {
    pub fn add(&mut self, id: IndexId, f: IndexFile) {
        let first = self.packs.len();
        for p in f.packs {
            let pos = self.packs.len() as u32;
            self.packs.push((p.id, p.salt));
            self.entries.extend(p.blobs.iter().map(|b| (b.id, location(pos, b))));
        }
        self.files.push((id, f.supersedes, first..self.packs.len()));
    }

    /// The index of every file no other file supersedes.
    pub fn finish(mut self) -> Index {
        let superseded: std::collections::HashSet<IndexId> =
            self.files.iter().flat_map(|(_, s, _)| s.iter().copied()).collect();
        let mut index = Index::default();
        let mut map = vec![u32::MAX; self.packs.len()];
        for (id, _, packs) in &self.files {
            if !superseded.contains(id) {
                for t in packs.clone() {
                    let (pack, salt) = self.packs[t];
                    map[t] = index.pack_position(pack, salt);
                }
            }
        }
        self.entries.retain_mut(|(_, l)| match map.get(l.pack as usize) {
            Some(&m) if m != u32::MAX => {
                l.pack = m;
                true
            }
            _ => false,
        });
        self.entries.sort_unstable_by_key(|e| e.0);
        self.entries.dedup_by(|a, b| a.0 == b.0);
        self.entries.shrink_to_fit();
        index.sorted = self.entries;
        index.rebuild_starts();
        index
    }
}

fn location(pack: u32, b: &BlobEntry) -> Location {
    Location { pack, offset: b.offset, length: b.length, raw_length: b.raw_length, kind: b.kind }
}

fn prefix(id: &BlobId) -> u64 {
    let b = &id.0 .0;
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The first `bits` bits of the id (blob ids are keyed hashes: evenly spread).
fn bucket(id: &BlobId, bits: u32) -> usize {
    let id = &id.0 .0;
    let first = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    if bits == 0 {
        0
    } else {
        (first >> (32 - bits)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_format::Id;

    fn id(n: u64) -> BlobId {
        // Spread like keyed hashes, deterministic (splitmix64 per 8 bytes).
        let mut out = [0u8; 32];
        for (i, c) in out.chunks_mut(8).enumerate() {
            let mut z = n.wrapping_mul(4).wrapping_add(i as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            c.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        BlobId(Id(out))
    }

    fn entry(n: u64) -> BlobEntry {
        BlobEntry { kind: BlobType::Data, id: id(n), offset: n as u32, length: 1, raw_length: n as u32 * 3 }
    }

    #[test]
    fn lookups_agree_with_a_hash_map_across_merges() {
        let mut index = Index::default();
        let mut model: HashMap<BlobId, u32> = HashMap::new();
        // Packs of 1,000 blobs, each blob listed twice in all (the second listing must not
        // move it), enough to merge several times past MIN_RECENT.
        for p in 0..400u64 {
            let blobs: Vec<BlobEntry> = (p * 1000..p * 1000 + 1000).map(|n| entry(n / 2)).collect();
            index.add_pack(PackId(Id([p as u8; 32])), [0; 32], &blobs);
            for b in &blobs {
                model.entry(b.id).or_insert(b.offset);
            }
        }
        assert!(!index.sorted.is_empty() && index.sorted.len() > index.recent.len());
        assert_eq!(index.blob_count(), model.len());
        assert!(index.sorted.windows(2).all(|w| w[0].0 < w[1].0));
        for (k, off) in &model {
            let l = index.get(k).expect("indexed blob found");
            assert_eq!(l.offset, *off);
            assert_eq!(l.raw_length, off * 3);
        }
        for n in 200_000..201_000 {
            assert!(!index.contains(&id(n)), "{n} was never added");
        }
        assert_eq!(index.iter().count(), model.len());
    }

    #[test]
    fn from_files_keeps_each_blob_once_and_finds_them_all() {
        let files: Vec<IndexFile> = (0..3u64)
            .map(|f| IndexFile {
                supersedes: Vec::new(),
                packs: vec![IndexedPack {
                    id: PackId(Id([f as u8; 32])),
                    salt: [f as u8; 32],
                    blobs: (f * 500..f * 500 + 1000).map(entry).collect(),
                }],
            })
            .collect();
        let mut index = Index::from_files(&files);
        assert_eq!(index.blob_count(), 2000);
        assert_eq!(index.pack_count(), 3);
        for n in 0..2000 {
            assert_eq!(index.get(&id(n)).map(|l| l.offset), Some(n as u32), "{n}");
        }
        // Blobs added afterwards (a backup) are found, and one already indexed is not
        // added again.
        index.add_pack(PackId(Id([9; 32])), [9; 32], &[entry(5), entry(2000)]);
        assert_eq!(index.blob_count(), 2001);
        assert_eq!(index.get(&id(5)).map(|l| l.pack), Some(0));
        assert_eq!(index.get(&id(2000)).map(|l| l.pack), Some(3));
        assert!(Index::from_files(&[]).get(&id(1)).is_none());
    }

    #[test]
    fn the_builder_leaves_out_superseded_files_and_their_packs() {
        let file = |n: u8, blobs: std::ops::Range<u64>, supersedes: Vec<IndexId>| IndexFile {
            supersedes,
            packs: vec![IndexedPack { id: PackId(Id([n; 32])), salt: [n; 32], blobs: blobs.map(entry).collect() }],
        };
        let ids: Vec<IndexId> = (1..=3u8).map(|n| IndexId(Id([n; 32]))).collect();
        let mut b = IndexBuilder::default();
        // File 3 (a prune's consolidated index) replaces file 1: pack 1 is no longer
        // indexed, and blob 50 is found in pack 3 only.
        b.add(ids[0], file(1, 0..100, Vec::new()));
        b.add(ids[1], file(2, 100..200, Vec::new()));
        b.add(ids[2], file(3, 50..60, vec![ids[0]]));
        let index = b.finish();
        assert_eq!(index.pack_count(), 2);
        assert!(!index.has_pack(&PackId(Id([1; 32]))));
        assert_eq!(index.blob_count(), 110);
        let pack_of = |n| index.get(&id(n)).map(|l| index.pack(l.pack).0);
        assert_eq!(pack_of(55), Some(PackId(Id([3; 32]))));
        assert_eq!(pack_of(150), Some(PackId(Id([2; 32]))));
        assert_eq!(pack_of(10), None);
    }

    #[test]
    fn a_crowded_bucket_is_still_searched_correctly() {
        // Ids that share their first 4 bytes all land in one bucket.
        let mut blobs = Vec::new();
        for n in 0..5000u64 {
            let mut e = entry(n);
            e.id.0 .0[..4].copy_from_slice(&[7, 7, 7, 7]);
            blobs.push(e);
        }
        let file = IndexFile {
            supersedes: Vec::new(),
            packs: vec![Index::indexed_pack(PackId(Id([1; 32])), [1; 32], blobs.clone())],
        };
        let index = Index::from_files([&file]);
        for b in &blobs {
            assert_eq!(index.get(&b.id).map(|l| l.offset), Some(b.offset));
        }
        assert!(!index.contains(&id(1)));
    }
}
