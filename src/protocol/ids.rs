//! Identities and small value types of the wire protocol, each holding only values in
//! its range (`PROTOCOL.md §4`). Constructors return `None` for an out-of-range value,
//! so a value of one of these types is always valid to encode.

use std::fmt;

macro_rules! ranged_id {
    ($(#[$doc:meta])* $name:ident, $repr:ty, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name($repr);

        impl $name {
            /// Smallest valid value.
            pub const MIN: $repr = $min;
            /// Largest valid value.
            pub const MAX: $repr = $max;

            /// The id, or `None` when `v` is outside `MIN..=MAX`.
            pub const fn new(v: $repr) -> Option<Self> {
                if v >= Self::MIN && v <= Self::MAX {
                    Some(Self(v))
                } else {
                    None
                }
            }

            /// The raw value.
            pub const fn get(self) -> $repr {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

ranged_id!(
    /// A site (base station) id, 1..=4095.
    SiteId, u16, 1, 4095
);
ranged_id!(
    /// A fleet id, 1..=65535, unique system-wide.
    FleetId, u16, 1, u16::MAX
);
ranged_id!(
    /// A member id, 1..=65535, unique within its fleet.
    MemberId, u16, 1, u16::MAX
);
ranged_id!(
    /// A talkgroup id, 1..=65535, unique within its fleet.
    TalkgroupId, u16, 1, u16::MAX
);
ranged_id!(
    /// The semi-permanent dispatch identity handed out at registration, 24 bits, 1..=16_777_215.
    IndividualId, u32, 1, 0x00FF_FFFF
);
ranged_id!(
    /// Temporary identity allocated at each registration; 0 and `0xFFFF_FFFF` are reserved.
    Tmsi, u32, 1, 0xFFFF_FFFE
);
ranged_id!(
    /// Index of a carrier within its site, 0..=63.
    Carrier, u8, 0, 63
);
ranged_id!(
    /// A TDMA slot within its carrier, 0..=5.
    Slot, u8, 0, 5
);
ranged_id!(
    /// A call id, non-zero.
    CallId, u32, 1, u32::MAX
);
ranged_id!(
    /// A position in a busy queue, 1 = next to be served.
    QueuePosition, u16, 1, u16::MAX
);
ranged_id!(
    /// The id of a stored short-data message, non-zero.
    MessageId, u64, 1, u64::MAX
);

/// Fifteen decimal digits, the shape shared by IMSI and IMEI (`PROTOCOL.md §4`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digits15([u8; 15]);

/// Why a text is not 15 decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigitsError {
    /// Not exactly 15 characters.
    #[error("must be exactly 15 digits, got {0} characters")]
    Length(usize),
    /// A character that is not 0-9.
    #[error("must contain only the digits 0-9")]
    NotDigit,
}

impl Digits15 {
    /// Parses 15 ASCII digits.
    pub fn parse(s: &str) -> Result<Self, DigitsError> {
        let b = s.as_bytes();
        if b.len() != 15 {
            return Err(DigitsError::Length(s.chars().count()));
        }
        let mut d = [0u8; 15];
        for (out, c) in d.iter_mut().zip(b) {
            if !c.is_ascii_digit() {
                return Err(DigitsError::NotDigit);
            }
            *out = c - b'0';
        }
        Ok(Self(d))
    }

    /// Builds from digit values; `None` if any is above 9.
    pub fn from_digits(d: [u8; 15]) -> Option<Self> {
        d.iter().all(|&x| x <= 9).then_some(Self(d))
    }

    /// The digit values, most significant first.
    pub fn digits(&self) -> &[u8; 15] {
        &self.0
    }

    /// Packed BCD: two digits a byte, high nibble first, filler `0xF` in the last nibble.
    pub fn to_bcd(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        for (i, byte) in out.iter_mut().enumerate() {
            let hi = self.0[2 * i];
            let lo = if 2 * i + 1 < 15 { self.0[2 * i + 1] } else { 0xF };
            *byte = (hi << 4) | lo;
        }
        out
    }

    /// Unpacks packed BCD; `None` on a nibble above 9 or a filler other than `0xF`.
    pub fn from_bcd(b: &[u8; 8]) -> Option<Self> {
        if b[7] & 0x0F != 0x0F {
            return None;
        }
        let mut d = [0u8; 15];
        for (i, slot) in d.iter_mut().enumerate() {
            let byte = b[i / 2];
            let nib = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
            if nib > 9 {
                return None;
            }
            *slot = nib;
        }
        Some(Self(d))
    }
}

impl Digits15 {
    /// The 15 ASCII digits, without allocating (an identity is written to the database
    /// and the logs often: one formatted write per digit cost thousands of instructions).
    pub fn ascii(&self) -> [u8; 15] {
        self.0.map(|d| b'0' + d)
    }
}

impl fmt::Display for Digits15 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ascii = self.ascii();
        // Digits 0-9 only (every constructor checks), so always ASCII.
        f.pad(std::str::from_utf8(&ascii).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digits15 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A concurrent map keyed by identities that trunkd provisions or draws (IMSI, IMEI,
/// TMSI, unit address), with a fast hasher (foldhash, hashbrown's own, seeded per
/// process) in place of SipHash, which cost 2,000 to 6,000 instructions per operation.
/// Safe where no peer chooses the keys inserted: a radio can ask for any identity, but
/// only provisioned subscribers and drawn TMSIs go in. Keep SipHash (`HashMap`,
/// `DashMap`) for keys a peer picks (transaction ids).
pub type IdMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;

/// International Mobile Subscriber Identity: 15 digits assigned by the operator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Imsi(pub Digits15);

/// International Mobile Equipment Identity: 15 digits, the last a Luhn check digit.
///
/// The type accepts any 15 digits, because a unit may send a wrong check digit and the
/// registration procedure must refuse it with its own cause; see [`Imei::luhn_ok`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Imei(pub Digits15);

impl Imsi {
    /// Parses 15 ASCII digits.
    pub fn parse(s: &str) -> Result<Self, DigitsError> {
        Digits15::parse(s).map(Self)
    }
}

impl fmt::Display for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Imei {
    /// Parses 15 ASCII digits (without checking the Luhn digit).
    pub fn parse(s: &str) -> Result<Self, DigitsError> {
        Digits15::parse(s).map(Self)
    }

    /// The IMEI made of the 14-digit `body` and its Luhn check digit; `None` if `body`
    /// is not 14 decimal digits.
    pub fn with_check_digit(body: &str) -> Option<Self> {
        let b = body.as_bytes();
        if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut d = [0u8; 15];
        for (o, c) in d.iter_mut().zip(b) {
            *o = c - b'0';
        }
        d[14] = luhn_check_digit(d[..14].try_into().expect("14 digits"));
        Digits15::from_digits(d).map(Imei)
    }

    /// Whether the 15th digit is the Luhn check digit of the first 14.
    ///
    /// ```
    /// use trunkd::protocol::Imei;
    /// assert!(Imei::parse("490154203237518").unwrap().luhn_ok());
    /// assert!(!Imei::parse("490154203237519").unwrap().luhn_ok());
    /// ```
    pub fn luhn_ok(&self) -> bool {
        let d = self.0.digits();
        luhn_check_digit(d[..14].try_into().expect("14 digits")) == d[14]
    }
}

impl fmt::Display for Imei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The Luhn check digit for 14 digits (the IMEI body).
pub fn luhn_check_digit(body: &[u8; 14]) -> u8 {
    // Counting from the right of the body, every first, third, ... digit is doubled,
    // because the check digit will stand to its right.
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// A dispatch address: fleet and member.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Unit {
    /// The unit's fleet.
    pub fleet: FleetId,
    /// The unit's member number within the fleet.
    pub member: MemberId,
}

/// The addressee of a status message or short data: a unit or a talkgroup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Target {
    /// One unit.
    Unit(Unit),
    /// Every unit affiliated to the talkgroup.
    Talkgroup {
        /// The talkgroup's fleet.
        fleet: FleetId,
        /// The talkgroup within the fleet.
        talkgroup: TalkgroupId,
    },
}

/// How a unit identifies itself in `REG_REQUEST`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Identity {
    /// First registration: the equipment identity.
    Imei(Imei),
    /// Later registrations: the subscriber identity.
    Imsi(Imsi),
    /// Later registrations: the temporary identity.
    Tmsi(Tmsi),
}

/// A unit's talkgroups: one primary and up to three secondary (multi-talkgroup).
///
/// Invariant: at most three secondaries, none equal to the primary or to each other.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TalkgroupList {
    primary: TalkgroupId,
    secondary: Vec<TalkgroupId>,
}

impl TalkgroupList {
    /// Most secondary talkgroups a unit may have.
    pub const MAX_SECONDARY: usize = 3;

    /// The list, or `None` if it breaks the invariant.
    pub fn new(primary: TalkgroupId, secondary: Vec<TalkgroupId>) -> Option<Self> {
        if secondary.len() > Self::MAX_SECONDARY {
            return None;
        }
        for (i, tg) in secondary.iter().enumerate() {
            if *tg == primary || secondary[..i].contains(tg) {
                return None;
            }
        }
        Some(Self { primary, secondary })
    }

    /// The primary talkgroup.
    pub fn primary(&self) -> TalkgroupId {
        self.primary
    }

    /// The secondary talkgroups, at most three.
    pub fn secondary(&self) -> &[TalkgroupId] {
        &self.secondary
    }
}

/// One site's part of a channel grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SiteGrant {
    /// The site.
    pub site: SiteId,
    /// The carrier at that site.
    pub carrier: Carrier,
    /// The slot on that carrier.
    pub slot: Slot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_layout_matches_the_spec_example() {
        let imsi = Imsi::parse("001010123456789").unwrap();
        assert_eq!(imsi.0.to_bcd(), [0x00, 0x10, 0x10, 0x12, 0x34, 0x56, 0x78, 0x9F]);
        assert_eq!(Digits15::from_bcd(&imsi.0.to_bcd()), Some(imsi.0));
    }

    #[test]
    fn bcd_rejects_bad_nibbles_and_filler() {
        assert!(Digits15::from_bcd(&[0xA0, 0, 0, 0, 0, 0, 0, 0x0F]).is_none());
        assert!(Digits15::from_bcd(&[0, 0, 0, 0, 0, 0, 0, 0x00]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn fifteen_digits_print_as_they_parse(d in proptest::array::uniform15(0u8..=9)) {
            let digits = Digits15::from_digits(d).unwrap();
            let text = digits.to_string();
            let expected: String = d.iter().map(|x| char::from(b'0' + x)).collect();
            proptest::prop_assert_eq!(&text, &expected);
            proptest::prop_assert_eq!(Imsi::parse(&text), Ok(Imsi(digits)));
            proptest::prop_assert_eq!(format!("{:>17}", Imsi(digits)), format!("  {expected}"));
        }
    }

    #[test]
    fn parse_rejects_wrong_length_and_letters() {
        assert_eq!(Imsi::parse("123"), Err(DigitsError::Length(3)));
        assert_eq!(Imsi::parse("00101012345678x"), Err(DigitsError::NotDigit));
    }

    #[test]
    fn luhn_known_values() {
        // Known-valid IMEIs.
        for s in ["490154203237518", "356938035643809", "352099001761481"] {
            assert!(Imei::parse(s).unwrap().luhn_ok(), "{s}");
        }
        assert!(!Imei::parse("352099001761482").unwrap().luhn_ok());
        assert_eq!(
            Imei::with_check_digit("49015420323751").unwrap().to_string(),
            "490154203237518"
        );
        assert!(Imei::with_check_digit("4901542032375").is_none());
    }

    #[test]
    fn talkgroup_list_invariants() {
        let tg = |v| TalkgroupId::new(v).unwrap();
        assert!(TalkgroupList::new(tg(1), vec![tg(2), tg(3), tg(4)]).is_some());
        assert!(TalkgroupList::new(tg(1), vec![tg(2), tg(3), tg(4), tg(5)]).is_none());
        assert!(TalkgroupList::new(tg(1), vec![tg(1)]).is_none());
        assert!(TalkgroupList::new(tg(1), vec![tg(2), tg(2)]).is_none());
    }

    #[test]
    fn ranges_hold() {
        assert!(SiteId::new(0).is_none());
        assert!(SiteId::new(4096).is_none());
        assert!(Tmsi::new(u32::MAX).is_none());
        assert!(Slot::new(6).is_none());
        assert!(IndividualId::new(0x0100_0000).is_none());
    }
}
