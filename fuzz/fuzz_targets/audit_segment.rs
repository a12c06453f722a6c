#![no_main]
//! An audit segment's plaintext (format.md §12.3): a repository holder can store any bytes
//! that open under the key; decoding must refuse or accept, never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = cairn_format::audit::Segment::decode(data) {
        // What decodes re-encodes to something that decodes to the same segment.
        let again = cairn_format::audit::Segment::decode(&s.encode());
        assert!(again.is_ok_and(|a| a == s));
    }
});
