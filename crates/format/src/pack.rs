//! Pack files: `magic "CRNP" || version(1) || salt(32) || blob ciphertexts ||
//! header ciphertext || header_len(u32 LE)`. The header lists every blob of the pack, so
//! the index can always be rebuilt from the packs alone.

use crate::magic::{BLOB_RECORD_LEN, PACK_HEADER_VERSION};
use crate::{BlobId, BlobType, Error, Reader};

/// One blob of a pack: where its ciphertext lies and how long its plaintext is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub kind: BlobType,
    pub id: BlobId,
    /// Offset of the ciphertext from the start of the pack file.
    pub offset: u32,
    /// Length of the ciphertext including the tag.
    pub length: u32,
    /// Length of the data once decrypted and decompressed.
    pub raw_length: u32,
}

impl BlobEntry {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind.code());
        out.extend_from_slice(&self.id.0 .0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let code = r.u8()?;
        let kind =
            BlobType::from_code(code).ok_or_else(|| Error::malformed("blob record", format!("blob type {code}")))?;
        let id = BlobId(r.id()?);
        let offset = r.u32()?;
        let length = r.u32()?;
        let raw_length = r.u32()?;
        Ok(BlobEntry { kind, id, offset, length, raw_length })
    }
}

/// `version(1) || count(u32) || count * record(45)`.
pub fn encode_header(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + entries.len() * BLOB_RECORD_LEN);
    out.push(PACK_HEADER_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode(&mut out);
    }
    out
}

pub fn decode_header(buf: &[u8]) -> Result<Vec<BlobEntry>, Error> {
    let mut r = Reader::new(buf, "pack header");
    let v = r.u8()?;
    if v != PACK_HEADER_VERSION {
        return Err(Error::Version { what: "pack header", version: v.into() });
    }
    let n = r.u32()? as usize;
    if r.remaining() != n * BLOB_RECORD_LEN {
        return Err(Error::malformed("pack header", format!("{n} records but {} bytes", r.remaining())));
    }
    (0..n).map(|_| BlobEntry::decode(&mut r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Id;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trip(recs in proptest::collection::vec((any::<bool>(), any::<[u8; 32]>(), any::<u32>(), any::<u32>(), any::<u32>()), 0..50)) {
            let entries: Vec<BlobEntry> = recs.into_iter().map(|(t, id, o, l, r)| BlobEntry {
                kind: if t { BlobType::Tree } else { BlobType::Data }, id: BlobId(Id(id)), offset: o, length: l, raw_length: r,
            }).collect();
            prop_assert_eq!(decode_header(&encode_header(&entries)).unwrap(), entries);
        }

        #[test]
        fn header_decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_header(&buf);
        }
    }
}
