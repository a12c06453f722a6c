//! Index files: which blobs each pack holds. Plaintext (then sealed):
//! `version(1) || n_supersedes(u32) || n_supersedes * index_id(32) ||
//!  n_packs(u32) || n_packs * (pack_id(32) || salt(32) || n_blobs(u32) || n_blobs * record(45))`.
//! The salt is the pack's key salt (also in the pack's first bytes), so one ranged read
//! fetches and decrypts a blob.
//! `supersedes` names index files whose content this one includes (written by prune, which
//! may then delete them).

use crate::magic::INDEX_VERSION;
use crate::pack::BlobEntry;
use crate::{Error, IndexId, PackId, Reader};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<IndexedPack>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    pub salt: [u8; 32],
    pub blobs: Vec<BlobEntry>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![INDEX_VERSION];
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for s in &self.supersedes {
            out.extend_from_slice(&s.0 .0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0 .0);
            out.extend_from_slice(&p.salt);
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                b.encode(&mut out);
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf, "index file");
        let v = r.u8()?;
        if v != INDEX_VERSION {
            return Err(Error::Version { what: "index file", version: v.into() });
        }
        let ns = r.u32()? as usize;
        if ns > r.remaining() / 32 {
            return Err(Error::malformed("index file", "supersedes count"));
        }
        let supersedes = (0..ns).map(|_| r.id().map(IndexId)).collect::<Result<_, _>>()?;
        let np = r.u32()? as usize;
        if np > r.remaining() / 68 {
            return Err(Error::malformed("index file", "pack count"));
        }
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let id = PackId(r.id()?);
            let salt = r.id()?.0;
            let nb = r.u32()? as usize;
            if nb > r.remaining() / crate::magic::BLOB_RECORD_LEN {
                return Err(Error::malformed("index file", "blob count"));
            }
            let blobs = (0..nb).map(|_| BlobEntry::decode(&mut r)).collect::<Result<_, _>>()?;
            packs.push(IndexedPack { id, salt, blobs });
        }
        if r.remaining() != 0 {
            return Err(Error::malformed("index file", "trailing bytes"));
        }
        Ok(IndexFile { supersedes, packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobId, BlobType, Id};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn index_round_trip(sup in proptest::collection::vec(any::<[u8; 32]>(), 0..3),
                            packs in proptest::collection::vec((any::<[u8; 32]>(), proptest::collection::vec((any::<[u8; 32]>(), any::<u32>()), 0..5)), 0..5)) {
            let f = IndexFile {
                supersedes: sup.into_iter().map(|s| IndexId(Id(s))).collect(),
                packs: packs.into_iter().map(|(p, bs)| IndexedPack { id: PackId(Id(p)), salt: p, blobs: bs.into_iter().map(|(b, o)| BlobEntry {
                    kind: BlobType::Data, id: BlobId(Id(b)), offset: o, length: o / 2, raw_length: o / 3 }).collect() }).collect(),
            };
            prop_assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        }

        #[test]
        fn index_decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IndexFile::decode(&buf);
        }
    }
}
