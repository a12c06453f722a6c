#![no_main]
//! Blob plaintexts (format.md §8): the first 4 bytes are the raw length the index
//! claims, the rest the plaintext; decoding must stay within the format's bounds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let raw = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if let Ok(out) = cairn_repo::blob::decode(&data[4..], raw) {
        assert!(out.len() <= cairn_format::MAX_BLOB_LEN as usize);
    }
});
