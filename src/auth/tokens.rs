//! Access tokens (JWT, RFC 9068 `at+jwt`) and refresh tokens.
//!
//! An access token is signed with the configured algorithm only: EdDSA (Ed25519 keys kept
//! in the database, each with a `kid`, public halves published as a JWK set) or HS256
//! (one secret from the configuration). Checking one follows RFC 8725 and the OWASP JWT
//! cheat sheet: the algorithm is pinned (any other `alg`, `none` in any spelling, or a
//! `kid` not in the key ring is refused before the signature is looked at), `typ` must be
//! `at+jwt`, and `iss`, `aud`, `exp` and `nbf` are checked with [`LEEWAY_S`] seconds of
//! leeway against the controller's clock.
//!
//! A refresh token is 32 random bytes (hex, prefixed `rt_`); the database keeps only its
//! SHA-256.

use std::collections::HashMap;

use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Role;

/// Who issues tokens (`iss`).
pub const ISSUER: &str = "trunkd";
/// Who accepts them (`aud`).
pub const AUDIENCE: &str = "trunkd-api";
/// The media type of an access token (RFC 9068 §2.1).
pub const TYP: &str = "at+jwt";
/// Clock skew allowed on `exp` and `nbf`, seconds.
pub const LEEWAY_S: u64 = 5;

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// [`ISSUER`].
    pub iss: String,
    /// [`AUDIENCE`].
    pub aud: String,
    /// The operator's name.
    pub sub: String,
    /// Its role when issued.
    pub role: Role,
    /// Its fleets when issued; empty: every fleet.
    pub fleets: Vec<u16>,
    /// The operator's generation when issued (a later change refuses the token).
    pub generation: i64,
    /// The session (refresh-token family) the token belongs to.
    pub sid: String,
    /// Token id.
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expires, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused. The message is safe to show to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Expired (or not valid yet).
    #[error("the token has expired")]
    Expired,
    /// Anything else: malformed, wrong algorithm, unknown key, bad signature, wrong type,
    /// issuer or audience.
    #[error("{0}")]
    Invalid(&'static str),
}

/// A signing key as the database holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Key id: the first 16 hex digits of the SHA-256 of the public key.
    pub kid: String,
    /// PKCS#8 v1 DER of the Ed25519 private key.
    pub private_key: Vec<u8>,
    /// The raw 32-byte public key.
    pub public_key: Vec<u8>,
    /// Unix ms.
    pub created_at: i64,
    /// After this (Unix ms) the key validates nothing; `None`: current.
    pub retire_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

/// A fresh Ed25519 key pair from the OS's CSPRNG.
pub fn new_key(created_at: i64) -> Result<KeyRow, getrandom::Error> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    seed.fill(0);
    let public_key = key.verifying_key().to_bytes().to_vec();
    let der = key
        .to_pkcs8_der()
        .map_err(|_| getrandom::Error::UNSUPPORTED)?
        .as_bytes()
        .to_vec();
    Ok(KeyRow {
        kid: hex::encode(&Sha256::digest(&public_key)[..8]),
        private_key: der,
        public_key,
        created_at,
        retire_at: None,
    })
}

/// The public half of `key` as a JWK (RFC 8037 §2: `kty` OKP, `crv` Ed25519, `x`).
fn public_jwk(key: &KeyRow) -> Jwk {
    use base64::Engine;
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_id: Some(key.kid.clone()),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key.public_key),
        }),
    }
}

/// The keys that sign and check access tokens.
pub struct KeyRing {
    alg: Algorithm,
    /// The current signing key.
    signing: Option<(String, EncodingKey)>,
    /// By kid: the key and when it retires (Unix ms).
    checking: HashMap<String, (DecodingKey, Option<i64>)>,
    /// The public keys, with when each retires.
    public: Vec<(Jwk, Option<i64>)>,
}

/// The `kid` of the HS256 secret.
const HS256_KID: &str = "hs256";

impl KeyRing {
    /// One HMAC secret (at least 32 bytes, checked by the configuration).
    pub fn hs256(secret: &[u8]) -> KeyRing {
        KeyRing {
            alg: Algorithm::HS256,
            signing: Some((HS256_KID.into(), EncodingKey::from_secret(secret))),
            checking: HashMap::from([(HS256_KID.into(), (DecodingKey::from_secret(secret), None))]),
            public: Vec::new(),
        }
    }

    /// Ed25519 keys: each checks tokens until it retires; the newest current one signs.
    pub fn ed25519(rows: &[KeyRow]) -> KeyRing {
        let mut rows: Vec<&KeyRow> = rows.iter().collect();
        rows.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        let mut ring = KeyRing {
            alg: Algorithm::EdDSA,
            signing: None,
            checking: HashMap::new(),
            public: Vec::new(),
        };
        for r in rows {
            let enc = EncodingKey::from_ed_der(&r.private_key);
            ring.checking.insert(
                r.kid.clone(),
                (DecodingKey::from_ed_der(&r.public_key), r.retire_at),
            );
            ring.public.push((public_jwk(r), r.retire_at));
            if r.retire_at.is_none() {
                ring.signing = Some((r.kid.clone(), enc));
            }
        }
        ring
    }

    /// The public keys not retired at `now_ms` (none for HS256: its secret is never
    /// published).
    pub fn jwks(&self, now_ms: i64) -> JwkSet {
        JwkSet {
            keys: self
                .public
                .iter()
                .filter(|(_, retire)| retire.is_none_or(|t| t > now_ms))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    /// The `kid` that signs now.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signing.as_ref().map(|(k, _)| k.as_str())
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let (kid, key) = self
            .signing
            .as_ref()
            .ok_or(TokenError::Invalid("no signing key"))?;
        let mut header = Header::new(self.alg);
        header.typ = Some(TYP.into());
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|_| TokenError::Invalid("signing failed"))
    }

    /// Checks `token` at `now_ms` (Unix ms) and returns its claims.
    pub fn check(&self, token: &str, now_ms: i64) -> Result<Claims, TokenError> {
        // RFC 8725 §3.1: the header is judged before the signature, against what this
        // controller is configured for, never against what the token says it is.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("malformed token or unknown algorithm"))?;
        if header.alg != self.alg {
            return Err(TokenError::Invalid("token signed with another algorithm"));
        }
        if header.typ.as_deref() != Some(TYP) {
            return Err(TokenError::Invalid("not an access token (typ must be at+jwt)"));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|k| self.checking.get(k))
            .filter(|(_, retire)| retire.is_none_or(|t| t > now_ms))
            .map(|(key, _)| key)
            .ok_or(TokenError::Invalid("token signed with an unknown key"))?;
        let mut v = Validation::new(self.alg);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Times are checked below on the controller's clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Invalid("bad signature"),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer"),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience"),
                _ => TokenError::Invalid("malformed token"),
            })?
            .claims;
        let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
        if claims.exp.saturating_add(LEEWAY_S) <= now_s || claims.nbf > now_s + LEEWAY_S {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// A new refresh token and the SHA-256 the database keeps of it.
pub fn new_refresh_token() -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    let token = format!("rt_{}", hex::encode(b));
    let hash = refresh_hash(&token);
    Ok((token, hash))
}

/// What the database keeps of a refresh token.
pub fn refresh_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A random id (sessions, token ids): 16 bytes as hex.
pub fn random_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "alice".into(),
            role: Role::Admin,
            fleets: vec![],
            generation: 1,
            sid: "s".into(),
            jti: "j".into(),
            iat: now,
            nbf: now,
            exp: now + 900,
        }
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn a_token_checks_until_it_expires() {
        let ring = KeyRing::ed25519(&[new_key(0).unwrap()]);
        let t = ring.sign(&claims(1000)).unwrap();
        assert_eq!(ring.check(&t, 1_000_000).unwrap(), claims(1000));
        assert_eq!(
            ring.check(&t, (1000 + 900 + LEEWAY_S as i64) * 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            ring.check(&t, (1000 - 60) * 1000),
            Err(TokenError::Expired),
            "not before"
        );
    }

    #[test]
    fn another_key_another_algorithm_none_and_tampering_are_refused() {
        let ring = KeyRing::ed25519(&[new_key(0).unwrap()]);
        let other = KeyRing::ed25519(&[new_key(0).unwrap()]);
        let t = other.sign(&claims(1000)).unwrap();
        assert_eq!(
            ring.check(&t, 1_000_000),
            Err(TokenError::Invalid("token signed with an unknown key"))
        );

        let hs = KeyRing::hs256(&[7u8; 32]);
        let t = hs.sign(&claims(1000)).unwrap();
        assert_eq!(
            ring.check(&t, 1_000_000),
            Err(TokenError::Invalid("token signed with another algorithm"))
        );

        let good = ring.sign(&claims(1000)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(&format!(
                r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#,
                ring.signing_kid().unwrap()
            ));
            for sig in ["", parts[2]] {
                let t = format!("{header}.{}.{sig}", parts[1]);
                assert!(ring.check(&t, 1_000_000).is_err(), "{alg}");
            }
        }

        let mut c = claims(1000);
        c.role = Role::Viewer;
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_string(&c).unwrap()),
            parts[2]
        );
        assert_eq!(
            ring.check(&forged, 1_000_000),
            Err(TokenError::Invalid("bad signature"))
        );
        assert!(ring.check("not a token", 1_000_000).is_err());
        assert!(ring.check("", 1_000_000).is_err());
    }

    #[test]
    fn the_type_issuer_and_audience_are_checked() {
        let ring = KeyRing::hs256(&[9u8; 32]);
        let mut c = claims(1000);
        c.aud = "someone-else".into();
        assert_eq!(
            ring.check(&ring.sign(&c).unwrap(), 1_000_000),
            Err(TokenError::Invalid("wrong audience"))
        );
        let mut c = claims(1000);
        c.iss = "mallory".into();
        assert_eq!(
            ring.check(&ring.sign(&c).unwrap(), 1_000_000),
            Err(TokenError::Invalid("wrong issuer"))
        );
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(HS256_KID.into());
        let t = jsonwebtoken::encode(&header, &claims(1000), &EncodingKey::from_secret(&[9u8; 32])).unwrap();
        assert_eq!(
            ring.check(&t, 1_000_000),
            Err(TokenError::Invalid("not an access token (typ must be at+jwt)"))
        );
    }

    #[test]
    fn retired_keys_check_nothing_and_the_newest_signs() {
        let mut old = new_key(0).unwrap();
        let new = new_key(10).unwrap();
        old.retire_at = Some(5_000);
        let ring = KeyRing::ed25519(&[old.clone(), new.clone()]);
        assert_eq!(ring.signing_kid(), Some(new.kid.as_str()));
        assert_eq!(ring.jwks(1_000).keys.len(), 2);
        let old_ring = KeyRing::ed25519(&[KeyRow {
            retire_at: None,
            ..old.clone()
        }]);
        let t = old_ring.sign(&claims(1)).unwrap();
        assert!(
            ring.check(&t, 1_000).is_ok(),
            "the old key checks until it retires"
        );
        assert!(ring.check(&t, 5_000).is_err());
        assert_eq!(ring.jwks(5_000).keys.len(), 1);
    }

    #[test]
    fn refresh_tokens_are_random_and_only_their_hash_is_kept() {
        let (a, ha) = new_refresh_token().unwrap();
        let (b, _) = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(refresh_hash(&a), ha);
        assert!(a.starts_with("rt_") && a.len() == 67);
    }
}
