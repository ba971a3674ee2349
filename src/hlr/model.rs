//! What the HLR holds, as typed records. Secrets (K, OPc, site keys) are wrapped so
//! that no `Debug`, `Display` or log line can show them.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::protocol::{FleetId, Imei, Imsi, IndividualId, SiteId, SiteKey, TalkgroupId, Unit};

/// A 128-bit subscriber secret (K or OPc). `Debug` is redacted; equality is constant-time.
#[derive(Clone)]
pub struct Secret128([u8; 16]);

impl Secret128 {
    /// Wraps raw bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Secret128(b)
    }

    /// Parses 32 hexadecimal digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut b).ok()?;
        Some(Secret128(b))
    }

    /// A fresh random secret from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        Ok(Secret128(b))
    }

    /// The raw bytes, for the authentication algorithm and the database only.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }

    /// Hexadecimal, for provisioning output only.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for Secret128 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for Secret128 {}

impl fmt::Debug for Secret128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Services a subscriber may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Group (talkgroup) calls.
    pub group_call: bool,
    /// Private (unit-to-unit) calls.
    pub private_call: bool,
    /// Emergency calls.
    pub emergency: bool,
    /// Short data.
    pub short_data: bool,
    /// Telephone interconnect.
    pub interconnect: bool,
}

impl Permissions {
    /// Every permission.
    pub const ALL: Permissions = Permissions {
        group_call: true,
        private_call: true,
        emergency: true,
        short_data: true,
        interconnect: true,
    };

    /// Whether these permissions allow the gateway request `request`
    /// (`PROTOCOL.md §5.6`, the one table of which request needs which permission):
    /// group calls and affiliation need `group`, private calls and call alerts
    /// `private`, emergency calls `emergency`, status messages and short data `data`.
    /// `interconnect` gates no request of protocol v1. Every other request (registration,
    /// PTT, cancel, deregistration) needs none.
    pub fn allows(&self, request: crate::protocol::MessageType) -> bool {
        use crate::protocol::MessageType as T;
        match request {
            T::GroupCallReq | T::Affiliate => self.group_call,
            T::PrivateCallReq | T::CallAlertReq => self.private_call,
            T::EmergencyCallReq => self.emergency,
            T::StatusReq | T::ShortDataReq => self.short_data,
            _ => true,
        }
    }

    /// Parses a `;`- or `,`-separated list of `group`, `private`, `emergency`, `data`,
    /// `interconnect`, or `all`, or `none`.
    /// An empty text or an empty item (`group;`) is refused: write `none` for none.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Permissions::default();
        if s.trim().is_empty() {
            return Err("permissions are empty (write `none` for no permissions)".into());
        }
        for word in list_items(s, "permission")? {
            match word {
                "all" => p = Permissions::ALL,
                "none" => {}
                "group" => p.group_call = true,
                "private" => p.private_call = true,
                "emergency" => p.emergency = true,
                "data" => p.short_data = true,
                "interconnect" => p.interconnect = true,
                other => {
                    return Err(format!(
                        "unknown permission `{other}` (use group, private, emergency, data, interconnect, all, none)"
                    ))
                }
            }
        }
        Ok(p)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.group_call, "group"),
            (self.private_call, "private"),
            (self.emergency, "emergency"),
            (self.short_data, "data"),
            (self.interconnect, "interconnect"),
        ];
        let on: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(";"))
        }
    }
}

/// A provisioned subscriber, as the HLR holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// Subscriber identity (unique).
    pub imsi: Imsi,
    /// Equipment identity (unique, Luhn-checked).
    pub imei: Imei,
    /// Telephone number, at most 15 digits (unique when set).
    pub msisdn: Option<String>,
    /// The name dispatchers know it by ("Car 12"), 1 to 32 printable characters.
    pub alias: Option<String>,
    /// Fleet and member (member unique within the fleet).
    pub unit: Unit,
    /// Dispatch identity handed out at registration (unique).
    pub individual: IndividualId,
    /// Authentication key K.
    pub k: Secret128,
    /// Operator variant key OPc.
    pub opc: Secret128,
    /// Priority level 0..=15, higher first.
    pub priority: u8,
    /// Services allowed.
    pub permissions: Permissions,
    /// Refused service while true.
    pub inhibited: bool,
    /// Talkgroups the unit may affiliate to, at least one; the first is its default primary.
    pub talkgroups: Vec<TalkgroupId>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

/// A subscriber to provision. `imsi` and `individual` are assigned when `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSubscriber {
    /// Equipment identity; must pass the Luhn check.
    pub imei: Imei,
    /// Subscriber identity, or `None` to assign the next free one.
    pub imsi: Option<Imsi>,
    /// Telephone number.
    pub msisdn: Option<String>,
    /// The name dispatchers know it by.
    pub alias: Option<String>,
    /// Fleet and member.
    pub unit: Unit,
    /// Dispatch identity, or `None` to assign the next free one.
    pub individual: Option<IndividualId>,
    /// K.
    pub k: Secret128,
    /// OPc.
    pub opc: Secret128,
    /// Priority 0..=15.
    pub priority: u8,
    /// Services allowed.
    pub permissions: Permissions,
    /// Permitted talkgroups, at least one, first = default primary.
    pub talkgroups: Vec<TalkgroupId>,
}

/// A fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// Fleet id.
    pub id: FleetId,
    /// Name.
    pub name: String,
}

/// A talkgroup within its fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Talkgroup {
    /// The fleet.
    pub fleet: FleetId,
    /// Talkgroup id within the fleet.
    pub id: TalkgroupId,
    /// Name.
    pub name: String,
}

/// A site (base station) and its link key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Site id.
    pub id: SiteId,
    /// Name.
    pub name: String,
    /// Carriers at the site.
    pub carriers: u8,
    /// TDMA slots per carrier: 6, 4, 3 or 2.
    pub slots_per_carrier: u8,
    /// The link's pre-shared key (redacted in `Debug`).
    pub key: SiteKey,
}

/// The items of a `;`- or `,`-separated list, trimmed. An empty item (`10;`, `10;;11`)
/// is refused, naming the list: it is how a file cut short or a stray separator looks.
/// An empty text is an empty list.
pub fn list_items<'a>(s: &'a str, what: &str) -> Result<Vec<&'a str>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<&str> = s.split([';', ',']).map(str::trim).collect();
    if items.iter().any(|w| w.is_empty()) {
        return Err(format!("{what} list `{s}` has an empty item"));
    }
    Ok(items)
}
