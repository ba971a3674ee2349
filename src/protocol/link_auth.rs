//! Link authentication (`PROTOCOL.md §3`): the gateway proves it holds the site's
//! pre-shared key with HMAC-SHA-256 over a domain-separation label, the controller's
//! nonce and the site id. Verification is constant-time.
//!
//! ```
//! use trunkd::protocol::{link_mac, verify_link_mac, SiteId, SiteKey};
//! let key = SiteKey::from_bytes([7u8; 32]);
//! let site = SiteId::new(12).unwrap();
//! let nonce = [1u8; 32];
//! let mac = link_mac(&key, &nonce, site);
//! assert!(verify_link_mac(&key, &nonce, site, &mac));
//! // Another key, another site or another nonce gives another answer.
//! assert!(!verify_link_mac(&SiteKey::from_bytes([8u8; 32]), &nonce, site, &mac));
//! assert!(!verify_link_mac(&key, &nonce, SiteId::new(13).unwrap(), &mac));
//! assert!(!verify_link_mac(&key, &[2u8; 32], site, &mac));
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

use super::ids::SiteId;

/// The 14 ASCII bytes that start every link MAC input.
pub const LINK_AUTH_LABEL: &[u8; 14] = b"trunkd-link-v1";

/// A site's 32-byte pre-shared key. Never printed: its `Debug` is redacted; equality
/// is constant-time.
#[derive(Clone)]
pub struct SiteKey([u8; 32]);

impl PartialEq for SiteKey {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}
impl Eq for SiteKey {}

/// Why a text is not a site key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteKeyError {
    /// Not 64 hex digits.
    #[error("a site key must be 64 hexadecimal digits (32 bytes)")]
    Format,
}

impl SiteKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        SiteKey(b)
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(s: &str) -> Result<Self, SiteKeyError> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| SiteKeyError::Format)?;
        Ok(SiteKey(b))
    }

    /// The raw bytes, for the MAC and the database only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in hexadecimal, for provisioning output only.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A fresh random key from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b)?;
        Ok(SiteKey(b))
    }
}

impl fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SiteKey(<redacted>)")
    }
}

fn mac_for(key: &SiteKey, nonce: &[u8; 32], site: SiteId) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    m.update(LINK_AUTH_LABEL);
    m.update(nonce);
    m.update(&site.get().to_be_bytes());
    m
}

/// The MAC a gateway sends in `LINK_RESPONSE`.
pub fn link_mac(key: &SiteKey, nonce: &[u8; 32], site: SiteId) -> [u8; 32] {
    mac_for(key, nonce, site).finalize().into_bytes().into()
}

/// Whether `mac` is right, compared in constant time.
pub fn verify_link_mac(key: &SiteKey, nonce: &[u8; 32], site: SiteId, mac: &[u8]) -> bool {
    mac_for(key, nonce, site).verify_slice(mac).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let k = SiteKey::from_bytes([0xAB; 32]);
        assert!(!format!("{k:?}").to_lowercase().contains("ab"));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let k = SiteKey::from_hex(&"0f".repeat(32)).unwrap();
        assert_eq!(k.to_hex(), "0f".repeat(32));
        assert_eq!(SiteKey::from_hex("abc"), Err(SiteKeyError::Format));
        assert_eq!(SiteKey::from_hex(&"zz".repeat(32)), Err(SiteKeyError::Format));
    }

    /// Pins the construction to a value computed independently with Python's `hmac`
    /// module (`PROTOCOL.md §7`), so a change to the input order cannot slip through.
    #[test]
    fn known_answer() {
        let mac = link_mac(&SiteKey::from_bytes([7; 32]), &[1; 32], SiteId::new(12).unwrap());
        assert_eq!(
            hex::encode(mac),
            include_str!("../../protocol/vectors/link_mac.hex").trim()
        );
    }
}
