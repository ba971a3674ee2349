//! What the HLR accepts. The store checks every write against these rules, so every
//! writer (the command line today, an operator API tomorrow) refuses the same things
//! with the same words. Ranges are those of `PROTOCOL.md §4`.

use std::ops::RangeInclusive;

use super::model::{valid_msisdn, NewSubscriber};
use super::StoreError;

/// Subscriber priority levels, higher first.
pub const PRIORITIES: RangeInclusive<u8> = 0..=15;

fn invalid(reason: String) -> StoreError {
    StoreError::Invalid(reason)
}

/// The fields of a subscriber to provision that can be checked without the database:
/// the IMEI's Luhn digit, the MSISDN, the priority and the talkgroup list (at least one,
/// none twice).
pub fn new_subscriber(s: &NewSubscriber) -> Result<(), StoreError> {
    if !s.imei.luhn_ok() {
        return Err(invalid(format!("IMEI {} fails its Luhn check digit", s.imei)));
    }
    if let Some(m) = &s.msisdn {
        if !valid_msisdn(m) {
            return Err(invalid(format!("MSISDN `{m}` must be 1 to 15 digits")));
        }
    }
    if !PRIORITIES.contains(&s.priority) {
        return Err(invalid(format!("priority {} is outside 0..=15", s.priority)));
    }
    if s.talkgroups.is_empty() {
        return Err(invalid("a subscriber needs at least one talkgroup".into()));
    }
    for (i, tg) in s.talkgroups.iter().enumerate() {
        if s.talkgroups[..i].contains(tg) {
            return Err(invalid(format!("talkgroup {tg} is listed twice")));
        }
    }
    Ok(())
}
