//! Fuzzes the sticky-cookie decoder: it must never panic, and whatever it accepts must
//! re-encode to the same token. Run: `cargo +nightly fuzz run sticky_token` in `gateway/`.
#![no_main]

use gateway::routing::sticky::StickyToken;
use gateway_config::StickyKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = StickyKey {
        id: "k1".into(),
        secret: vec![42; 32],
    };
    if let Ok(token) = StickyToken::decode(text, std::slice::from_ref(&key), "api", 1_000) {
        let again = StickyToken::decode(
            &token.encode(&key),
            std::slice::from_ref(&key),
            "api",
            1_000,
        );
        assert_eq!(again.as_ref(), Ok(&token));
    }
});
