#![no_main]
//! Prune markers and arming records (format.md §13.2).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_format::lease::PruneDoc::decode(data);
});
