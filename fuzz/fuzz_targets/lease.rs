#![no_main]
//! Writer leases (format.md §13.1).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_format::lease::WriterLease::decode(data);
});
