//! What the HLR accepts. The store checks every write against these rules, so every
//! writer (the command line, the CSV import, the controller handle, an operator API)
//! refuses the same things with the same words; the text parsers here are what the
//! command line and the CSV import read their fields with.
//! Ranges are those of `PROTOCOL.md §4`.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use super::StoreError;
use crate::hlr::{NewSubscriber, Secret128, Site};
use crate::protocol::{SiteId, TalkgroupId};

/// Carriers a site may have (carrier indexes are `0..carriers`, at most 0..=63).
pub const CARRIERS: RangeInclusive<u8> = 1..=64;
/// TDMA slots a carrier may have.
pub const SLOTS_PER_CARRIER: [u8; 4] = [6, 4, 3, 2];
/// Subscriber priority levels, higher first.
pub const PRIORITIES: RangeInclusive<u8> = 0..=15;
/// The `slot` of a slot fault that takes a whole carrier out of service.
pub const WHOLE_CARRIER: u8 = 255;

/// Parses a value of one of the protocol's ranged id types (`FleetId`, `SiteId`, ...)
/// from text, stating the range when it is refused.
pub fn ranged<T, R>(s: &str, new: fn(R) -> Option<T>, min: R, max: R) -> Result<T, String>
where
    R: FromStr + Display + Copy,
{
    s.parse()
        .ok()
        .and_then(new)
        .ok_or_else(|| format!("must be {min}..={max}"))
}

/// Parses a number within `range`, stating the range when it is refused.
pub fn within(s: &str, range: RangeInclusive<u8>) -> Result<u8, String> {
    s.parse()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| format!("must be {}..={}", range.start(), range.end()))
}

/// What a subscriber provisioned without permissions may do.
pub const DEFAULT_PERMISSIONS: &str = "group,private,emergency,data";

/// The keys of a subscriber to provision: K and OPc both given (32 hex digits each), or
/// neither, and then both generated (the `bool` says so: they must be shown once).
pub fn subscriber_keys(k: Option<&str>, opc: Option<&str>) -> Result<(Secret128, Secret128, bool), String> {
    let hex = |v: Option<&str>, name: &str| {
        v.map(|s| Secret128::from_hex(s).ok_or_else(|| format!("{name} must be 32 hex digits")))
            .transpose()
    };
    match (hex(k, "k")?, hex(opc, "opc")?) {
        (Some(k), Some(opc)) => Ok((k, opc, false)),
        (None, None) => {
            let gen = || Secret128::generate().map_err(|e| format!("no randomness for the keys: {e}"));
            Ok((gen()?, gen()?, true))
        }
        _ => Err("give both k and opc, or neither to generate them".into()),
    }
}

fn invalid(reason: String) -> StoreError {
    StoreError::Invalid(reason)
}

/// A fleet, talkgroup or site name: not empty, not only blanks.
pub fn name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(invalid(format!("a {what} needs a name that is not blank")));
    }
    Ok(())
}

/// Slots per carrier: 6, 4, 3 or 2.
pub fn slots_per_carrier(n: u8) -> Result<(), StoreError> {
    if !SLOTS_PER_CARRIER.contains(&n) {
        return Err(invalid(format!(
            "slots per carrier must be 6, 4, 3 or 2, not {n}"
        )));
    }
    Ok(())
}

/// A site: a name, 1..=64 carriers, 6, 4, 3 or 2 slots per carrier, and a link key
/// that is not all zeros (the value of an unset key, which anyone could guess).
pub fn site(s: &Site) -> Result<(), StoreError> {
    name("site", &s.name)?;
    if !CARRIERS.contains(&s.carriers) {
        return Err(invalid(format!("carriers must be 1..=64, not {}", s.carriers)));
    }
    slots_per_carrier(s.slots_per_carrier)?;
    if s.key.expose().iter().all(|b| *b == 0) {
        return Err(invalid(
            "a site key of all zeros is refused; generate one (`trunkd config keygen`)".into(),
        ));
    }
    Ok(())
}

/// A slot (or, with `slot` = [`WHOLE_CARRIER`], a carrier) an operator takes out of
/// service or puts back: one the site has (`shape` = its carriers and slots per
/// carrier), and not the control channel (carrier 0 slot 0), which is never a traffic
/// slot.
pub fn slot_target(site: SiteId, shape: (i64, i64), carrier: u8, slot: u8) -> Result<(), StoreError> {
    let (carriers, slots) = shape;
    if i64::from(carrier) >= carriers {
        return Err(invalid(format!(
            "site {site} has carriers 0..={}; there is no carrier {carrier}",
            carriers - 1
        )));
    }
    if slot != WHOLE_CARRIER && i64::from(slot) >= slots {
        return Err(invalid(format!(
            "site {site} has slots 0..={} on each carrier; there is no slot {slot}",
            slots - 1
        )));
    }
    if (carrier, slot) == (0, 0) {
        return Err(invalid(
            "carrier 0 slot 0 is the control channel, not a traffic slot; it cannot be taken out of service or restored"
                .into(),
        ));
    }
    Ok(())
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
    if let Some(a) = &s.alias {
        alias(a)?;
    }
    if !PRIORITIES.contains(&s.priority) {
        return Err(invalid(format!("priority {} is outside 0..=15", s.priority)));
    }
    talkgroup_list(&s.talkgroups)
}

/// Checks an alias: 1 to 32 characters, none of them a control character, and no
/// space at either end.
pub fn alias(a: &str) -> Result<(), StoreError> {
    let n = a.chars().count();
    if !(1..=32).contains(&n) || a.trim() != a || a.chars().any(char::is_control) {
        return Err(invalid(format!(
            "alias `{}` must be 1 to 32 characters, without control characters or spaces at either end",
            a.escape_debug()
        )));
    }
    Ok(())
}

/// A subscriber's permitted talkgroups: at least one, none twice.
pub fn talkgroup_list(tgs: &[TalkgroupId]) -> Result<(), StoreError> {
    if tgs.is_empty() {
        return Err(invalid("a subscriber needs at least one talkgroup".into()));
    }
    for (i, tg) in tgs.iter().enumerate() {
        if tgs[..i].contains(tg) {
            return Err(invalid(format!("talkgroup {tg} is listed twice")));
        }
    }
    Ok(())
}

/// Checks an MSISDN: 1 to 15 decimal digits.
pub fn valid_msisdn(s: &str) -> bool {
    (1..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SiteKey;

    fn site_with(name: &str, carriers: u8, slots: u8, key: u8) -> Site {
        Site {
            id: SiteId::new(1).unwrap(),
            name: name.into(),
            carriers,
            slots_per_carrier: slots,
            key: SiteKey::from_bytes([key; 32]),
        }
    }

    #[test]
    fn sites_need_a_name_a_real_shape_and_a_key() {
        assert!(site(&site_with("North", 2, 6, 7)).is_ok());
        for (bad, why) in [
            (site_with(" ", 2, 6, 7), "name"),
            (site_with("North", 0, 6, 7), "carriers"),
            (site_with("North", 65, 6, 7), "carriers"),
            (site_with("North", 2, 5, 7), "slots"),
            (site_with("North", 2, 6, 0), "zeros"),
        ] {
            let e = site(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn slot_targets_must_exist_and_not_be_the_control_channel() {
        let s = SiteId::new(1).unwrap();
        assert!(slot_target(s, (2, 4), 1, 3).is_ok());
        assert!(slot_target(s, (2, 4), 0, 1).is_ok());
        assert!(slot_target(s, (2, 4), 0, WHOLE_CARRIER).is_ok());
        assert!(slot_target(s, (2, 4), 2, 0)
            .unwrap_err()
            .to_string()
            .contains("no carrier 2"));
        assert!(slot_target(s, (2, 4), 1, 4)
            .unwrap_err()
            .to_string()
            .contains("no slot 4"));
        assert!(slot_target(s, (2, 4), 0, 0)
            .unwrap_err()
            .to_string()
            .contains("control channel"));
    }
}
