#![no_main]
//! Index files (format.md §10).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(f) = cairn_format::index::IndexFile::decode(data) {
        let _ = cairn_format::index::IndexFile::decode(&f.encode());
    }
});
