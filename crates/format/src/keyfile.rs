//! Key files (JSON, not sealed): the master key wrapped under a password.

use serde::{Deserialize, Serialize};

use crate::magic::KEYFILE_VERSION;
use crate::Error;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub version: u32,
    pub created: String,
    pub hostname: String,
    pub username: String,
    /// Always `argon2id` in v1.
    pub kdf: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hex, 16 bytes.
    pub salt: String,
    /// Hex: `nonce(12) || AES-256-GCM(kek, nonce, master_key(32)) || tag(16)`.
    pub wrapped: String,
}

impl KeyFile {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let k: KeyFile = serde_json::from_slice(buf).map_err(|source| Error::Json { what: "key file", source })?;
        if k.version != KEYFILE_VERSION {
            return Err(Error::Version { what: "key file", version: k.version.into() });
        }
        if k.kdf != "argon2id" {
            return Err(Error::malformed("key file", format!("unknown kdf {}", k.kdf)));
        }
        Ok(k)
    }
}
