//! Fuzzes the config parser and validator with arbitrary text: it must never panic, and every
//! error names a position inside the text. Run: `cargo +nightly fuzz run config_parse` in
//! `gateway/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match gateway_config::parse(text, std::path::Path::new("fuzz.yaml")) {
        Ok(config) => {
            // A valid config indexes its routes without panicking.
            let table = gateway::routing::table::RouteTable::new(&config.routes);
            let _ = table.lookup("app.example", "/");
        }
        Err(e) => {
            // Rendering the error (file:line:column, field, fix) must not panic either.
            let _ = e.to_string();
        }
    }
});
