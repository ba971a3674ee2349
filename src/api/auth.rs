//! `/api/v1/auth`: log in, refresh, log out, who am I, and the public keys.
//!
//! Logins are limited per operator name and per client address
//! (`api.login_attempts_per_minute` each, as a burst then a steady rate; governor's
//! GCRA): one more gets 429 with `Retry-After`, before any password is checked. A name
//! can thus be locked out by someone else's attempts for at most a minute; the address
//! limit stops one client from trying many names.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::openapi::{BadRequest, BodyRefused, RateLimited, Unauthorized};
use super::{ApiError, ApiRoutes, ApiState, Body, Caller};
use crate::auth::{Role, Tokens};

/// `POST /login`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The operator's name.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// `POST /refresh`'s body (and `POST /logout`'s, optional there).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// The refresh token.
    pub refresh_token: String,
}

/// `GET /whoami`: the caller as the controller sees it now.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Fleets; empty: every fleet.
    pub fleets: Vec<u16>,
}

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(whoami))
        .routes(routes!(jwks))
}

/// `GET /jwks.json`'s answer as documented: a JSON Web Key Set (RFC 7517), served from
/// `jsonwebtoken`'s `JwkSet`.
#[derive(ToSchema)]
pub struct JwkSetJson {
    /// The keys that check access tokens now; empty with HS256.
    pub keys: Vec<JwkJson>,
}

/// One public key (RFC 7517 §4, RFC 8037 for Ed25519).
#[derive(ToSchema)]
pub struct JwkJson {
    /// Key type: `OKP` for Ed25519.
    pub kty: String,
    /// Key id, as in the tokens' `kid`.
    pub kid: Option<String>,
    /// Algorithm: `EdDSA`.
    pub alg: Option<String>,
    /// Curve: `Ed25519`.
    pub crv: Option<String>,
    /// The public key, base64url.
    pub x: Option<String>,
}

/// The login rate limits.
pub struct LoginLimits {
    by_name: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<std::net::IpAddr>,
}

impl LoginLimits {
    /// `per_minute` attempts per name and per address (at least 1).
    pub fn new(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        LoginLimits {
            by_name: RateLimiter::keyed(quota),
            by_address: RateLimiter::keyed(quota),
        }
    }

    /// One attempt for `name` from `addr`: `Err(seconds to wait)` when over either limit.
    fn attempt(&self, name: &str, addr: std::net::IpAddr) -> Result<(), u64> {
        let now = DefaultClock::default().now();
        let wait = |n: governor::NotUntil<_>| n.wait_time_from(now).as_secs().max(1);
        // Forget quiet keys now and then, so that many names cannot grow the maps.
        if self.by_name.len() > 10_000 {
            self.by_name.retain_recent();
        }
        if self.by_address.len() > 10_000 {
            self.by_address.retain_recent();
        }
        self.by_address.check_key(&addr).map_err(wait)?;
        self.by_name.check_key(&name.to_string()).map_err(wait)?;
        Ok(())
    }
}

/// Logs in: an access token and a refresh token.
#[utoipa::path(
    post,
    path = "/login",
    tag = "auth",
    security(()),
    request_body = Login,
    responses(
        (status = 200, description = "A new session's tokens", body = Tokens),
        BadRequest,
        (status = 401, description = "`invalid_credentials`: a wrong password, an unknown name \
            or a disabled operator, alike", body = ApiError),
        BodyRefused,
        RateLimited,
    )
)]
async fn login(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(body): Body<Login>,
) -> Result<Json<Tokens>, ApiError> {
    s.limits
        .attempt(&body.username, peer.ip())
        .map_err(ApiError::too_many)?;
    let client = peer.ip().to_string();
    Ok(Json(s.auth.login(&body.username, &body.password, &client).await?))
}

/// Exchanges a refresh token for new tokens; the one given is spent.
#[utoipa::path(
    post,
    path = "/refresh",
    tag = "auth",
    security(()),
    request_body = Refresh,
    responses(
        (status = 200, description = "New tokens of the same session", body = Tokens),
        BadRequest,
        (status = 401, description = "`invalid_token`, `token_expired`, or \
            `refresh_token_reused` (the session is revoked)", body = ApiError),
        BodyRefused,
    )
)]
async fn refresh(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(body): Body<Refresh>,
) -> Result<Json<Tokens>, ApiError> {
    Ok(Json(
        s.auth
            .refresh(&body.refresh_token, &peer.ip().to_string())
            .await?,
    ))
}

/// Ends a session: the one of the refresh token in the body, or else the caller's.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "auth",
    security((), ("bearer" = [])),
    request_body(content = Option<Refresh>, description = "The refresh token of the session \
        to end; without a body (or with `null`), the session of the access token"),
    responses(
        (status = 204, description = "The session is over"),
        BadRequest,
        Unauthorized,
        BodyRefused,
    )
)]
async fn logout(
    State(s): State<ApiState>,
    caller: Result<Caller, ApiError>,
    body: Option<Body<Option<Refresh>>>,
) -> Result<StatusCode, ApiError> {
    // A body of `null` is no body.
    match body {
        Some(Body(Some(r))) => s.auth.logout(&r.refresh_token).await?,
        _ => s.auth.end_session(&caller?.0).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The caller as the controller sees it now.
#[utoipa::path(
    get,
    path = "/whoami",
    tag = "auth",
    responses((status = 200, description = "The caller", body = WhoAmI), Unauthorized)
)]
async fn whoami(caller: Caller) -> Json<WhoAmI> {
    let p = caller.0;
    Json(WhoAmI {
        name: p.name,
        role: p.role,
        fleets: p.fleets.ids().iter().map(|f| f.get()).collect(),
    })
}

/// The public keys that check access tokens (EdDSA).
#[utoipa::path(
    get,
    path = "/jwks.json",
    tag = "auth",
    security(()),
    responses((status = 200, description = "A JSON Web Key Set", body = JwkSetJson))
)]
async fn jwks(State(s): State<ApiState>) -> Json<jsonwebtoken::jwk::JwkSet> {
    Json(s.auth.jwks())
}
