//! Builds one pack: `magic || version || salt || blobs || sealed header || header_len`.

use cairn_crypto::{offset_nonce, MasterKey, PackKey, HEADER_NONCE};
use cairn_format::magic::{PACK_MAGIC, PACK_PREFIX_LEN, PACK_VERSION};
use cairn_format::pack::{encode_header, BlobEntry};
use cairn_format::{BlobId, BlobType, Id, PackId};

use crate::Result;

pub struct Packer {
    kind: BlobType,
    salt: [u8; 32],
    key: PackKey,
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

pub struct FinishedPack {
    pub id: PackId,
    pub salt: [u8; 32],
    pub data: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl Packer {
    pub fn new(master: &MasterKey, kind: BlobType, capacity: usize) -> Result<Self> {
        let salt: [u8; 32] = cairn_crypto::random_array()?;
        // Room for the target size plus a header of a few thousand records.
        let mut buf = Vec::with_capacity(capacity + 64 * 1024);
        buf.extend_from_slice(PACK_MAGIC);
        buf.push(PACK_VERSION);
        buf.extend_from_slice(&salt);
        debug_assert_eq!(buf.len(), PACK_PREFIX_LEN);
        Ok(Packer { kind, salt, key: master.object_key(&salt), buf, entries: Vec::new() })
    }

    pub fn kind(&self) -> BlobType {
        self.kind
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encrypts `plain` (an encoded blob plaintext) at the current offset, whose value is
    /// the nonce: unique within this pack's key.
    pub fn add(&mut self, id: BlobId, plain: Vec<u8>, raw_length: u32) -> Result<()> {
        self.add_with(id, raw_length, |buf| buf.extend_from_slice(&plain))
    }

    /// Like [`Packer::add`], but `encode` appends the blob plaintext straight to the pack
    /// buffer, where it is then encrypted in place: no intermediate copy of the blob.
    pub fn add_with(&mut self, id: BlobId, raw_length: u32, encode: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let start = self.buf.len();
        encode(&mut self.buf);
        let tag = match self.key.seal_region(offset_nonce(start as u64), &mut self.buf[start..]) {
            Ok(t) => t,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e.into());
            }
        };
        self.buf.extend_from_slice(&tag);
        self.entries.push(BlobEntry {
            kind: self.kind,
            id,
            offset: start as u32,
            length: (self.buf.len() - start) as u32,
            raw_length,
        });
        Ok(())
    }

    pub fn finish(mut self) -> Result<FinishedPack> {
        let mut header = encode_header(&self.entries);
        self.key.seal(HEADER_NONCE, &mut header)?;
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        let id = PackId(Id(cairn_crypto::content_hash(&self.buf)));
        Ok(FinishedPack { id, salt: self.salt, data: self.buf, entries: self.entries })
    }
}

/// Parses a whole pack or its tail: returns the salt (if `data` starts at offset 0) and
/// the decrypted header entries.
pub fn read_header(master: &MasterKey, pack: PackId, salt: &[u8; 32], tail: &[u8]) -> Result<Vec<BlobEntry>> {
    let bad = |d: &str| crate::Error::BadPack { pack, detail: d.to_string() };
    if tail.len() < 4 {
        return Err(bad("shorter than its trailer"));
    }
    let n = u32::from_le_bytes([tail[tail.len() - 4], tail[tail.len() - 3], tail[tail.len() - 2], tail[tail.len() - 1]])
        as usize;
    if n + 4 > tail.len() {
        return Err(bad("header length beyond the pack"));
    }
    let mut h = tail[tail.len() - 4 - n..tail.len() - 4].to_vec();
    let len =
        master.object_key(salt).open_in_place(HEADER_NONCE, &mut h).map_err(|_| bad("header does not decrypt"))?;
    h.truncate(len);
    Ok(cairn_format::pack::decode_header(&h)?)
}

/// Checks the fixed prefix of a pack and returns its salt.
pub fn parse_prefix(pack: PackId, data: &[u8]) -> Result<[u8; 32]> {
    if data.len() < PACK_PREFIX_LEN || &data[..4] != PACK_MAGIC || data[4] != PACK_VERSION {
        return Err(crate::Error::BadPack { pack, detail: "bad magic or version".into() });
    }
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&data[5..PACK_PREFIX_LEN]);
    Ok(salt)
}
