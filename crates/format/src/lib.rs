//! Codecs of every object in a cairn repository, format v1. `docs/format.md` is the
//! normative text; this crate mirrors its sections: [`id`] (typed ids, hex), [`magic`] (every
//! magic value and version in one registry), [`pack`] (pack header), [`index`] (index files),
//! [`tree`] (directory trees and nodes), [`snapshot`], [`config`], [`keyfile`], and [`lease`] (writer leases and prune's deletion
//! markers).
//!
//! Key decision: binary encodings where volume matters (pack headers, index files: fixed
//! 45-byte records), JSON where humans and other readers benefit and volume is small (trees,
//! snapshots, config, key files). Every encoding carries a version; decoders refuse versions
//! they do not know rather than guessing. Pure: no I/O, no crypto; decoders never panic on
//! hostile input, they return [`Error`].

pub mod audit;
pub mod config;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod lease;
pub mod magic;
pub mod pack;
pub mod snapshot;
pub mod tree;

/// The largest blob (data or tree) the format allows (§8): a reader never allocates more
/// for one blob, whatever a hostile pack header or index says; a writer never stores a
/// larger one (chunks are at most a few MiB; a tree this large is a directory of about
/// 400,000 entries).
pub const MAX_BLOB_LEN: u32 = 128 << 20;

pub use id::{BlobId, Id, IndexId, KeyId, MarkerId, PackId, SnapshotId, TreeId, WriterId};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{what}: truncated or malformed ({detail})")]
    Malformed { what: &'static str, detail: String },
    #[error("{what}: unsupported version {version}")]
    Version { what: &'static str, version: u64 },
    #[error("{what}: {source}")]
    Json { what: &'static str, source: serde_json::Error },
}

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed { what, detail: detail.into() }
    }
}

/// Blob kinds. Data and tree blobs live in separate packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn code(self) -> u8 {
        match self {
            BlobType::Data => magic::BLOB_DATA,
            BlobType::Tree => magic::BLOB_TREE,
        }
    }
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            magic::BLOB_DATA => Some(BlobType::Data),
            magic::BLOB_TREE => Some(BlobType::Tree),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

/// A little-endian cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::malformed(self.what, format!("needs {n} more bytes, has {}", self.buf.len())));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn id(&mut self) -> Result<Id, Error> {
        let b = self.take(32)?;
        let mut a = [0u8; 32];
        a.copy_from_slice(b);
        Ok(Id(a))
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
}
