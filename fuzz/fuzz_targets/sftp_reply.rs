#![no_main]
//! SFTP replies (the server may be hostile): every decoder the client uses.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cairn_store_sftp::decode_any_reply(data);
});
