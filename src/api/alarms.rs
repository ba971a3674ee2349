//! Alarms: `GET /alarms` (those that need attention, or with `?finished=true` every one,
//! newest first, a page at a time), `GET /alarms/{id}`, and
//! `POST /alarms/{id}/acknowledge`.
//!
//! The controller raises an alarm for a condition (a site's link lost, a slot out of
//! service, a full busy queue, an emergency, a suspected clone, the database away, call
//! records piling up) and clears it when the condition is gone; an operator
//! acknowledges it. Its `state` is `raised`, `acknowledged` (condition still there),
//! `cleared` (condition gone, not yet acknowledged: it still needs attention) or
//! `finished`. Nobody clears an alarm by hand: the controller observes every condition
//! and clears it itself (see [`crate::controller::Alarm`]).
//!
//! Any role reads (on a standby of an HA pair, the alarms as the database holds them:
//! the active node writes their changes behind); a dispatcher or admin acknowledges. An acknowledgement is written at
//! once with its audit entry (`alarm.acknowledge`, actor `api:<operator>@<address>`),
//! so it is refused with 503 while the database is away. Acknowledging an alarm
//! acknowledged already is refused with 409 `already_acknowledged`, naming who did: an
//! acknowledgement is someone's, and a second one would hide whose.
//!
//! Infrastructure alarms are every operator's; a unit's alarm (`emergency`,
//! `clone_suspected`) is only for operators whose fleets include the unit's: to others
//! it does not exist (404), as on the event stream.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::commands::actor;
use super::live::UnitJson;
use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized};
use super::{query_params, ApiError, ApiRoutes, ApiState, Caller, Node};
use crate::auth::{Principal, Role};
use crate::controller::{Alarm, AlarmError, AlarmQuery, Reads, Subject};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(acknowledge))
}

impl From<AlarmError> for ApiError {
    fn from(e: AlarmError) -> Self {
        match &e {
            AlarmError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m.clone()),
            AlarmError::AlreadyAcknowledged(m) => {
                ApiError::new(StatusCode::CONFLICT, "already_acknowledged", m.clone())
            }
            AlarmError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
            }
        }
    }
}

/// An alarm. Times are Unix ms; what is not (yet) so is absent.
#[derive(Serialize, ToSchema)]
pub struct AlarmJson {
    /// Its id.
    pub id: u64,
    /// `site_link_lost`, `slot_out_of_service`, `queue_full`, `emergency`,
    /// `clone_suspected`, `database_unavailable`, `records_backlog` or `takeover`.
    pub kind: &'static str,
    /// Of what: `site:<id>`, `slot:<site>/<carrier>/<slot>`, `unit:<imsi>`, `database`,
    /// `records`, `controller`.
    pub subject: String,
    /// The site of a site's or slot's alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<u16>,
    /// The carrier of a slot's alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<u8>,
    /// The slot of a slot's alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
    /// The IMSI of a unit's alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    /// The dispatch address of a unit's alarm (absent if no longer provisioned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitJson>,
    /// What the controller saw.
    pub detail: String,
    /// `raised`, `acknowledged`, `cleared` or `finished`.
    pub state: &'static str,
    /// When first raised.
    pub raised_at_ms: i64,
    /// When last raised: an alarm raised again while cleared and not acknowledged is
    /// reopened.
    pub last_raised_at_ms: i64,
    /// How many times it was raised.
    pub occurrences: u32,
    /// Who acknowledged it: `api:<operator>@<address>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at_ms: Option<i64>,
    /// When its condition was gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_at_ms: Option<i64>,
}

/// An alarm as the API shows it (a unit named by its dispatch address as the HLR has it
/// now).
pub(super) fn alarm_json(a: &Alarm, reads: &Reads) -> AlarmJson {
    let (mut site, mut carrier, mut slot, mut imsi, mut unit) = (None, None, None, None, None);
    match a.subject {
        Subject::Site(s) => site = Some(s.get()),
        Subject::Slot {
            site: s,
            carrier: c,
            slot: sl,
        } => (site, carrier, slot) = (Some(s.get()), Some(c), Some(sl)),
        Subject::Unit(i) => {
            imsi = Some(i.to_string());
            unit = reads.subscriber_unit(&i).map(UnitJson::from);
        }
        Subject::Database | Subject::Records | Subject::Controller => {}
    }
    AlarmJson {
        id: a.id,
        kind: a.kind.as_str(),
        subject: a.subject.to_string(),
        site,
        carrier,
        slot,
        imsi,
        unit,
        detail: a.detail.clone(),
        state: a.state().as_str(),
        raised_at_ms: a.raised_at_ms,
        last_raised_at_ms: a.last_raised_at_ms,
        occurrences: a.occurrences,
        acknowledged_by: a.acknowledged_by.clone(),
        acknowledged_at_ms: a.acknowledged_at_ms,
        cleared_at_ms: a.cleared_at_ms,
    }
}

/// Whether `p` may see `a`: infrastructure, or a unit of its fleets.
pub(super) fn visible(p: &Principal, a: &Alarm) -> bool {
    a.fleet.is_none_or(|f| p.fleets.allows(f))
}

/// `GET /alarms`'s query.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    finished: Option<bool>,
    before: Option<u64>,
    limit: Option<usize>,
}

/// Default and largest page.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `GET /alarms`.
#[derive(Serialize, ToSchema)]
pub struct AlarmsJson {
    /// Newest (highest id) first.
    pub alarms: Vec<AlarmJson>,
    /// Give it as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// Alarms: those that need attention, or with `finished` the history, newest first.
#[utoipa::path(
    get,
    path = "/alarms",
    tag = "alarms",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of alarms", body = AlarmsJson),
        BadRequest,
        Unauthorized,
        Forbidden,
    )
)]
async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Json<AlarmsJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let q: ListQuery = query_params(&uri)?;
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be 1..={MAX_PAGE}"),
        ));
    }
    if q.before.is_some_and(|b| b == 0 || b > i64::MAX as u64) {
        return Err(ApiError::invalid(
            "before",
            format!("before must be 1..={}", i64::MAX),
        ));
    }
    let query = AlarmQuery {
        finished: q.finished.unwrap_or(false),
        before: q.before,
        limit: limit + 1,
        fleets: p.fleets.clone(),
    };
    let mut alarms = match &s.node {
        Node::Running(handle) => handle.alarms(&query).await?,
        Node::Standby(_) => s.reads.alarms(&query).await?,
    };
    let more = alarms.len() > limit;
    alarms.truncate(limit);
    Ok(Json(AlarmsJson {
        next_before: more.then(|| alarms.last().map(|a| a.id)).flatten(),
        alarms: alarms.iter().map(|a| alarm_json(a, &s.reads)).collect(),
    }))
}

/// Alarm `id` of the path, if `p` may see it.
async fn visible_alarm(s: &ApiState, p: &Principal, id: &str) -> Result<Alarm, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "an alarm id is a positive integer"))?;
    let found = match &s.node {
        Node::Running(handle) => handle.alarm(id).await,
        Node::Standby(_) => s.reads.alarm(id).await,
    };
    match found {
        Ok(a) if visible(p, &a) => Ok(a),
        Ok(_) => Err(AlarmError::NotFound(format!("alarm {id} does not exist")).into()),
        Err(e) => Err(e.into()),
    }
}

/// One alarm.
#[utoipa::path(
    get,
    path = "/alarms/{id}",
    tag = "alarms",
    params(("id" = u64, Path, minimum = 1, description = "The alarm")),
    responses(
        (status = 200, description = "The alarm", body = AlarmJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn one(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AlarmJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let a = visible_alarm(&s, p, &id).await?;
    Ok(Json(alarm_json(&a, &s.reads)))
}

/// Acknowledge an alarm.
#[utoipa::path(
    post,
    path = "/alarms/{id}/acknowledge",
    tag = "alarms",
    params(("id" = u64, Path, minimum = 1, description = "The alarm")),
    responses(
        (status = 200, description = "The alarm, acknowledged", body = AlarmJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn acknowledge(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AlarmJson>, ApiError> {
    let p = caller.require(Role::Dispatcher)?;
    let live = s.live()?;
    let a = visible_alarm(&s, p, &id).await?;
    let a = live.acknowledge_alarm(&actor(p, peer), a.id).await?;
    Ok(Json(alarm_json(&a, &s.reads)))
}
