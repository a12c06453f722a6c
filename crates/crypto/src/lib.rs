//! Key derivation, authenticated encryption and keyed hashing for cairn repositories.
//!
//! Principal types: [`MasterKey`] (the random 256-bit repository secret), [`PackKey`] (an
//! AES-256-GCM key derived for one pack or one sealed object from the master key and a
//! random 256-bit salt), [`IdKey`] (the keyed-BLAKE3 key that names blobs).
//!
//! Key decision — nonce safety: AES-GCM with random 96-bit nonces under one key is safe for
//! about 2^32 messages; a repository may hold 10^12 blobs. So no key encrypts more than one
//! object: every pack and every sealed object (config, index, snapshot) gets a fresh random
//! 256-bit salt and its own key `BLAKE3-derive_key("cairn v1 object key", master || salt)`.
//! Inside a pack, the nonce of a blob is its byte offset in the pack, which is unique within
//! the pack; the pack header uses a nonce no offset can take. Two objects share a key only if
//! two random 256-bit salts collide: at 2^40 objects the probability is below 2^-175.
//! Pure: no I/O, no clock; randomness comes from the OS through `ring`.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of the AES-GCM authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of the salts that select per-object keys.
pub const SALT_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("authentication failed: data is corrupted or the key is wrong")]
    Decrypt,
    #[error("unsupported sealed-object version {0}")]
    Version(u8),
    #[error("ciphertext too short ({0} bytes)")]
    Truncated(usize),
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("the operating system's random generator failed")]
    Random,
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), Error> {
    SystemRandom::new().fill(buf).map_err(|_| Error::Random)
}

pub fn random_array<const N: usize>() -> Result<[u8; N], Error> {
    let mut a = [0u8; N];
    fill_random(&mut a)?;
    Ok(a)
}

/// The repository master key. Never stored in clear; wrapped by key files.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> Result<Self, Error> {
        Ok(MasterKey(random_array()?))
    }
    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The key of the object (pack or sealed file) whose salt is `salt`.
    pub fn object_key(&self, salt: &[u8; SALT_LEN]) -> PackKey {
        let mut input = [0u8; 32 + SALT_LEN];
        input[..32].copy_from_slice(&self.0);
        input[32..].copy_from_slice(salt);
        let k = blake3::derive_key("cairn v1 object key", &input);
        PackKey::new(&k)
    }
}

/// An AES-256-GCM key used for exactly one object.
pub struct PackKey(LessSafeKey);

impl PackKey {
    fn new(k: &[u8; 32]) -> Self {
        // AES_256_GCM accepts any 32-byte key; the error arm is unreachable by construction.
        let unbound = UnboundKey::new(&AES_256_GCM, k).unwrap_or_else(|_| unreachable!("32-byte key"));
        PackKey(LessSafeKey::new(unbound))
    }

    /// Encrypts `buf` in place and appends the tag. `nonce` must never repeat for this key.
    pub fn seal(&self, nonce: [u8; 12], buf: &mut Vec<u8>) -> Result<(), Error> {
        self.seal_with(nonce, &[], buf)
    }

    /// Encrypts `region` in place and returns its tag (for sealing inside a larger buffer).
    pub fn seal_region(&self, nonce: [u8; 12], region: &mut [u8]) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), region)
            .map_err(|_| Error::Decrypt)?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// As [`PackKey::seal`], authenticating `aad` too (it must be given again to open).
    pub fn seal_with(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), Error> {
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| Error::Decrypt)
    }

    /// Decrypts `buf` (ciphertext || tag) in place; returns the plaintext length.
    pub fn open_in_place(&self, nonce: [u8; 12], buf: &mut [u8]) -> Result<usize, Error> {
        self.open_with(nonce, &[], buf)
    }

    pub fn open_with(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<usize, Error> {
        if buf.len() < TAG_LEN {
            return Err(Error::Truncated(buf.len()));
        }
        let pt = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| Error::Decrypt)?;
        Ok(pt.len())
    }
}

/// The nonce of the blob at byte `offset` of a pack.
pub fn offset_nonce(offset: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&offset.to_be_bytes());
    n
}

/// The nonce of a pack header and of a sealed object's single ciphertext: no pack offset
/// maps to it (offsets have zero high bytes).
pub const HEADER_NONCE: [u8; 12] = [0xff; 12];

/// Sealed object: `version(1) || salt(32) || AES-GCM(object_key(salt), HEADER_NONCE, pt)`,
/// with the object's kind (e.g. `b"cairn v1 snapshot"`) as associated data, so an object of
/// one kind can never be accepted as another.
pub const SEALED_VERSION: u8 = 1;

pub fn seal_object(master: &MasterKey, kind: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let salt: [u8; SALT_LEN] = random_array()?;
    let key = master.object_key(&salt);
    let mut ct = Vec::with_capacity(1 + SALT_LEN + plaintext.len() + TAG_LEN);
    ct.push(SEALED_VERSION);
    ct.extend_from_slice(&salt);
    let mut body = plaintext.to_vec();
    key.seal_with(HEADER_NONCE, kind, &mut body)?;
    ct.extend_from_slice(&body);
    Ok(ct)
}

/// Like [`seal_object`], but `fill` appends the plaintext straight into the output buffer
/// (which has room for `capacity` bytes of it), where it is then encrypted in place: for
/// large objects, no second copy of the plaintext is made or touched.
pub fn seal_object_with<E>(
    master: &MasterKey,
    kind: &[u8],
    capacity: usize,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Result<Vec<u8>, E>, Error> {
    let salt: [u8; SALT_LEN] = random_array()?;
    let key = master.object_key(&salt);
    let mut buf = Vec::with_capacity(1 + SALT_LEN + capacity + TAG_LEN);
    buf.push(SEALED_VERSION);
    buf.extend_from_slice(&salt);
    if let Err(e) = fill(&mut buf) {
        return Ok(Err(e));
    }
    let tag = key
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(HEADER_NONCE),
            Aad::from(kind),
            &mut buf[1 + SALT_LEN..],
        )
        .map_err(|_| Error::Decrypt)?;
    buf.extend_from_slice(tag.as_ref());
    Ok(Ok(buf))
}

/// Like [`open_object`], decrypting in place: returns the buffer with the plaintext at
/// `1 + SALT_LEN ..` (see [`SEALED_PREFIX`]) and its length.
pub fn open_object_in_place(master: &MasterKey, kind: &[u8], mut sealed: Vec<u8>) -> Result<(Vec<u8>, usize), Error> {
    if sealed.len() < 1 + SALT_LEN + TAG_LEN {
        return Err(Error::Truncated(sealed.len()));
    }
    if sealed[0] != SEALED_VERSION {
        return Err(Error::Version(sealed[0]));
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&sealed[1..1 + SALT_LEN]);
    let n = master.object_key(&salt).open_with(HEADER_NONCE, kind, &mut sealed[1 + SALT_LEN..])?;
    Ok((sealed, n))
}

/// Where a sealed object's plaintext starts once opened in place.
pub const SEALED_PREFIX: usize = 1 + SALT_LEN;

pub fn open_object(master: &MasterKey, kind: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let (mut buf, n) = open_object_in_place(master, kind, sealed.to_vec())?;
    buf.truncate(SEALED_PREFIX + n);
    buf.drain(..SEALED_PREFIX);
    Ok(buf)
}

/// The keyed BLAKE3 key that names blobs: a MAC, so a storage provider holding a known
/// file cannot tell whether the repository contains it.
#[derive(Clone)]
pub struct IdKey([u8; 32]);

impl IdKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        IdKey(b)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, data).as_bytes()
    }
}

/// Unkeyed BLAKE3 of stored bytes: the name of packs, index files and snapshots.
pub fn content_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Argon2id cost parameters, stored in each key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// 32 MiB, 4 passes, 1 lane: about 0.07 s here. Above OWASP's Argon2id minimums
    /// (19 MiB x 2 passes) and as memory-hard as restic's scrypt (N=2^15, r=8: 32 MiB); every
    /// command pays it once, and its memory is the floor of every command's peak RSS.
    pub const DEFAULT: KdfParams = KdfParams { memory_kib: 32 * 1024, iterations: 4, parallelism: 1 };
}

/// Derives the key-encryption key of a key file from a password.
pub fn derive_kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32], Error> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| Error::Kdf(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(password, salt, &mut out).map_err(|e| Error::Kdf(e.to_string()))?;
    Ok(out)
}

/// Wraps the master key: `nonce(12) || AES-GCM(kek, nonce, master)`.
pub fn wrap_master(kek: &[u8; 32], master: &MasterKey) -> Result<Vec<u8>, Error> {
    let nonce: [u8; 12] = random_array()?;
    let key = PackKey::new(kek);
    let mut body = master.0.to_vec();
    key.seal(nonce, &mut body)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn unwrap_master(kek: &[u8; 32], wrapped: &[u8]) -> Result<MasterKey, Error> {
    if wrapped.len() != 12 + 32 + TAG_LEN {
        return Err(Error::Truncated(wrapped.len()));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&wrapped[..12]);
    let mut body = wrapped[12..].to_vec();
    let n = PackKey::new(kek).open_in_place(nonce, &mut body)?;
    let mut m = [0u8; 32];
    m.copy_from_slice(&body[..n]);
    Ok(MasterKey(m))
}

/// A master key wrapped for a local key cache, so that commands run once per WAL file
/// skip the password KDF: `salt(32) || sealed(master)` under a key derived from the
/// password with BLAKE3 (fast: such a cache must be protected like the password itself;
/// cairn writes it mode 0600 under the user's cache directory).
pub fn wrap_for_cache(master: &MasterKey, password: &[u8]) -> Result<Vec<u8>, Error> {
    let salt: [u8; SALT_LEN] = random_array()?;
    let mut out = salt.to_vec();
    out.extend_from_slice(&seal_object(&cache_key(password, &salt), CACHE_KIND, master.as_bytes())?);
    Ok(out)
}

/// The master key from a cache entry, if `password` opens it.
pub fn unwrap_from_cache(entry: &[u8], password: &[u8]) -> Option<MasterKey> {
    if entry.len() < SALT_LEN {
        return None;
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&entry[..SALT_LEN]);
    let plain = open_object(&cache_key(password, &salt), CACHE_KIND, &entry[SALT_LEN..]).ok()?;
    let key: [u8; 32] = plain.as_slice().try_into().ok()?;
    Some(MasterKey::from_bytes(key))
}

const CACHE_KIND: &[u8] = b"cairn v1 key cache";

fn cache_key(password: &[u8], salt: &[u8; SALT_LEN]) -> MasterKey {
    let mut h = blake3::Hasher::new_derive_key("cairn v1 key cache");
    h.update(salt);
    h.update(password);
    MasterKey::from_bytes(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_cache_opens_only_with_its_password() {
        let m = super::MasterKey::generate().unwrap();
        let e = super::wrap_for_cache(&m, b"pw").unwrap();
        assert_eq!(super::unwrap_from_cache(&e, b"pw").unwrap().as_bytes(), m.as_bytes());
        assert!(super::unwrap_from_cache(&e, b"other").is_none());
        assert!(super::unwrap_from_cache(&e[..10], b"pw").is_none());
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sealed_object_round_trip() {
        let m = MasterKey::generate().unwrap();
        let s = seal_object(&m, b"k", b"hello").unwrap();
        assert_eq!(open_object(&m, b"k", &s).unwrap(), b"hello");
        assert!(open_object(&m, b"other kind", &s).is_err(), "kind is not bound");
        let other = MasterKey::generate().unwrap();
        assert!(matches!(open_object(&other, b"k", &s), Err(Error::Decrypt)));
    }

    #[test]
    fn key_wrap_round_trip_and_wrong_password() {
        let m = MasterKey::generate().unwrap();
        let p = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
        let kek = derive_kek(b"pw", b"saltsaltsaltsalt", p).unwrap();
        let w = wrap_master(&kek, &m).unwrap();
        assert_eq!(unwrap_master(&kek, &w).unwrap().as_bytes(), m.as_bytes());
        let bad = derive_kek(b"px", b"saltsaltsaltsalt", p).unwrap();
        assert!(unwrap_master(&bad, &w).is_err());
    }

    #[test]
    fn offset_nonces_never_hit_header_nonce() {
        assert_ne!(offset_nonce(u64::MAX), HEADER_NONCE);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any single flipped bit anywhere in a sealed object is detected.
        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 0..300), pos in any::<usize>(), bit in 0u8..8) {
            let m = MasterKey::from_bytes([7; 32]);
            let mut s = seal_object(&m, b"k", &data).unwrap();
            let i = pos % s.len();
            s[i] ^= 1 << bit;
            prop_assert!(open_object(&m, b"k", &s).is_err());
        }

        #[test]
        fn blob_seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..300), off in any::<u32>()) {
            let m = MasterKey::from_bytes([9; 32]);
            let k = m.object_key(&[1; 32]);
            let mut buf = data.clone();
            k.seal(offset_nonce(off as u64), &mut buf).unwrap();
            let n = k.open_in_place(offset_nonce(off as u64), &mut buf).unwrap();
            prop_assert_eq!(&buf[..n], &data[..]);
        }
    }
}
