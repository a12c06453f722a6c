//! Key files: the master key wrapped under a password through Argon2id. A repository may
//! have several; any one of them opens it.

use cairn_crypto::{derive_kek, unwrap_master, wrap_master, KdfParams, MasterKey};
use cairn_format::id::{from_hex, to_hex};
use cairn_format::keyfile::KeyFile;
use cairn_format::magic::KEYFILE_VERSION;
use cairn_format::{Id, KeyId};

use crate::Result;

/// Who created a key, recorded in clear in the key file.
#[derive(Debug, Clone, Default)]
pub struct KeyMeta {
    pub hostname: String,
    pub username: String,
    pub created: String,
}

pub(crate) fn make_key_file(
    master: &MasterKey,
    password: &[u8],
    meta: &KeyMeta,
    kdf: KdfParams,
) -> Result<(KeyId, Vec<u8>)> {
    let salt: [u8; 16] = cairn_crypto::random_array()?;
    let kek = derive_kek(password, &salt, kdf)?;
    let wrapped = wrap_master(&kek, master)?;
    let kf = KeyFile {
        version: KEYFILE_VERSION,
        created: meta.created.clone(),
        hostname: meta.hostname.clone(),
        username: meta.username.clone(),
        kdf: "argon2id".into(),
        memory_kib: kdf.memory_kib,
        iterations: kdf.iterations,
        parallelism: kdf.parallelism,
        salt: to_hex(&salt),
        wrapped: to_hex(&wrapped),
    };
    let bytes = kf.encode();
    Ok((KeyId(Id(cairn_crypto::content_hash(&bytes))), bytes))
}

/// The most a key file may ask of the KDF (format.md §4.3): 256 MiB, 16 passes, 16
/// lanes, and memory x passes at most 8x the default's, so a planted key file costs a
/// reader at most about half a second and 256 MiB, never gigabytes or minutes.
pub(crate) const MAX_KDF_MEMORY_KIB: u32 = 256 * 1024;
pub(crate) const MAX_KDF_ITERATIONS: u32 = 16;
pub(crate) const MAX_KDF_PARALLELISM: u32 = 16;
pub(crate) const MAX_KDF_COST: u64 = 8 * 32 * 1024 * 4;

pub(crate) fn kdf_in_bounds(kf: &KeyFile) -> bool {
    kf.memory_kib <= MAX_KDF_MEMORY_KIB
        && kf.iterations <= MAX_KDF_ITERATIONS
        && kf.parallelism <= MAX_KDF_PARALLELISM
        && kdf_cost(kf) <= MAX_KDF_COST
}

/// Memory x passes: what trying this key file costs, to try the cheap ones first.
pub(crate) fn kdf_cost(kf: &KeyFile) -> u64 {
    kf.memory_kib as u64 * kf.iterations as u64
}

/// Tries `password` on one key file; `Ok(None)` when it is not this key's password.
pub(crate) fn try_unlock(id: &Id, kf: &KeyFile, password: &[u8]) -> Result<Option<MasterKey>> {
    let damaged = |detail: &str| crate::Error::Damaged { what: "key file", id: id.to_hex(), detail: detail.into() };
    let salt = from_hex(&kf.salt).ok_or_else(|| damaged("bad salt"))?;
    let wrapped = from_hex(&kf.wrapped).ok_or_else(|| damaged("bad wrapped key"))?;
    // Refuse absurd costs from a hostile key file rather than exhausting memory or time.
    if !kdf_in_bounds(kf) {
        return Err(damaged("KDF parameters out of range"));
    }
    let kek = derive_kek(
        password,
        &salt,
        KdfParams { memory_kib: kf.memory_kib, iterations: kf.iterations, parallelism: kf.parallelism },
    )?;
    Ok(unwrap_master(&kek, &wrapped).ok())
}
