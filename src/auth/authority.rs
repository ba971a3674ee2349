//! [`Authority`]: logs operators in, rotates and revokes their sessions, and checks the
//! access tokens of every API request, on every controller that shares the database.
//!
//! What it keeps in memory, so that checking a token reads no database: the key ring,
//! every operator (role, fleets, state, generation) and the sessions revoked lately. The
//! controller's follow of the audit log keeps them current: `operator:<name>` reloads an
//! operator, `session:<family>` with `session.revoke` revokes a session, `signing-keys`
//! reloads the key ring. A change made through this controller applies at once; one made
//! elsewhere (another controller, the CLI) within `registration.hlr_refresh_ms`.

use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use serde::Serialize;
use tracing::{info, warn};

use super::tokens::{self, Claims, KeyRing, TokenError};
use super::{password, Fleets, Operator, Role};
use crate::clock::Clock;
use crate::config::{ApiConfig, JwtAlgorithm};
use crate::hlr::HlrChange;
use crate::store::{RefreshRow, Store, StoreError};

/// What an operator holds after logging in or refreshing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Tokens {
    /// The access token (JWT), for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// The refresh token: exchange it for new tokens before the access token expires.
    pub refresh_token: String,
    /// Seconds the refresh token lives.
    pub refresh_expires_in: u64,
}

/// Who is asking, from a checked access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The operator's name.
    pub name: String,
    /// Its role now.
    pub role: Role,
    /// Its fleets now.
    pub fleets: Fleets,
    /// Its session (refresh-token family).
    pub session: String,
}

impl Principal {
    /// Whether its role is `need` or above (viewer < dispatcher < admin).
    pub fn may(&self, need: Role) -> bool {
        self.role >= need
    }
}

/// Why a login, a refresh or a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown operator, wrong password or disabled operator: one answer for all three.
    #[error("wrong operator name or password")]
    BadCredentials,
    /// The access or refresh token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token cannot be used; the text says why.
    #[error("{0}")]
    Invalid(&'static str),
    /// A refresh token was used again after it was rotated: its whole session is revoked.
    #[error("this refresh token was already used; its session is revoked")]
    Reused,
    /// The database did not answer (a login and a refresh need it; checking a token does not).
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    /// The OS random generator failed.
    #[error("the random generator failed")]
    Random,
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => AuthError::Expired,
            TokenError::Invalid(why) => AuthError::Invalid(why),
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Unavailable(e)
    }
}

/// Logs in, refreshes, revokes, checks.
pub struct Authority {
    store: Store,
    clock: Clock,
    cfg: ApiConfig,
    keys: RwLock<Arc<KeyRing>>,
    operators: DashMap<String, Operator>,
    /// Revoked sessions, with when that was heard (Unix ms) to forget them once their
    /// access tokens have expired.
    revoked: DashMap<String, i64>,
    /// Operators whose reload failed: refused until it succeeds.
    stale: DashMap<String, ()>,
    /// Operators heard removed (until one of the name is added again): a login that read
    /// one just before its removal must not bring it back.
    removed: DashMap<String, ()>,
    decoy: String,
}

impl Authority {
    /// Loads (on a first start with EdDSA, creates) the signing keys, the operators and
    /// the revoked sessions.
    pub async fn start(cfg: &ApiConfig, store: Store, clock: Clock) -> Result<Authority, AuthError> {
        if cfg.jwt_algorithm == JwtAlgorithm::EdDSA
            && !store.signing_keys().await?.iter().any(|k| k.retire_at.is_none())
        {
            store.add_signing_key("controller", None).await?;
            info!("created the API's first signing key");
        }
        Authority::load(cfg, store, clock).await
    }

    /// Loads the signing keys, the operators and the revoked sessions, and creates
    /// nothing (a standby of an HA pair; until the active node has created a signing key,
    /// it issues no tokens). Only logins, refreshes and logouts write (sessions and their
    /// audit entries).
    pub async fn load(cfg: &ApiConfig, store: Store, clock: Clock) -> Result<Authority, AuthError> {
        let decoy = tokio::task::spawn_blocking(password::decoy)
            .await
            .map_err(|_| AuthError::Random)?;
        let auth = Authority {
            store,
            clock,
            cfg: cfg.clone(),
            keys: RwLock::new(Arc::new(KeyRing::hs256(&[]))),
            operators: DashMap::new(),
            revoked: DashMap::new(),
            stale: DashMap::new(),
            removed: DashMap::new(),
            decoy,
        };
        auth.reload_keys().await?;
        for op in auth.store.operators().await? {
            auth.operators.insert(op.name.clone(), op);
        }
        let now = clock.unix_ms();
        for family in auth.store.revoked_sessions().await? {
            auth.revoked.insert(family, now);
        }
        Ok(auth)
    }

    /// Applies a change heard by following the audit log ([`crate::hlr::HlrCache::take_changes`]):
    /// an operator's (reloaded), a revoked session, rotated signing keys (reloaded).
    /// `None` for a change that is not the API's; else whether the reload succeeded.
    pub async fn hear(&self, change: &HlrChange) -> Option<Result<(), StoreError>> {
        match change {
            HlrChange::Operator(name) => Some(self.reload_operator(name).await),
            HlrChange::SessionRevoked(family) => {
                self.session_revoked(family);
                Some(Ok(()))
            }
            HlrChange::SigningKeys => Some(self.reload_keys().await),
            HlrChange::Inhibited(..) | HlrChange::Removed(_) | HlrChange::Parameters => None,
        }
    }

    /// Reloads the key ring (after a rotation).
    pub async fn reload_keys(&self) -> Result<(), StoreError> {
        let ring = match self.cfg.jwt_algorithm {
            JwtAlgorithm::EdDSA => KeyRing::ed25519(&self.store.signing_keys().await?),
            // Checked by the configuration.
            JwtAlgorithm::HS256 => KeyRing::hs256(&self.cfg.hs256_key().unwrap_or_default()),
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads an operator after a change to it. If that fails, its tokens are refused
    /// until a reload succeeds (it fails closed); [`Authority::retry_reloads`] tries
    /// again. While the database is read, the operator as it was stays in force, as it
    /// would had the change not been heard yet.
    pub async fn reload_operator(&self, name: &str) -> Result<(), StoreError> {
        match self.store.operator_credentials(name).await {
            Ok(found) => {
                match found {
                    Some((op, _)) => {
                        self.removed.remove(name);
                        self.operators.insert(name.to_string(), op);
                    }
                    None => {
                        self.removed.insert(name.to_string(), ());
                        self.operators.remove(name);
                    }
                }
                self.stale.remove(name);
                Ok(())
            }
            Err(e) => {
                self.operators.remove(name);
                self.stale.insert(name.to_string(), ());
                Err(e)
            }
        }
    }

    /// Keeps `op`, just read from the database, unless a newer generation is kept: so
    /// that the tokens of an operator created a moment ago by another process open the
    /// API at once, not only after the audit-log follow has heard of it.
    fn heard(&self, op: &Operator) {
        if self.removed.contains_key(&op.name) {
            return;
        }
        self.operators
            .entry(op.name.clone())
            .and_modify(|kept| {
                if kept.generation < op.generation {
                    *kept = op.clone();
                }
            })
            .or_insert_with(|| op.clone());
        // A removal heard meanwhile (its mark is set before it takes the operator out)
        // wins.
        if self.removed.contains_key(&op.name) {
            self.operators.remove(&op.name);
        }
    }

    /// Retries the reloads of operators that failed; `None` when there are none (so
    /// that nothing is reported about a database that was not asked).
    pub async fn retry_reloads(&self) -> Option<Result<(), StoreError>> {
        let names: Vec<String> = self.stale.iter().map(|e| e.key().clone()).collect();
        if names.is_empty() {
            return None;
        }
        for name in names {
            if let Err(e) = self.reload_operator(&name).await {
                return Some(Err(e));
            }
        }
        Some(Ok(()))
    }

    /// Hears that a session was revoked.
    pub fn session_revoked(&self, family: &str) {
        let now = self.clock.unix_ms();
        // Its access tokens are all expired by then; forget older revocations.
        let horizon = now - (self.cfg.access_token_ttl_s as i64 + tokens::LEEWAY_S as i64) * 1000;
        self.revoked.retain(|_, at| *at > horizon);
        self.revoked.insert(family.to_string(), now);
    }

    /// The public signing keys (JWK set).
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.ring().jwks(self.clock.unix_ms())
    }

    /// Logs `name` in with `password`: new tokens in a new session, or
    /// [`AuthError::BadCredentials`] after about the same time whatever was wrong.
    pub async fn login(&self, name: &str, password: &str, client: &str) -> Result<Tokens, AuthError> {
        let found = if super::check_name(name).is_ok() {
            self.store.operator_credentials(name).await?
        } else {
            None
        };
        let hash = found
            .as_ref()
            .map_or_else(|| self.decoy.clone(), |(_, h)| h.clone());
        let pw = password.to_string();
        let matches = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
            .await
            .unwrap_or(false);
        let op = match found {
            Some((op, _)) if matches && !op.disabled => op,
            _ => {
                warn!(operator = %name, client, "failed login");
                return Err(AuthError::BadCredentials);
            }
        };
        self.heard(&op);
        let family = tokens::random_id().map_err(|_| AuthError::Random)?;
        let tokens = self.issue(&op, &family, false).await?;
        self.store
            .audit(
                &format!("api:{}", op.name),
                "session.login",
                &format!("session:{family}"),
                &format!("client={client}"),
            )
            .await?;
        info!(operator = %op.name, client, "login");
        Ok(tokens)
    }

    /// Exchanges a refresh token for new tokens; the old one is spent. A spent token used
    /// again revokes its session, unless within the grace window of its rotation.
    pub async fn refresh(&self, refresh_token: &str, client: &str) -> Result<Tokens, AuthError> {
        let row = self
            .store
            .refresh_token(&tokens::refresh_hash(refresh_token))
            .await?
            .ok_or(AuthError::Invalid("unknown refresh token"))?;
        let now = self.clock.unix_ms();
        if row.revoked {
            return Err(AuthError::Invalid("the session was revoked"));
        }
        if row.expires_at <= now {
            return Err(AuthError::Expired);
        }
        if let Some(rotated) = row.rotated_at {
            if now - rotated > self.cfg.refresh_reuse_grace_s as i64 * 1000 {
                warn!(operator = %row.operator, client, session = %row.family, "refresh token reused: session revoked");
                self.revoke(
                    &row.operator,
                    &row.family,
                    &format!("refresh token reused client={client}"),
                )
                .await?;
                return Err(AuthError::Reused);
            }
        }
        let op = match self.store.operator_credentials(&row.operator).await? {
            Some((op, _)) if !op.disabled && op.generation == row.generation => op,
            _ => return Err(AuthError::Invalid("the session was revoked")),
        };
        self.heard(&op);
        self.issue(&op, &row.family, true).await
    }

    /// Ends the session of `refresh_token` (its refresh and access tokens).
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AuthError> {
        let row = self
            .store
            .refresh_token(&tokens::refresh_hash(refresh_token))
            .await?
            .ok_or(AuthError::Invalid("unknown refresh token"))?;
        self.revoke(&row.operator, &row.family, "logout").await
    }

    /// Ends `principal`'s session.
    pub async fn end_session(&self, principal: &Principal) -> Result<(), AuthError> {
        self.revoke(&principal.name, &principal.session, "logout").await
    }

    async fn revoke(&self, operator: &str, family: &str, why: &str) -> Result<(), AuthError> {
        self.store
            .revoke_session(&format!("api:{operator}"), family, why)
            .await?;
        self.session_revoked(family);
        Ok(())
    }

    /// New tokens for `op` in session `family`.
    async fn issue(&self, op: &Operator, family: &str, rotating: bool) -> Result<Tokens, AuthError> {
        let now = self.clock.unix_ms();
        let (refresh_token, hash) = tokens::new_refresh_token().map_err(|_| AuthError::Random)?;
        let row = RefreshRow {
            hash: hash.to_vec(),
            family: family.to_string(),
            operator: op.name.clone(),
            generation: op.generation,
            expires_at: now + self.cfg.refresh_token_ttl_s as i64 * 1000,
            rotated_at: None,
            revoked: false,
        };
        let now_s = (now / 1000) as u64;
        let claims = Claims {
            iss: tokens::ISSUER.into(),
            aud: tokens::AUDIENCE.into(),
            sub: op.name.clone(),
            role: op.role,
            fleets: op.fleets.ids().iter().map(|f| f.get()).collect(),
            generation: op.generation,
            sid: family.to_string(),
            jti: tokens::random_id().map_err(|_| AuthError::Random)?,
            iat: now_s,
            nbf: now_s,
            exp: now_s + self.cfg.access_token_ttl_s,
        };
        let access_token = self.ring().sign(&claims)?;
        self.store.put_refresh_token(&row, rotating).await?;
        Ok(Tokens {
            access_token,
            token_type: "Bearer",
            expires_in: self.cfg.access_token_ttl_s,
            refresh_token,
            refresh_expires_in: self.cfg.refresh_token_ttl_s,
        })
    }

    /// Checks an access token: signature, type, issuer, audience and times, then that its
    /// operator still exists, is enabled and unchanged, and its session was not revoked.
    pub fn authenticate(&self, access_token: &str) -> Result<Principal, AuthError> {
        let claims = self.ring().check(access_token, self.clock.unix_ms())?;
        let op = self
            .operators
            .get(&claims.sub)
            .ok_or(AuthError::Invalid("the operator no longer exists"))?;
        if op.disabled {
            return Err(AuthError::Invalid("the operator is disabled"));
        }
        if op.generation != claims.generation {
            return Err(AuthError::Invalid(
                "the operator changed since the token was issued",
            ));
        }
        if self.revoked.contains_key(&claims.sid) {
            return Err(AuthError::Invalid("the session was revoked"));
        }
        Ok(Principal {
            name: op.name.clone(),
            role: op.role,
            fleets: op.fleets.clone(),
            session: claims.sid,
        })
    }
}
