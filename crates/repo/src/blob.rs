//! Blob plaintext encoding: `compression(1) || payload`, compression 0 (none) or 1 (zstd).
//! Incompressible data is detected on a sample and stored as is.

use std::borrow::Cow;

use cairn_format::magic::{COMPRESSION_NONE, COMPRESSION_ZSTD};

use crate::{Error, Result};

/// A per-thread zstd context (contexts are expensive to create).
pub struct BlobCodec {
    level: i32,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    sampler: Option<zstd::bulk::Compressor<'static>>,
    /// The sample's compressed bytes (reused: one allocation per codec, not per blob).
    sample_out: Vec<u8>,
}

const SAMPLE: usize = 16 * 1024;

impl BlobCodec {
    pub fn new(level: i32) -> Self {
        BlobCodec {
            level,
            compressor: zstd::bulk::Compressor::new(level).ok(),
            sampler: zstd::bulk::Compressor::new(1).ok(),
            sample_out: Vec::new(),
        }
    }

    /// Appends the blob plaintext of `data` to `out` (compressed when it pays). At most
    /// `1 + data.len()` bytes are appended.
    ///
    /// zstd writes straight into `out`'s spare capacity (a pack buffer sized for its
    /// target): no scratch buffer of a compressed chunk's bound per codec (4 MiB and more,
    /// held for the whole backup) and no second copy of what it wrote. Output that does
    /// not pay is cut off again and the data stored as is.
    pub fn encode_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if data.len() >= 128 && self.level > 0 && self.worth_compressing(data) {
            if let Some(c) = self.compressor.as_mut() {
                // Room for the stored form in any case; zstd may use more when there is.
                out.reserve(1 + data.len());
                out.push(COMPRESSION_ZSTD);
                let mut dst = std::io::Cursor::new(&mut *out);
                dst.set_position(start as u64 + 1);
                match c.compress_to_buffer(data, &mut dst) {
                    Ok(n) if n < data.len() - data.len() / 32 => return,
                    _ => out.truncate(start),
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
        self.sample_out.clear();
        self.sample_out.reserve(zstd::zstd_safe::compress_bound(SAMPLE));
        match self.sampler.as_mut().map(|s| s.compress_to_buffer(sample, &mut self.sample_out)) {
            Some(Ok(n)) => n < SAMPLE * 15 / 16,
            _ => true,
        }
    }
}

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Decodes a blob plaintext; `raw_length` bounds decompression (hostile input), and
/// nothing is allocated for a `raw_length` the format does not allow or the zstd frame
/// contradicts. A blob stored raw comes back borrowed from `plain`: restore and check
/// decode inside a pack they read whole and need no copy of it.
pub fn decode(plain: &[u8], raw_length: usize) -> Result<Cow<'_, [u8]>> {
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
        Some(&COMPRESSION_NONE) => Ok(Cow::Borrowed(&plain[1..])),
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
            d.decompress(&plain[1..], raw_length).map(Cow::Owned).map_err(|e| Error::Damaged {
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
        assert_eq!(&*decode(&enc, text.len()).unwrap(), &text[..]);
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
        assert_eq!(&*decode(&enc, random.len()).unwrap(), &random[..]);
    }

    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// encode_into writes after what `out` holds (a pack's earlier blobs), whatever its
    /// spare room: none, less than zstd's bound, or plenty; and output that does not pay
    /// (here: a compressible middle, which the sample sees, in noise) is cut back off.
    #[test]
    fn encode_into_appends_whatever_the_room_and_cuts_off_what_does_not_pay() {
        let mut c = BlobCodec::new(3);
        let text = b"the quick brown fox ".repeat(20_000);
        let mut mixed = noise(800_000, 7);
        mixed[390_000..410_000].fill(b'a');
        for data in [&text, &mixed] {
            for spare in [0, data.len() / 4, data.len() + 1, 2 * data.len()] {
                let mut out = b"earlier blobs".to_vec();
                out.reserve_exact(spare);
                c.encode_into(data, &mut out);
                assert_eq!(&out[..13], b"earlier blobs");
                let plain = out[13..].to_vec();
                assert!(plain.len() <= 1 + data.len());
                let want = if std::ptr::eq(data, &text) { COMPRESSION_ZSTD } else { COMPRESSION_NONE };
                assert_eq!(plain[0], want, "spare {spare}");
                assert_eq!(&*decode(&plain, data.len()).unwrap(), &data[..]);
            }
        }
    }
}
