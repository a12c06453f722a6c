#![no_main]
//! Key files (format.md §4.2): read before any password is known.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_format::keyfile::KeyFile::decode(data);
});
