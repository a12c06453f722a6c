#![no_main]
//! Tree blobs (format.md §11): decoded from any bytes, re-encoded when accepted.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(t) = cairn_format::tree::Tree::decode(data) {
        let again = cairn_format::tree::Tree::decode(&t.encode());
        assert!(again.is_ok(), "an accepted tree must survive its own encoding");
    }
});
