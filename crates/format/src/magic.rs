//! Every magic value and version number of format v1, in one place.

/// First four bytes of every pack file.
pub const PACK_MAGIC: &[u8; 4] = b"CRNP";
pub const PACK_VERSION: u8 = 1;
/// `magic(4) || version(1) || salt(32)`: blobs start at this offset.
pub const PACK_PREFIX_LEN: usize = 4 + 1 + 32;
pub const PACK_HEADER_VERSION: u8 = 1;
pub const INDEX_VERSION: u8 = 1;
pub const TREE_VERSION: u32 = 1;
pub const SNAPSHOT_VERSION: u32 = 1;
pub const CONFIG_VERSION: u32 = 1;
pub const KEYFILE_VERSION: u32 = 1;
pub const LEASE_VERSION: u32 = 1;
pub const PRUNE_DOC_VERSION: u32 = 1;
pub const AUDIT_VERSION: u32 = 1;

pub const BLOB_DATA: u8 = 0;
pub const BLOB_TREE: u8 = 1;

/// First byte of every blob plaintext and of every sealed object plaintext.
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

/// Size of one blob record in pack headers and index files.
pub const BLOB_RECORD_LEN: usize = 1 + 32 + 4 + 4 + 4;
