//! Fuzzes the configuration loader on TOML text (`trunkd::config::Config::from_toml`,
//! the path of `trunkd --config FILE`).
//!
//! Checked: loading never panics, whatever the text; a configuration it accepts passes
//! `validate` (what `serve` relies on), and every refusal says what is wrong.
//!
//! Run (nightly): `cargo fuzz run config` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkd::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // a file that is not UTF-8 is refused by the TOML reader before parsing
    };
    match Config::from_toml(text) {
        Ok(cfg) => assert!(cfg.validate().is_ok(), "accepted but invalid: {cfg:?}"),
        Err(e) => assert!(!e.to_string().trim().is_empty(), "a refusal without a reason"),
    }
});
