#![no_main]
//! Sealed objects (format.md §5) under a fixed key: the envelope of any bytes (version,
//! salt, length, tag) is refused without a panic, and what this key sealed opens to the
//! same plaintext, under its own kind only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = cairn_crypto::MasterKey::from_bytes([7; 32]);
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let _ = cairn_crypto::open_object(&key, b"cairn v1 snapshot", rest);
    } else if let Ok(sealed) = cairn_crypto::seal_object(&key, b"cairn v1 index", rest) {
        assert_eq!(cairn_crypto::open_object(&key, b"cairn v1 index", &sealed).ok().as_deref(), Some(rest));
        assert!(cairn_crypto::open_object(&key, b"cairn v1 snapshot", &sealed).is_err());
    }
});
