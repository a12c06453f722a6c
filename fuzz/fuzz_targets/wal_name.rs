#![no_main]
//! WAL object names, LSNs and recovery times as users and repositories give them.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cairn_pg::wal::WalName::parse(s);
        let _ = cairn_pg::wal::parse_lsn(s);
        let _ = cairn_pg::recovery::parse_time(s);
    }
});
