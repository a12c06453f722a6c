#![no_main]
//! Pack headers once decrypted (format.md §9): counts and offsets from the bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_format::pack::decode_header(data);
});
