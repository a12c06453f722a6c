//! Blob plaintext encoding: `compression(1) || payload`, compression 0 (none) or 1 (zstd).
//! Incompressible data is detected on a sample and stored as is.

use cairn_format::magic::{COMPRESSION_NONE, COMPRESSION_ZSTD};

use crate::{Error, Result};

/// A per-thread zstd context (contexts are expensive to create).
pub struct BlobCodec {
    level: i32,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    sampler: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

const SAMPLE: usize = 16 * 1024;

impl BlobCodec {
    pub fn new(level: i32) -> Self {
        BlobCodec {
            level,
            compressor: zstd::bulk::Compressor::new(level).ok(),
            sampler: zstd::bulk::Compressor::new(1).ok(),
            scratch: Vec::new(),
        }
    }

    /// Appends the blob plaintext of `data` to `out` (compressed when it pays). At most
    /// `1 + data.len()` bytes are appended.
    pub fn encode_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.len() >= 128 && self.level > 0 && self.worth_compressing(data) {
            if let Some(c) = self.compressor.as_mut() {
                // zstd writes into the spare capacity: no zeroing of a bound-sized buffer.
                self.scratch.clear();
                self.scratch.reserve(zstd::zstd_safe::compress_bound(data.len()));
                if let Ok(n) = c.compress_to_buffer(data, &mut self.scratch) {
                    if n < data.len() - data.len() / 32 {
                        out.push(COMPRESSION_ZSTD);
                        out.extend_from_slice(&self.scratch[..n]);
                        return;
                    }
                }
            }
        }
        out.push(COMPRESSION_NONE);
        out.extend_from_slice(data);
    }

    /// Encodes `data` as a blob plaintext (compressed when it pays).
    pub fn encode(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + data.len() + cairn_crypto::TAG_LEN);
        self.encode_into(data, &mut out);
        out
    }

    /// Compresses a 16 KiB sample from the middle at level 1: data that does not shrink
    /// there (media, archives, encrypted files) is not worth a full compression pass.
    fn worth_compressing(&mut self, data: &[u8]) -> bool {
        if data.len() < 4 * SAMPLE {
            return true;
        }
        let mid = data.len() / 2 - SAMPLE / 2;
        let sample = &data[mid..mid + SAMPLE];
        match self.sampler.as_mut().map(|s| s.compress(sample)) {
            Some(Ok(c)) => c.len() < SAMPLE * 15 / 16,
            _ => true,
        }
    }
}

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Decodes a blob plaintext; `raw_length` bounds decompression (hostile input), and
/// nothing is allocated for a `raw_length` the format does not allow or the zstd frame
/// contradicts.
pub fn decode(plain: Vec<u8>, raw_length: usize) -> Result<Vec<u8>> {
    let damaged = |detail: String| Error::Damaged { what: "blob", id: String::new(), detail };
    if raw_length > cairn_format::MAX_BLOB_LEN as usize {
        return Err(damaged(format!("raw length {raw_length} is over the format's limit")));
    }
    if plain.first() == Some(&COMPRESSION_ZSTD) {
        // Our writer records the content size in the frame: when it is there it must
        // agree, before a buffer of `raw_length` bytes is set aside for it.
        if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(&plain[1..]) {
            if n != raw_length as u64 {
                return Err(damaged(format!("zstd frame holds {n} bytes, the index says {raw_length}")));
            }
        }
    }
    match plain.first() {
        Some(&COMPRESSION_NONE) => {
            let mut v = plain;
            v.remove(0);
            Ok(v)
        }
        Some(&COMPRESSION_ZSTD) => DECOMPRESSOR.with(|d| {
            // One context per thread: creating one costs more than decompressing a tree.
            let mut d = d.borrow_mut();
            let d = match d.as_mut() {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new().map_err(|e| Error::Damaged {
                    what: "blob",
                    id: String::new(),
                    detail: format!("zstd: {e}"),
                })?),
            };
            d.decompress(&plain[1..], raw_length).map_err(|e| Error::Damaged {
                what: "blob",
                id: String::new(),
                detail: format!("zstd: {e}"),
            })
        }),
        Some(c) => Err(Error::Damaged { what: "blob", id: String::new(), detail: format!("unknown compression {c}") }),
        None => Err(Error::Damaged { what: "blob", id: String::new(), detail: "empty".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_compressible_and_not() {
        let mut c = BlobCodec::new(3);
        let text = b"hello hello hello hello ".repeat(10_000);
        let enc = c.encode(&text);
        assert_eq!(enc[0], COMPRESSION_ZSTD);
        assert!(enc.len() < text.len() / 10);
        assert_eq!(decode(enc, text.len()).unwrap(), text);
        let mut x = 1u64;
        let random: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let enc = c.encode(&random);
        assert_eq!(enc[0], COMPRESSION_NONE);
        assert_eq!(decode(enc, random.len()).unwrap(), random);
    }
}
