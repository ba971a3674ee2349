//! The operator API: HTTP and JSON on axum, served by `trunkd serve` on `api.listen`, on
//! the same runtime as the site link. Every route calls the [`ControllerHandle`], never
//! the controller's internals, or for what the database answers its [`Reads`].
//!
//! A standby of an HA group serves the same routes ([`serve_standby`]) with no controller
//! behind them: logins and reads from the database; every route that needs the running
//! controller takes it from [`ApiState::live`], which answers 503 `not_active` there.
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
//! - `GET /api/v1/openapi.json` ([`openapi`]): no token; the OpenAPI 3.1 document of
//!   every route, generated from the handlers' `#[utoipa::path]` annotations.
//! - `/console/`: the dispatch console's page and files ([`crate::console`]), no token
//!   (the page logs in through this API); not part of the API, so not in its document.
//!
//! Every error is JSON ([`ApiError`]): a stable `code`, a `message`, and the `field` at
//! fault where there is one. A body larger than `api.body_limit` is refused with 413;
//! a request not answered within `api.request_timeout_ms` with 503.
//!
//! # Adding a route
//! A route is registered together with its documentation, so that it cannot be served
//! without being in `/api/v1/openapi.json`:
//! 1. Annotate the handler, with its path relative to where its file's routes are
//!    nested (`/api/v1` for most), every parameter, the body, and every answer:
//!    ```ignore
//!    /// Sends a call alert … (the doc comment's first line becomes the summary)
//!    #[utoipa::path(
//!        post,
//!        path = "/subscribers/{imsi}/alert",
//!        tag = "commands",
//!        params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "…")),
//!        request_body = AlertBody,                  // derives utoipa::ToSchema
//!        responses(
//!            (status = 202, description = "…", body = CommandJson),
//!            BadRequest, Unauthorized, Forbidden, NotFound, BodyRefused, // openapi.rs
//!        )
//!    )]
//!    async fn alert(…) -> Result<…, ApiError> { … }
//!    ```
//!    Routes need a token by default; one that does not says `security(())`. A query
//!    struct derives `utoipa::IntoParams` (`#[into_params(parameter_in = Query)]`) and
//!    is named in `params(...)`. Every JSON type in a body or answer derives
//!    `utoipa::ToSchema`. 500 and 503 are added to every route by [`openapi`].
//! 2. Register it in its file's `routes()` (an [`ApiRoutes`]) with
//!    `.routes(routes!(alert))` (`use utoipa_axum::routes;`): one `routes!` per path
//!    (handlers of one path with different methods may share one, as
//!    `routes!(get_site, put_site, delete_site)`). [`ApiRoutes`] has no other way in.
//! 3. A new file's `routes()` is merged into this module's `routes()`, under `/api/v1`.
//! 4. Add the route to the list in `tests/api.rs`
//!    (`the_openapi_document_is_valid_and_lists_every_route`).

pub mod alarms;
pub mod auth;
pub mod commands;
pub mod events;
pub mod history;
pub mod live;
pub mod messages;
pub mod network;
pub mod openapi;
pub mod subscribers;

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
use axum::{Json, Router};
use axum_server::tls_rustls::RustlsConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use utoipa::ToSchema;
use utoipa_axum::routes;

pub use openapi::ApiRoutes;

use crate::auth::{AuthError, Authority, Principal, Role};
use crate::clock::Clock;
use crate::config::{ApiConfig, Config};
use crate::controller::{AlarmKind, Answer, ControllerHandle, Query, QueryError, Reads};
use crate::hlr::HlrCache;
use crate::store::Store;

/// An error as every route answers it: a stable `code`, a `message` for people, and the
/// `field` at fault where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
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

    /// 503 `not_active`: a standby of an HA group was asked for what only the active
    /// node does; the message names the active node's API address (`active`) if one is.
    pub fn not_active(active: Option<&str>) -> Self {
        let message = match active {
            Some(a) => format!("this node is a standby; the active node's API is at {a}"),
            None => "this node is a standby and no node is active now".to_string(),
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_active", message)
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
    /// The running controller, or what a standby knows of the active node.
    node: Node,
    /// What is read from the database.
    reads: Reads,
    /// Logins and tokens.
    auth: Arc<Authority>,
    limits: Arc<auth::LoginLimits>,
    tickets: Arc<events::Tickets>,
    /// The OpenAPI document, as served.
    openapi: Arc<str>,
    /// Largest bulk import body, bytes (`api.import_body_limit`).
    import_limit: usize,
}

/// The node an API serves for.
#[derive(Clone)]
enum Node {
    /// A running controller (standalone, or the active node of an HA group).
    Running(ControllerHandle),
    /// A standby of an HA group: no controller runs here.
    Standby(watch::Receiver<StandbyView>),
}

impl ApiState {
    fn new(
        node: Node,
        reads: Reads,
        auth: Arc<Authority>,
        cfg: &ApiConfig,
        doc: &utoipa::openapi::OpenApi,
    ) -> Self {
        ApiState {
            node,
            reads,
            auth,
            limits: Arc::new(auth::LoginLimits::new(cfg.login_attempts_per_minute)),
            tickets: Arc::new(events::Tickets::default()),
            openapi: doc.to_json().unwrap_or_default().into(),
            import_limit: cfg.import_body_limit,
        }
    }

    /// The running controller, for what needs it (live state, commands, writes): on a
    /// standby, 503 `not_active` naming the active node's API.
    fn live(&self) -> Result<&ControllerHandle, ApiError> {
        match &self.node {
            Node::Running(handle) => Ok(handle),
            Node::Standby(view) => Err(ApiError::not_active(view.borrow().active_api.as_deref())),
        }
    }
}

/// A JSON body, refused with a JSON [`ApiError`] naming the field at fault (where
/// axum's own `Json` answers in plain text).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = has_content_type(req.headers(), "application/json");
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

/// Whether `headers` say the body is `mime` (parameters such as `charset` aside).
fn has_content_type(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
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
        Ok(Caller(state.auth.authenticate(bearer(&parts.headers)?)?))
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the controller answers.
    pub status: &'static str,
    /// `up`, or `down` while the database does not answer (the controller keeps serving
    /// from memory meanwhile).
    pub database: &'static str,
    /// `standalone` (no HA), `active` or `standby` (a node of an HA group).
    pub role: &'static str,
    /// HA: the lease's epoch (the one this node is active for, or the active node's).
    pub epoch: Option<i64>,
    /// HA, active: ms since this node last renewed its lease.
    pub lease_age_ms: Option<i64>,
    /// HA, standby: the active node's operator API address, when a node is active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_api: Option<String>,
}

/// Every route with its documentation: the parts of the API, each from its file's
/// `routes()`.
fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .nest("/api/v1/auth", auth::routes())
        .nest(
            "/api/v1",
            live::routes()
                .merge(commands::routes())
                .merge(events::routes())
                .merge(subscribers::routes())
                .merge(network::routes())
                .merge(history::routes())
                .merge(messages::routes())
                .merge(alarms::routes())
                .routes(routes!(openapi::openapi_json)),
        )
}

/// The OpenAPI 3.1 document of the API, as `GET /api/v1/openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    routes().split().1
}

/// The API's routes over a running controller's `handle`.
pub fn router(handle: ControllerHandle, cfg: &ApiConfig) -> Router {
    let (reads, auth) = (handle.reads(), handle.authority());
    app(Node::Running(handle), reads, auth, cfg)
}

/// The API's routes for `node`: every route is served; those that need a running
/// controller answer 503 on a standby ([`ApiState::live`]).
fn app(node: Node, reads: Reads, auth: Arc<Authority>, cfg: &ApiConfig) -> Router {
    let (routes, doc) = routes().split();
    let state = ApiState::new(node, reads, auth, cfg, &doc);
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    routes
        .merge(crate::console::router())
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

/// `GET /healthz`: the controller answers; whether its database does.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    security(()),
    responses((status = 200, description = "The controller answers", body = Health))
)]
async fn healthz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    let handle = match &state.node {
        Node::Running(handle) => handle,
        Node::Standby(view) => {
            let v = view.borrow().clone();
            return Ok(Json(Health {
                status: "ok",
                database: "up",
                role: "standby",
                epoch: Some(v.epoch),
                lease_age_ms: None,
                active_api: v.active_api,
            }));
        }
    };
    let alarms = match handle.query(Query::Alarms) {
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
    let ha = handle.ha_lease();
    Ok(Json(Health {
        status: "ok",
        database: if down { "down" } else { "up" },
        role: if ha.is_some() { "active" } else { "standalone" },
        epoch: ha.map(|(epoch, _)| epoch),
        lease_age_ms: ha.map(|(_, age)| age),
        active_api: None,
    }))
}

/// `GET /metrics`: the Prometheus text format (version 0.0.4), without a token like
/// `/healthz`, so that a Prometheus server can scrape it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    security(()),
    responses((status = 200, description = "Every metric, in the Prometheus text format 0.0.4",
        content_type = "text/plain", body = String))
)]
async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    metrics_text(match &s.node {
        Node::Running(handle) => handle.metrics(),
        // Nothing else runs here.
        Node::Standby(view) => crate::metrics::Scrape {
            ha: Some(crate::metrics::HaGauges {
                active: false,
                epoch: view.borrow().epoch,
                lease_age_ms: None,
            }),
            ..Default::default()
        },
    })
}

/// `scrape` in the Prometheus text format, as `GET /metrics` answers it.
fn metrics_text(scrape: crate::metrics::Scrape) -> Result<Response, ApiError> {
    let text = scrape.encode().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the metrics could not be encoded",
        )
    })?;
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// The API's listening socket, with its TLS configuration when it has one.
pub struct ApiListener {
    tcp: TcpListener,
    tls: Option<RustlsConfig>,
}

impl ApiListener {
    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Whether it speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Its TLS configuration, shared with the server it runs: [`reload_tls`] changes it.
    pub fn tls(&self) -> Option<RustlsConfig> {
        self.tls.clone()
    }
}

/// Reads `cfg`'s certificate and key again into `tls`, the configuration a running API
/// serves: new connections get them. Files that cannot be read change nothing.
pub fn reload_tls(tls: &RustlsConfig, cfg: &ApiConfig) -> std::io::Result<()> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Err(std::io::Error::other(
            "api.tls_cert and api.tls_key are no longer set (TLS is turned off by a restart only)",
        ));
    };
    tls.reload_from_config(tls_config(cert, key)?.get_inner());
    Ok(())
}

/// Binds the API on `cfg.listen`, with TLS when `cfg` names a certificate and key (read
/// now: a missing or unreadable file refuses to start, naming it); warns when it is
/// reachable from the network without TLS.
pub async fn bind(cfg: &ApiConfig) -> std::io::Result<ApiListener> {
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let tcp = TcpListener::bind(cfg.listen).await?;
    let bound = tcp.local_addr()?;
    if !bound.ip().is_loopback() && tls.is_none() {
        warn!(%bound, "the operator API listens on a non-loopback address without TLS: set api.tls_cert and api.tls_key");
    }
    info!(addr = %bound, tls = tls.is_some(), "operator API listening");
    Ok(ApiListener { tcp, tls })
}

/// rustls (TLS 1.2 and 1.3, the ring provider) serving the certificate chain in `cert`
/// with the private key in `key`, both PEM.
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("api.{what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("tls_cert", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("tls_cert", cert, &"holds no certificate"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls_key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| bad("tls_key", key, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

/// Serves the API on `listener` until `stop` completes.
pub async fn serve(
    listener: ApiListener,
    handle: ControllerHandle,
    cfg: ApiConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(listener, router(handle, &cfg), stop).await
}

/// What a standby of an HA group knows of the group, for its API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandbyView {
    /// The lease's epoch.
    pub epoch: i64,
    /// The active node's operator API address, when a node is active.
    pub active_api: Option<String>,
    /// The active node's link address, when a node is active (what a standby's link
    /// listener names in `LINK_REDIRECT`).
    pub active_link: Option<crate::protocol::ControllerAddress>,
}

/// Serves the API of a standby (`src/ha`) until `stop`, on a store of its own opened
/// from `cfg.database` without an epoch (it writes nothing but what logins, refreshes and
/// logouts write):
/// - `GET /healthz` (role `standby`, the epoch, the active node's API address) and
///   `GET /metrics` (`trunkd_ha_active 0` and the epoch; nothing else runs here);
/// - logging in, refreshing, logging out (tokens of either node are good on both: the
///   signing keys are the database's), and every read the database answers: the HLR's
///   records, the history, the alarms as stored, the OpenAPI document;
/// - and 503 `not_active`, naming the active node's API address, for everything that
///   needs the running controller: live state, the event stream, commands and writes.
///
/// The operators, sessions and signing keys are kept current by following the audit log
/// every `registration.hlr_refresh_ms`, as a running controller does; the HLR cache
/// followed with them is kept in `warm`, for the controller to start from at a takeover. Until the database
/// answers, requests wait (it is tried again every second).
pub async fn serve_standby(
    listener: ApiListener,
    cfg: Config,
    view: watch::Receiver<StandbyView>,
    warm: crate::ha::WarmHlr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut stop = Box::pin(stop);
    let (store, hlr, auth) = loop {
        let opened = async {
            let store = Store::open(&cfg.database.url, &cfg.database.data_dir).await?;
            let hlr = Arc::new(HlrCache::load(&store).await?);
            let auth = Authority::load(&cfg.api, store.clone(), Clock::start()).await?;
            Ok::<_, crate::controller::StartError>((store, hlr, Arc::new(auth)))
        };
        // A takeover does not wait for it.
        let opened = tokio::select! {
            _ = &mut stop => return Ok(()),
            opened = opened => opened,
        };
        match opened {
            Ok(opened) => break opened,
            Err(e) => warn!(error = %e, "HA standby: the operator API cannot read the database yet"),
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    // The controller starts from this cache if this node takes over.
    warm.keep(hlr.clone());
    let app = app(
        Node::Standby(view),
        Reads::new(store.clone(), hlr.clone()),
        auth.clone(),
        &cfg.api,
    );
    let every = Duration::from_millis(cfg.registration.hlr_refresh_ms);
    let follow = async {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            follow_audit(&store, &hlr, &auth).await;
        }
    };
    let served = tokio::select! {
        r = serve_app(listener, app, stop) => r,
        () = follow => Ok(()),
    };
    store.close().await;
    served
}

/// What a standby's API hears by following the audit log: HLR changes (for the units
/// alarms name) and the operators, sessions and signing keys of [`Authority::hear`].
async fn follow_audit(store: &Store, hlr: &HlrCache, auth: &Authority) {
    if let Err(e) = hlr.refresh(store).await {
        warn!(error = %e, "HA standby: the audit log could not be followed");
        return;
    }
    if let Some(Err(e)) = auth.retry_reloads().await {
        warn!(error = %e, "HA standby: operators could not be reloaded");
    }
    for change in hlr.take_changes() {
        if let Some(Err(e)) = auth.hear(&change).await {
            warn!(error = %e, "HA standby: the API's operators and keys could not be reloaded");
        }
    }
}

/// Serves `app` on `listener` (over TLS when it has it) until `stop`.
async fn serve_app(
    listener: ApiListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let Some(tls) = listener.tls else {
        return axum::serve(listener.tcp, app).with_graceful_shutdown(stop).await;
    };
    let server = axum_server::Handle::<SocketAddr>::new();
    let stopping = server.clone();
    tokio::spawn(async move {
        stop.await;
        // Open requests get a moment; an event stream never ends by itself.
        stopping.graceful_shutdown(Some(Duration::from_secs(1)));
    });
    axum_server::from_tcp_rustls(listener.tcp.into_std()?, tls)?
        .handle(server)
        .serve(app)
        .await
}
