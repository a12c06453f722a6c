//! Where each object lives in the store.

use cairn_format::{IndexId, KeyId, MarkerId, PackId, SnapshotId, WriterId};

pub const CONFIG: &str = "config";
pub const KEYS: &str = "keys";
pub const SNAPSHOTS: &str = "snapshots";
pub const INDEX: &str = "index";
pub const DATA: &str = "data";
/// Writer leases (overwritten while their writer runs; see `lease.rs`).
pub const WRITERS: &str = "writers";
/// Prune's deletion markers and their arming records.
pub const PRUNE: &str = "prune";

pub fn key(id: &KeyId) -> String {
    format!("{KEYS}/{}", id.to_hex())
}
pub fn snapshot(id: &SnapshotId) -> String {
    format!("{SNAPSHOTS}/{}", id.to_hex())
}
pub fn index(id: &IndexId) -> String {
    format!("{INDEX}/{}", id.to_hex())
}
pub fn writer(id: &WriterId) -> String {
    format!("{WRITERS}/{}", id.to_hex())
}
pub fn prune_doc(id: &MarkerId) -> String {
    format!("{PRUNE}/{}", id.to_hex())
}
/// Packs are spread over 256 directories by their first id byte.
pub fn pack(id: &PackId) -> String {
    let h = id.to_hex();
    format!("{DATA}/{}/{h}", &h[..2])
}

/// The id named by the last component of a listed key, if it is one.
pub fn id_of(path: &str) -> Option<cairn_format::Id> {
    cairn_format::Id::from_hex(path.rsplit('/').next()?)
}
