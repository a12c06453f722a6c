//! The repository config (JSON, then sealed): parameters every writer must agree on.

use serde::{Deserialize, Serialize};

use crate::id::{from_hex, to_hex};
use crate::magic::CONFIG_VERSION;
use crate::Error;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChunkerConfig {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    pub seed: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub version: u32,
    /// Random 32 bytes, hex: names the repository (caches, copies).
    pub id: String,
    pub chunker: ChunkerConfig,
    /// Keyed-BLAKE3 key naming blobs, hex.
    pub id_key: String,
    /// zstd level for blobs.
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Days every object stays undeletable after it is written (S3 Object Lock with a
    /// default retention on the bucket); cairn itself never deletes a younger object.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub object_lock_days: u32,
    /// `COMPLIANCE` or `GOVERNANCE` when `object_lock_days` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object_lock_mode: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let c: Config = serde_json::from_slice(buf).map_err(|source| Error::Json { what: "config", source })?;
        if c.version != CONFIG_VERSION {
            return Err(Error::Version { what: "config", version: c.version.into() });
        }
        // Pack offsets are u32: packs stay far below 4 GiB.
        if !(64 * 1024..=1 << 30).contains(&c.pack_size) {
            return Err(Error::malformed("config", format!("pack_size {} out of range", c.pack_size)));
        }
        if !(0..=22).contains(&c.compression_level) {
            return Err(Error::malformed("config", format!("compression_level {}", c.compression_level)));
        }
        if c.id_key_bytes().is_none() {
            return Err(Error::malformed("config", "id_key"));
        }
        Ok(c)
    }
    pub fn id_key_bytes(&self) -> Option<[u8; 32]> {
        from_hex(&self.id_key)?.try_into().ok()
    }
    pub fn hex(b: &[u8]) -> String {
        to_hex(b)
    }
}
