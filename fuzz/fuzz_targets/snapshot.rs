#![no_main]
//! Snapshot documents (format.md §12).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = cairn_format::snapshot::Snapshot::decode(data) {
        let _ = cairn_format::snapshot::Snapshot::decode(&s.encode());
    }
});
