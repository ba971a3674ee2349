//! The operator API: HTTP and JSON on axum, served by `trunkd serve` on `api.listen`, on
//! the same runtime as the site link. Every route calls the [`ControllerHandle`], never
//! the controller's internals.
//!
//! - `GET /healthz`: no token (liveness, whether the database answers).
//! - `GET /metrics`: no token either, for Prometheus scrapers (the API listens on
//!   loopback by default): the Prometheus text format of
//!   [`ControllerHandle::metrics`], every metric listed in the README.
//! - `/api/v1/auth/…` ([`auth`]): log in, refresh, log out, the public keys.
//! - `GET /api/v1/events` ([`events`]): the live event stream (Server-Sent Events),
//!   opened with a token or a single-use ticket (`POST /api/v1/events/ticket`).
//! - `/api/v1/alarms` ([`alarms`]): alarms, and acknowledging them.
//! - Everything else under `/api/v1` needs `Authorization: Bearer <access token>`: a
//!   [`Caller`] in a handler's arguments checks it (401 when it is missing or refused)
//!   and [`Caller::require`] checks the role (403).
//!
//! Every error is JSON ([`ApiError`]): a stable `code`, a `message`, and the `field` at
//! fault where there is one. A body larger than `api.body_limit` is refused with 413;
//! a request not answered within `api.request_timeout_ms` with 503.

pub mod alarms;
pub mod auth;
pub mod commands;
pub mod events;
pub mod live;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::auth::{AuthError, Principal, Role};
use crate::config::ApiConfig;
use crate::controller::{AlarmKind, Answer, ControllerHandle, Query, QueryError};

/// An error as every route answers it: a stable `code`, a `message` for people, and the
/// `field` at fault where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// Stable, machine-readable: `not_found`, `invalid_token`, `forbidden`, …
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The body field, parameter or path segment at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    status: StatusCode,
    /// Seconds to wait, for 429.
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            status,
            retry_after: None,
        }
    }

    /// 400 `invalid` naming the `field` at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// 403: the caller's role or fleets do not allow it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many(retry_after_s: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after_s),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many attempts; try again later",
            )
        }
    }

    /// 500: something that cannot happen did.
    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the controller gave an unexpected answer",
        )
    }

    /// A refused query: 404 for what does not exist, 400 naming `field` for the rest.
    pub fn from_query(e: QueryError, field: &str) -> Self {
        match e {
            QueryError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            QueryError::Invalid(m) => ApiError::invalid(field, m),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry, unauthorized) = (
            self.status,
            self.retry_after,
            self.status == StatusCode::UNAUTHORIZED,
        );
        let mut r = (status, Json(self)).into_response();
        if let Some(s) = retry {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        if unauthorized {
            // RFC 6750 §3.
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"trunkd\""),
            );
        }
        r
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let unauthorized = |code| ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string());
        match &e {
            AuthError::BadCredentials => unauthorized("invalid_credentials"),
            AuthError::Expired => unauthorized("token_expired"),
            AuthError::Invalid(_) => unauthorized("invalid_token"),
            AuthError::Reused => unauthorized("refresh_token_reused"),
            AuthError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
            }
            AuthError::Random => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

/// What every route shares.
#[derive(Clone)]
pub struct ApiState {
    handle: ControllerHandle,
    limits: Arc<auth::LoginLimits>,
    tickets: Arc<events::Tickets>,
}

/// A JSON body, refused with a JSON [`ApiError`] naming the field at fault (where
/// axum's own `Json` answers in plain text).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the body is larger than allowed",
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_body", "the body could not be read")
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", inner.to_string());
            if path != "." {
                err.field = Some(path);
            } else if let Some(f) = missing_field(&inner.to_string()) {
                err.field = Some(f);
            }
            err
        })?;
        de.end()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?;
        Ok(Body(value))
    }
}

/// A body that may be left out: `None` when the request has no `Content-Type`.
impl<S: Send + Sync, T: DeserializeOwned> axum::extract::OptionalFromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        if req.headers().get(CONTENT_TYPE).is_none() {
            return Ok(None);
        }
        <Body<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// A URI's query string as `T`: 400 naming the parameter at fault.
pub fn query_params<T: DeserializeOwned + Default>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    let Some(q) = uri.query().filter(|q| !q.is_empty()) else {
        return Ok(T::default());
    };
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path != "." {
            Some(path)
        } else {
            unknown_field(&inner).or_else(|| missing_field(&inner))
        };
        ApiError {
            field,
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", inner)
        }
    })
}

/// The field serde names in "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The field serde names in "missing field `x`".
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The operator behind a request, from its `Authorization: Bearer` access token.
pub struct Caller(pub Principal);

impl Caller {
    /// 403 unless the caller's role is `need` or above.
    pub fn require(&self, need: Role) -> Result<&Principal, ApiError> {
        if self.0.may(need) {
            Ok(&self.0)
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {need} role; {} is {}",
                self.0.name, self.0.role
            )))
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        Ok(Caller(state.handle.authenticate(bearer(&parts.headers)?)?))
    }
}

/// The access token of an `Authorization: Bearer` header, not yet checked: 401
/// `missing_token` without the header, `invalid_token` with another scheme.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let unauthorized = |code, m: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, m);
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing_token",
            "an access token is needed: Authorization: Bearer <token>",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| unauthorized("invalid_token", "the Authorization header must be Bearer <token>"))
}

/// What `GET /healthz` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Always `ok`: the controller answers.
    pub status: &'static str,
    /// `up`, or `down` while the database does not answer (the controller keeps serving
    /// from memory meanwhile).
    pub database: &'static str,
}

/// The API's routes over `handle`.
pub fn router(handle: ControllerHandle, cfg: &ApiConfig) -> Router {
    let state = ApiState {
        handle,
        limits: Arc::new(auth::LoginLimits::new(cfg.login_attempts_per_minute)),
        tickets: Arc::new(events::Tickets::default()),
    };
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1/auth", auth::routes())
        .nest(
            "/api/v1",
            live::routes()
                .merge(commands::routes())
                .merge(events::routes())
                .merge(alarms::routes()),
        )
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "timeout",
                        "the request was not answered in time",
                    )
                    .into_response(),
                }
            },
        ))
        .with_state(state)
}

async fn healthz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    let alarms = match state.handle.query(Query::Alarms) {
        Ok(Answer::Alarms(a)) => a,
        _ => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the controller did not answer its alarms",
            ))
        }
    };
    let down = alarms
        .iter()
        .any(|a| a.kind == AlarmKind::DatabaseUnavailable && a.is_open());
    Ok(Json(Health {
        status: "ok",
        database: if down { "down" } else { "up" },
    }))
}

/// `GET /metrics`: the Prometheus text format (version 0.0.4), without a token like
/// `/healthz`, so that a Prometheus server can scrape it.
async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let text = s.handle.metrics().encode().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the metrics could not be encoded",
        )
    })?;
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Binds the API on `addr`; warns when that is reachable from the network without TLS.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        warn!(%bound, "the operator API listens on a non-loopback address without TLS");
    }
    info!(addr = %bound, "operator API listening");
    Ok(listener)
}

/// Serves the API on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    handle: ControllerHandle,
    cfg: ApiConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(handle, &cfg).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(stop).await
}
