//! The operator API's OpenAPI 3.1 document, served without a token at
//! `GET /api/v1/openapi.json`.
//!
//! The document and the router come from one registration: each part of the API builds
//! an [`ApiRoutes`], which takes handlers only through utoipa-axum's `routes!` (from
//! their `#[utoipa::path]`), so no route is served without being in the document. How
//! to add a route: the module documentation of [`crate::api`].
//!
//! The errors many routes share are the response types below ([`BadRequest`],
//! [`Unauthorized`], [`Forbidden`], [`NotFound`], [`Conflict`], [`BodyRefused`],
//! [`RateLimited`]), listed by name in a route's `responses(...)`, each with the
//! [`ApiError`] schema. Two more every route may answer are added to every operation
//! here, where they come from: 503 (`timeout`, the request timeout; `unavailable`, the
//! database; or `not_active`, a standby of an HA pair asked for what needs the running
//! controller) and 500 (`internal`, which does not happen).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToResponse};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::{ApiError, ApiState};

/// The routes of one part of the API together with their documentation. Handlers come
/// in only through `routes!`, which reads their `#[utoipa::path]`: there is no way to
/// serve a route here that the document does not list.
pub struct ApiRoutes(OpenApiRouter<ApiState>);

impl ApiRoutes {
    /// No routes yet.
    pub fn new() -> Self {
        ApiRoutes(OpenApiRouter::default())
    }

    /// Adds the handlers of `routes!(a, b, …)`: handlers of one path (one per method).
    pub fn routes(self, handlers: UtoipaMethodRouter<ApiState>) -> Self {
        ApiRoutes(self.0.routes(handlers))
    }

    /// Adds `other`'s routes as they are.
    pub fn merge(self, other: ApiRoutes) -> Self {
        ApiRoutes(self.0.merge(other.0))
    }

    /// Adds `other`'s routes under `prefix`.
    pub fn nest(self, prefix: &str, other: ApiRoutes) -> Self {
        ApiRoutes(self.0.nest(prefix, other.0))
    }

    /// The router and the finished document (with the security scheme and the responses
    /// every route shares).
    pub(super) fn split(self) -> (axum::Router<ApiState>, Document) {
        let (router, paths) = self.0.split_for_parts();
        let mut doc = ApiDoc::openapi();
        doc.merge(paths);
        every_operation_may_fail(&mut doc);
        (router, doc)
    }
}

impl Default for ApiRoutes {
    fn default() -> Self {
        ApiRoutes::new()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "trunkd operator API",
        description = "The operator API of trunkd: live reads, radio commands, the event stream \
            and sessions. Every route but those marked otherwise needs \
            `Authorization: Bearer <access token>` (from `POST /api/v1/auth/login`). Every \
            error is JSON: a stable `code`, a `message`, and the `field` at fault where there \
            is one."
    ),
    components(
        schemas(ApiError),
        responses(ServerError, Unavailable)
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "system", description = "Health, metrics, this document"),
        (name = "auth", description = "Sessions and the public keys"),
        (name = "live", description = "The live system, read from memory"),
        (name = "commands", description = "What operators do"),
        (name = "events", description = "The live event stream"),
        (name = "subscribers", description = "Subscribers: search, provisioning, bulk import"),
        (name = "network", description = "Fleets, talkgroups and sites"),
        (name = "history", description = "Call records and the audit log"),
        (name = "messages", description = "Status and short data from a console"),
        (name = "alarms", description = "Alarms and their acknowledgement"),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme: an access token (JWT) in `Authorization: Bearer`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".into());
        http.description = Some("An access token from POST /api/v1/auth/login or /refresh".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// Adds 500 and 503 to every operation, by reference to the shared responses.
fn every_operation_may_fail(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            for (status, name) in [("500", "ServerError"), ("503", "Unavailable")] {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub(super) async fn openapi_json(State(s): State<ApiState>) -> Response {
    ([(CONTENT_TYPE, "application/json")], s.openapi.to_string()).into_response()
}

/// 400 (`invalid`, `invalid_parameter`, `invalid_body`, `bad_body`): a parameter, path
/// segment or body field is wrong; `field` names it.
#[derive(IntoResponses)]
#[response(status = 400)]
pub struct BadRequest(pub ApiError);

/// 401 (`missing_token`, `invalid_token`, `token_expired`): no access token, or one
/// refused; with `WWW-Authenticate: Bearer`.
#[derive(IntoResponses)]
#[response(status = 401, headers(("www-authenticate" = String)))]
pub struct Unauthorized(pub ApiError);

/// 403 (`forbidden`): the caller's role or fleets do not allow it.
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct Forbidden(pub ApiError);

/// 404 (`not_found`): what the path names does not exist (or is not in the caller's
/// fleets).
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct NotFound(pub ApiError);

/// 409 (`refused`): the controller refused the change as things stand.
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct Conflict(pub ApiError);

/// 413 and 415: a JSON body refused before it is read.
#[derive(IntoResponses)]
pub enum BodyRefused {
    /// `body_too_large`: larger than `api.body_limit`.
    #[response(status = 413)]
    TooLarge(ApiError),
    /// `unsupported_media_type`: not `Content-Type: application/json`.
    #[response(status = 415)]
    NotJson(ApiError),
}

/// 429 (`rate_limited`, `too_many_tickets`): try again after `Retry-After` seconds.
#[derive(IntoResponses)]
#[response(status = 429, headers(("retry-after" = u64, description = "Seconds to wait")))]
pub struct RateLimited(pub ApiError);

/// `internal`: something that cannot happen did.
#[derive(ToResponse)]
pub struct ServerError(pub ApiError);

/// `timeout` (not answered within `api.request_timeout_ms`), `unavailable` (the
/// database does not answer) or `not_active` (a standby of an HA pair was asked for
/// what needs the running controller; the message names the active node's API).
#[derive(ToResponse)]
pub struct Unavailable(pub ApiError);
