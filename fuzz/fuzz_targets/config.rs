#![no_main]
//! The config document (format.md §6).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_format::config::Config::decode(data);
});
