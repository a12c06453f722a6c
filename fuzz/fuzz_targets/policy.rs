#![no_main]
//! The policy file (docs/policy.md): any text is a policy or one error, never a panic. The
//! operator writes it, but a typo, a generated file or a half-written one reaches the same
//! parser, and `cairn policy check` promises a located message for each.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A fixed instant: the schedule-meets-RPO check looks a year ahead from it.
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    if let Err(e) = cairn_policy::file::parse("fuzz.toml", text, now) {
        let _ = e.to_string();
    }
});
