//! Fuzzes the subscriber CSV parser (`trunkd::store::csv::parse_subscribers`), which
//! reads files an operator imports (`trunkd subscriber import`; format in the README).
//!
//! Checked: parsing never panics, whatever the bytes (not UTF-8, no header, ragged
//! rows); an accepted file yields rows whose line numbers are past the header and in
//! increasing order.
//!
//! Run (nightly): `cargo fuzz run csv_rows` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkd::store::csv::parse_subscribers;

fuzz_target!(|data: &[u8]| {
    if let Ok(rows) = parse_subscribers(data) {
        let lines: Vec<u64> = rows.iter().map(|(line, _)| *line).collect();
        assert!(
            lines.iter().all(|l| *l >= 2),
            "a row on the header line: {lines:?}"
        );
        assert!(
            lines.windows(2).all(|w| w[0] < w[1]),
            "line numbers out of order: {lines:?}"
        );
    }
});
