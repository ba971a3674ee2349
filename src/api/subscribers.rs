//! Subscribers as operators keep them: search (by IMSI, IMEI, MSISDN, fleet and member,
//! paged), read (never the keys), create (keys generated are shown once, in the
//! answer), change (IMEI, MSISDN, talkgroups), delete, and bulk import of the CSV file
//! `trunkd subscriber import` takes, with the same all-or-nothing rules and line numbers.
//!
//! Rights: any role reads; an admin writes. An operator limited to fleets sees and
//! changes only their subscribers, and imports only rows of its fleets.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::commands::actor;
use super::live::{fleet_in_scope, id, page_limit};
use super::openapi::{BadRequest, BodyRefused, Conflict, Forbidden, NotFound, Unauthorized};
use super::{has_content_type, query_params, ApiError, ApiRoutes, ApiState, Body, Caller};
use crate::auth::{Fleets, Principal, Role};
use crate::hlr::{NewSubscriber, Permissions, Subscriber};
use crate::protocol::{FleetId, Imei, Imsi, IndividualId, MemberId, TalkgroupId, Unit};
use crate::store::csv::parse_subscribers;
use crate::store::{rules, ImportError, Provisioned, StoreError, SubscriberSearch, SubscriberUpdate};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(search, create))
        .routes(routes!(import))
        .routes(routes!(read, update, remove))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", m),
            other => {
                tracing::warn!(error = %other, "the operator API could not use the database");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database did not answer; nothing was changed, try again",
                )
            }
        }
    }
}

/// A subscriber as the API shows it: never its keys.
#[derive(Serialize, ToSchema)]
pub struct SubscriberJson {
    /// IMSI, 15 digits.
    pub imsi: String,
    /// IMEI, 15 digits.
    pub imei: String,
    /// Telephone number.
    pub msisdn: Option<String>,
    /// The name dispatchers know it by.
    pub alias: Option<String>,
    /// Fleet id.
    pub fleet: u16,
    /// Member id within the fleet.
    pub member: u16,
    /// Individual (dispatch) id.
    pub individual_id: u32,
    /// Priority level, 0..=15.
    pub priority: u8,
    /// `group`, `private`, `emergency`, `data`, `interconnect` (`;`-separated) or `none`.
    pub permissions: String,
    /// Refused service.
    pub inhibited: bool,
    /// Permitted talkgroups, the primary first.
    pub talkgroups: Vec<u16>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub updated_at_ms: i64,
}

impl From<&Subscriber> for SubscriberJson {
    fn from(s: &Subscriber) -> Self {
        SubscriberJson {
            imsi: s.imsi.to_string(),
            imei: s.imei.to_string(),
            msisdn: s.msisdn.clone(),
            alias: s.alias.clone(),
            fleet: s.unit.fleet.get(),
            member: s.unit.member.get(),
            individual_id: s.individual.get(),
            priority: s.priority,
            permissions: s.permissions.to_string(),
            inhibited: s.inhibited,
            talkgroups: s.talkgroups.iter().map(|t| t.get()).collect(),
            created_at_ms: s.created_at,
            updated_at_ms: s.updated_at,
        }
    }
}

/// `GET /subscribers`' query: every criterion given must match.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    imsi: Option<String>,
    imei: Option<String>,
    msisdn: Option<String>,
    /// Aliases that start with this, whatever the case.
    alias: Option<String>,
    fleet: Option<u16>,
    member: Option<u16>,
    after: Option<String>,
    limit: Option<usize>,
}

/// A page of subscribers.
#[derive(Serialize, ToSchema)]
pub struct SubscribersPage {
    /// In IMSI order.
    pub subscribers: Vec<SubscriberJson>,
    /// Give it as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

fn imsi(field: &str, v: &str) -> Result<Imsi, ApiError> {
    Imsi::parse(v).map_err(|e| ApiError::invalid(field, e.to_string()))
}

fn imei(field: &str, v: &str) -> Result<Imei, ApiError> {
    Imei::parse(v).map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// The fleets a search covers: the one asked for (if `p` may see it), else `p`'s own.
fn search_fleets(p: &Principal, fleet: Option<u16>) -> Result<Option<Vec<FleetId>>, ApiError> {
    let fleet = fleet
        .map(|f| id("fleet", f, FleetId::new, FleetId::MAX))
        .transpose()?;
    fleet_in_scope(p, fleet)?;
    Ok(match (fleet, &p.fleets) {
        (Some(f), _) => Some(vec![f]),
        (None, Fleets::Only(mine)) => Some(mine.clone()),
        (None, Fleets::All) => None,
    })
}

/// Search subscribers by IMSI, IMEI, MSISDN, alias (prefix), fleet and member, a page at a time.
#[utoipa::path(
    get,
    path = "/subscribers",
    tag = "subscribers",
    params(SearchQuery),
    responses(
        (status = 200, description = "A page of subscribers", body = SubscribersPage),
        BadRequest,
        Unauthorized,
        Forbidden,
    )
)]
async fn search(
    State(s): State<ApiState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Json<SubscribersPage>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let q: SearchQuery = query_params(&uri)?;
    let limit = page_limit(q.limit)?;
    if let Some(m) = &q.msisdn {
        if !rules::valid_msisdn(m) {
            return Err(ApiError::invalid("msisdn", "msisdn must be 1 to 15 digits"));
        }
    }
    let search = SubscriberSearch {
        imsi: q.imsi.as_deref().map(|v| imsi("imsi", v)).transpose()?,
        imei: q.imei.as_deref().map(|v| imei("imei", v)).transpose()?,
        msisdn: q.msisdn,
        alias: q.alias.filter(|a| !a.is_empty()),
        fleets: search_fleets(p, q.fleet)?,
        member: q
            .member
            .map(|m| id("member", m, MemberId::new, MemberId::MAX))
            .transpose()?,
        after: q.after.as_deref().map(|v| imsi("after", v)).transpose()?,
        limit: limit as u32 + 1,
    };
    let mut found = s.reads.search_subscribers(&search).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    Ok(Json(SubscribersPage {
        next_after: more.then(|| found.last().map(|s| s.imsi.to_string())).flatten(),
        subscribers: found.iter().map(SubscriberJson::from).collect(),
    }))
}

/// The subscriber named in the path, if it exists and `p` may see its fleet.
async fn in_scope(s: &ApiState, p: &Principal, raw: &str) -> Result<Subscriber, ApiError> {
    let imsi = imsi("imsi", raw)?;
    let sub = s.reads.subscriber(imsi).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("subscriber {imsi} does not exist"),
        )
    })?;
    if !p.fleets.allows(sub.unit.fleet) {
        return Err(ApiError::forbidden(format!(
            "subscriber {imsi} is not in {}'s fleets",
            p.name
        )));
    }
    Ok(sub)
}

/// One subscriber (never its keys).
#[utoipa::path(
    get,
    path = "/subscribers/{imsi}",
    tag = "subscribers",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    responses(
        (status = 200, description = "The subscriber, never its keys", body = SubscriberJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn read(
    State(s): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<SubscriberJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    Ok(Json(SubscriberJson::from(&in_scope(&s, p, &raw).await?)))
}

/// `POST /subscribers`' body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriberBody {
    /// IMEI, 15 digits with a Luhn check digit.
    pub imei: String,
    /// IMSI; assigned under `registration.imsi_prefix` when absent.
    pub imsi: Option<String>,
    /// Telephone number, 1 to 15 digits.
    pub msisdn: Option<String>,
    /// The name dispatchers know it by, 1 to 32 characters.
    pub alias: Option<String>,
    /// Fleet id.
    pub fleet: u16,
    /// Member id within the fleet.
    pub member: u16,
    /// Individual (dispatch) id; assigned when absent.
    pub individual_id: Option<u32>,
    /// K, 32 hex digits; with `opc`, or neither (then both are generated and shown once).
    pub k: Option<String>,
    /// OPc, 32 hex digits.
    pub opc: Option<String>,
    /// Priority level 0..=15 (default 0).
    pub priority: Option<u8>,
    /// Permissions (default `group,private,emergency,data`).
    pub permissions: Option<String>,
    /// Permitted talkgroups, the primary first.
    pub talkgroups: Vec<u16>,
}

/// Keys trunkd generated: shown in this answer only, never again.
#[derive(Serialize, ToSchema)]
pub struct GeneratedKeys {
    /// K, 32 hex digits.
    pub k: String,
    /// OPc, 32 hex digits.
    pub opc: String,
}

/// `POST /subscribers`' answer.
#[derive(Serialize, ToSchema)]
pub struct CreatedSubscriber {
    /// As stored.
    pub subscriber: SubscriberJson,
    /// The keys, when trunkd generated them (the only time they are shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<GeneratedKeys>,
}

fn talkgroups(v: &[u16]) -> Result<Vec<TalkgroupId>, ApiError> {
    v.iter()
        .map(|t| id("talkgroups", *t, TalkgroupId::new, TalkgroupId::MAX))
        .collect()
}

/// Provision one subscriber.
#[utoipa::path(
    post,
    path = "/subscribers",
    tag = "subscribers",
    request_body = NewSubscriberBody,
    responses(
        (status = 201, description = "Stored; keys trunkd generated are shown here only", body = CreatedSubscriber),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn create(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Body(b): Body<NewSubscriberBody>,
) -> Result<(StatusCode, Json<CreatedSubscriber>), ApiError> {
    let p = caller.require(Role::Admin)?;
    let unit = Unit {
        fleet: id("fleet", b.fleet, FleetId::new, FleetId::MAX)?,
        member: id("member", b.member, MemberId::new, MemberId::MAX)?,
    };
    fleet_in_scope(p, Some(unit.fleet))?;
    let (k, opc, generated) = rules::subscriber_keys(b.k.as_deref(), b.opc.as_deref())
        .map_err(|e| ApiError::invalid(if b.k.is_some() { "k" } else { "opc" }, e))?;
    let new = NewSubscriber {
        imei: imei("imei", &b.imei)?,
        imsi: b.imsi.as_deref().map(|v| imsi("imsi", v)).transpose()?,
        msisdn: b.msisdn,
        alias: b.alias,
        unit,
        individual: b
            .individual_id
            .map(|i| {
                IndividualId::new(i).ok_or_else(|| {
                    ApiError::invalid(
                        "individual_id",
                        format!("individual_id must be 1..={}", IndividualId::MAX),
                    )
                })
            })
            .transpose()?,
        k,
        opc,
        priority: b.priority.unwrap_or(0),
        permissions: Permissions::parse(b.permissions.as_deref().unwrap_or(rules::DEFAULT_PERMISSIONS))
            .map_err(|e| ApiError::invalid("permissions", e))?,
        talkgroups: talkgroups(&b.talkgroups)?,
    };
    let sub = s.live()?.records().add_subscriber(&actor(p, peer), new).await?;
    let keys = generated.then(|| GeneratedKeys {
        k: sub.k.to_hex(),
        opc: sub.opc.to_hex(),
    });
    Ok((
        StatusCode::CREATED,
        Json(CreatedSubscriber {
            subscriber: SubscriberJson::from(&sub),
            keys,
        }),
    ))
}

/// `PATCH /subscribers/{imsi}`'s body: each field only when given.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberPatch {
    /// A new IMEI (the radio was replaced).
    pub imei: Option<String>,
    /// A new MSISDN, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub msisdn: Option<Option<String>>,
    /// A new alias, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub alias: Option<Option<String>>,
    /// The permitted talkgroups, the primary first, replacing the list.
    pub talkgroups: Option<Vec<u16>>,
}

/// A field that is present (`null` included) as `Some`, so that an absent one is told
/// from one set to `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Change a subscriber's IMEI, MSISDN, alias or talkgroups.
#[utoipa::path(
    patch,
    path = "/subscribers/{imsi}",
    tag = "subscribers",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    request_body = SubscriberPatch,
    responses(
        (status = 200, description = "As stored now", body = SubscriberJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn update(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<SubscriberPatch>,
) -> Result<Json<SubscriberJson>, ApiError> {
    let p = caller.require(Role::Admin)?;
    let sub = in_scope(&s, p, &raw).await?;
    if let Some(Some(m)) = &b.msisdn {
        if !rules::valid_msisdn(m) {
            return Err(ApiError::invalid("msisdn", "msisdn must be 1 to 15 digits"));
        }
    }
    let change = SubscriberUpdate {
        imei: b.imei.as_deref().map(|v| imei("imei", v)).transpose()?,
        msisdn: b.msisdn,
        alias: b.alias,
        talkgroups: b.talkgroups.as_deref().map(talkgroups).transpose()?,
    };
    let sub = s
        .live()?
        .records()
        .update_subscriber(&actor(p, peer), sub.imsi, &change)
        .await?;
    Ok(Json(SubscriberJson::from(&sub)))
}

/// Remove a subscriber.
#[utoipa::path(
    delete,
    path = "/subscribers/{imsi}",
    tag = "subscribers",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    responses(
        (status = 204, description = "Removed"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn remove(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    let sub = in_scope(&s, p, &raw).await?;
    s.live()?
        .records()
        .remove_subscriber(&actor(p, peer), sub.imsi)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A subscriber an import stored, with the identities it was given.
#[derive(Serialize, ToSchema)]
pub struct ImportedJson {
    /// Its line in the file (the header is line 1).
    pub line: u64,
    /// IMSI (assigned when the row gave none).
    pub imsi: String,
    /// IMEI.
    pub imei: String,
    /// Individual id (assigned when the row gave none).
    pub individual_id: u32,
    /// The IMSI was assigned.
    pub imsi_assigned: bool,
    /// The individual id was assigned.
    pub individual_assigned: bool,
}

impl From<&Provisioned> for ImportedJson {
    fn from(p: &Provisioned) -> Self {
        ImportedJson {
            line: p.line,
            imsi: p.imsi.to_string(),
            imei: p.imei.to_string(),
            individual_id: p.individual.get(),
            imsi_assigned: p.imsi_assigned,
            individual_assigned: p.individual_assigned,
        }
    }
}

/// `POST /subscribers/import`'s answer.
#[derive(Serialize, ToSchema)]
pub struct ImportJson {
    /// How many subscribers were stored.
    pub imported: usize,
    /// Each, in row order.
    pub subscribers: Vec<ImportedJson>,
}

/// A refused row: 400 `invalid_row`, its line as the field at fault.
fn bad_row(line: u64, reason: impl std::fmt::Display) -> ApiError {
    ApiError {
        field: Some(format!("line {line}")),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_row",
            format!("line {line}: {reason}"),
        )
    }
}

/// `POST /subscribers/import`: the CSV file as the body (`Content-Type: text/csv`), all
/// or nothing; the first bad row refuses the whole file with its line number.
#[utoipa::path(
    post,
    path = "/subscribers/import",
    tag = "subscribers",
    request_body(content = String, content_type = "text/csv", description = "The subscriber CSV file of `trunkd subscriber import`"),
    responses(
        (status = 201, description = "Every row stored", body = ImportJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn import(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<ImportJson>), ApiError> {
    let p = caller.require(Role::Admin)?;
    // Before the file is read.
    let live = s.live()?;
    if !has_content_type(&headers, "text/csv") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be the subscriber CSV file (Content-Type: text/csv)",
        ));
    }
    // Read here under its own limit (a raw body is not held to api.body_limit).
    let body = axum::body::to_bytes(body, s.import_limit).await.map_err(|e| {
        let too_large =
            std::error::Error::source(&e).is_some_and(|c| c.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the file is larger than api.import_body_limit",
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", "the body could not be read")
        }
    })?;
    let rows = parse_subscribers(&body[..]).map_err(|e| match e {
        ImportError::Row { line, reason } => bad_row(line, reason),
        other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", other.to_string()),
    })?;
    if rows.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the file has no subscriber rows",
        ));
    }
    if let Some((line, row)) = rows.iter().find(|(_, r)| !p.fleets.allows(r.unit.fleet)) {
        return Err(ApiError {
            field: Some(format!("line {line}")),
            ..ApiError::forbidden(format!(
                "line {line}: fleet {} is not among {}'s fleets",
                row.unit.fleet, p.name
            ))
        });
    }
    let done = live
        .records()
        .import_subscribers(&actor(p, peer), rows)
        .await
        .map_err(|e| match e {
            ImportError::Row { line, reason } => bad_row(line, reason),
            ImportError::Store(e) => ApiError::from(e),
            ImportError::Read(e) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(ImportJson {
            imported: done.len(),
            subscribers: done.iter().map(ImportedJson::from).collect(),
        }),
    ))
}
