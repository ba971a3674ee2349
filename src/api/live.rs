//! The live system, read from the controller's memory: units on the air, each site's
//! slots, calls in progress, busy queues, links (any role), and the system parameters
//! (admin). Alarms are in [`super::alarms`].
//!
//! An operator limited to some fleets sees only their units, the calls and queued
//! requests with a caller or target in them, and a slot carrying another fleet's call
//! as `busy` without its call id. Sites and links are the infrastructure every operator
//! watches.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::openapi::{BadRequest, Forbidden, NotFound, Unauthorized};
use super::{query_params, ApiError, ApiRoutes, ApiState, Caller};
use crate::auth::{Fleets, Principal, Role};
use crate::controller::{ActiveCall, Answer, LinkState, Query, QueuedCall, UnitFilter, UnitOnAir};
use crate::core::slots::{SlotUse, SlotView};
use crate::protocol::{CallType, FleetId, Imsi, SiteId, TalkgroupId, Target, Unit};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(units))
        .routes(routes!(slots))
        .routes(routes!(calls))
        .routes(routes!(queues))
        .routes(routes!(links))
        .routes(routes!(parameters))
}

/// A unit's dispatch address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UnitJson {
    /// Fleet id.
    pub fleet: u16,
    /// Member id within the fleet.
    pub member: u16,
}

impl From<Unit> for UnitJson {
    fn from(u: Unit) -> Self {
        UnitJson {
            fleet: u.fleet.get(),
            member: u.member.get(),
        }
    }
}

/// Whom a call or message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetJson {
    /// One unit.
    Unit {
        /// Fleet id.
        fleet: u16,
        /// Member id.
        member: u16,
    },
    /// A talkgroup.
    Talkgroup {
        /// Fleet id.
        fleet: u16,
        /// Talkgroup id within the fleet.
        talkgroup: u16,
    },
}

impl From<Target> for TargetJson {
    fn from(t: Target) -> Self {
        match t {
            Target::Unit(u) => TargetJson::Unit {
                fleet: u.fleet.get(),
                member: u.member.get(),
            },
            Target::Talkgroup { fleet, talkgroup } => TargetJson::Talkgroup {
                fleet: fleet.get(),
                talkgroup: talkgroup.get(),
            },
        }
    }
}

fn target_fleet(t: &Target) -> FleetId {
    match t {
        Target::Unit(u) => u.fleet,
        Target::Talkgroup { fleet, .. } => *fleet,
    }
}

/// `group`, `private` or `emergency`.
fn call_type(t: CallType) -> &'static str {
    match t {
        CallType::Group => "group",
        CallType::Private => "private",
        CallType::Emergency => "emergency",
    }
}

/// `GET /units`'s query.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UnitsQuery {
    /// Only the units registered at this site.
    #[param(minimum = 1, maximum = 4095)]
    site: Option<u16>,
    /// Only this fleet's units.
    #[param(minimum = 1, maximum = 65535)]
    fleet: Option<u16>,
    /// Only the units affiliated to this talkgroup of `fleet` (which it needs).
    #[param(minimum = 1, maximum = 65535)]
    talkgroup: Option<u16>,
    /// The units after this IMSI: the previous page's `next_after`.
    #[param(pattern = "^[0-9]{15}$")]
    after: Option<String>,
    /// Units in a page, 100 by default.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// A unit on the air.
#[derive(Serialize, ToSchema)]
pub struct UnitOnAirJson {
    /// IMSI, 15 digits.
    pub imsi: String,
    /// Its dispatch address.
    pub unit: Option<UnitJson>,
    /// Its TMSI, 1..=4294967294.
    // utoipa documents a `u32` as `int32`, which a TMSI or a call id outgrows.
    #[schema(value_type = u64)]
    pub tmsi: u32,
    /// Where it is registered.
    pub site: u16,
    /// Its talkgroups, the primary first.
    pub talkgroups: Vec<u16>,
    /// When it was last heard from, Unix ms.
    pub last_activity_ms: i64,
}

impl From<&UnitOnAir> for UnitOnAirJson {
    fn from(u: &UnitOnAir) -> Self {
        UnitOnAirJson {
            imsi: u.imsi.to_string(),
            unit: u.unit.map(UnitJson::from),
            tmsi: u.tmsi.get(),
            site: u.site.get(),
            talkgroups: u.talkgroups.iter().map(|t| t.get()).collect(),
            last_activity_ms: u.last_activity_ms,
        }
    }
}

/// A page of units.
#[derive(Serialize, ToSchema)]
pub struct UnitsPage {
    /// In IMSI order.
    pub units: Vec<UnitOnAirJson>,
    /// Give it as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Default and largest page.
const PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

/// A ranged id from a query parameter or path segment, or 400 naming it.
pub(super) fn id<T>(field: &str, v: u16, new: fn(u16) -> Option<T>, max: u16) -> Result<T, ApiError> {
    new(v).ok_or_else(|| ApiError::invalid(field, format!("{field} must be 1..={max}")))
}

/// A ranged id from a path segment, or 400 naming it.
pub(super) fn path_id<T>(field: &str, raw: &str, new: fn(u16) -> Option<T>, max: u16) -> Result<T, ApiError> {
    let bad = || ApiError::invalid(field, format!("{field} must be 1..={max}"));
    id(field, raw.parse::<u16>().map_err(|_| bad())?, new, max)
}

/// A page size from a query: `PAGE` when absent, else 1..=`MAX_PAGE`.
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(
            "limit",
            format!("limit must be 1..={MAX_PAGE}"),
        ))
    }
}

/// The fleets `p` may see, refusing a `fleet` it may not.
pub(super) fn fleet_in_scope(p: &Principal, fleet: Option<FleetId>) -> Result<(), ApiError> {
    match fleet {
        Some(f) if !p.fleets.allows(f) => Err(ApiError::forbidden(format!(
            "fleet {f} is not among {}'s fleets",
            p.name
        ))),
        _ => Ok(()),
    }
}

/// Units on the air, by IMSI, a page at a time.
#[utoipa::path(
    get,
    path = "/units",
    tag = "live",
    params(UnitsQuery),
    responses(
        (status = 200, description = "A page of units", body = UnitsPage),
        BadRequest,
        Unauthorized,
        Forbidden,
    )
)]
async fn units(
    State(s): State<ApiState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Json<UnitsPage>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let q: UnitsQuery = query_params(&uri)?;
    let limit = page_limit(q.limit)?;
    let fleet = q
        .fleet
        .map(|f| id("fleet", f, FleetId::new, FleetId::MAX))
        .transpose()?;
    let filter = UnitFilter {
        site: q
            .site
            .map(|v| id("site", v, SiteId::new, SiteId::MAX))
            .transpose()?,
        fleet,
        talkgroup: q
            .talkgroup
            .map(|v| id("talkgroup", v, TalkgroupId::new, TalkgroupId::MAX))
            .transpose()?,
        after: q
            .after
            .map(|a| Imsi::parse(&a).map_err(|e| ApiError::invalid("after", e.to_string())))
            .transpose()?,
        limit: limit + 1,
    };
    fleet_in_scope(p, fleet)?;
    // A limited operator without a fleet asked: one page per fleet of its own, merged.
    let fleets: Vec<Option<FleetId>> = match (&p.fleets, fleet) {
        (Fleets::Only(mine), None) => mine.iter().copied().map(Some).collect(),
        _ => vec![fleet],
    };
    let mut all = Vec::new();
    for f in fleets {
        let query = Query::Units(UnitFilter {
            fleet: f,
            ..filter.clone()
        });
        match s.live()?.query(query) {
            Ok(Answer::Units(u)) => all.extend(u),
            Ok(_) => return Err(ApiError::internal()),
            Err(e) => return Err(ApiError::from_query(e, "talkgroup")),
        }
    }
    all.sort_by_key(|u| u.imsi);
    let more = all.len() > limit;
    all.truncate(limit);
    Ok(Json(UnitsPage {
        next_after: more.then(|| all.last().map(|u| u.imsi.to_string())).flatten(),
        units: all.iter().map(UnitOnAirJson::from).collect(),
    }))
}

/// One slot of a site.
#[derive(Serialize, ToSchema)]
pub struct SlotJson {
    /// Carrier.
    pub carrier: u8,
    /// Slot on the carrier.
    pub slot: u8,
    /// `control`, `free`, `busy` or `out_of_service`.
    pub state: &'static str,
    /// The call it carries (when the caller may see it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub call: Option<u32>,
}

/// `GET /sites/{site}/slots`.
#[derive(Serialize, ToSchema)]
pub struct SlotsJson {
    /// The site.
    pub site: u16,
    /// Every slot, by carrier and slot.
    pub slots: Vec<SlotJson>,
}

/// A site's slots and what each carries.
#[utoipa::path(
    get,
    path = "/sites/{site}/slots",
    tag = "live",
    params(("site" = u16, Path, minimum = 1, maximum = 4095, description = "The site")),
    responses(
        (status = 200, description = "Every slot of the site", body = SlotsJson),
        BadRequest,
        Unauthorized,
        NotFound,
    )
)]
async fn slots(
    State(s): State<ApiState>,
    caller: Caller,
    Path(site): Path<String>,
) -> Result<Json<SlotsJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let site = path_id("site", &site, SiteId::new, SiteId::MAX)?;
    let map: Vec<SlotView> = match s.live()?.query(Query::Slots { site }) {
        Ok(Answer::Slots(v)) => v,
        Ok(_) => return Err(ApiError::internal()),
        Err(e) => return Err(ApiError::from_query(e, "site")),
    };
    let visible = visible_calls(&s, p)?;
    let slots = map
        .iter()
        .map(|v| {
            let (state, call) = match v.state {
                SlotUse::Control => ("control", None),
                SlotUse::Free => ("free", None),
                SlotUse::Busy(c) => ("busy", visible.contains(&c).then_some(c.get())),
                SlotUse::OutOfService => ("out_of_service", None),
            };
            SlotJson {
                carrier: v.carrier,
                slot: v.slot,
                state,
                call,
            }
        })
        .collect();
    Ok(Json(SlotsJson {
        site: site.get(),
        slots,
    }))
}

/// The calls in progress `p` may see.
pub(super) fn calls_in_scope(s: &ApiState, p: &Principal) -> Result<Vec<ActiveCall>, ApiError> {
    match s.live()?.query(Query::Calls) {
        Ok(Answer::Calls(c)) => Ok(c
            .into_iter()
            .filter(|c| p.fleets.allows(c.view.caller.fleet) || p.fleets.allows(target_fleet(&c.view.target)))
            .collect()),
        _ => Err(ApiError::internal()),
    }
}

fn visible_calls(s: &ApiState, p: &Principal) -> Result<Vec<crate::protocol::CallId>, ApiError> {
    Ok(calls_in_scope(s, p)?.iter().map(|c| c.view.call).collect())
}

/// A slot a call holds.
#[derive(Serialize, ToSchema)]
pub struct CallSlotJson {
    /// Site.
    pub site: u16,
    /// Carrier.
    pub carrier: u8,
    /// Slot.
    pub slot: u8,
}

/// A call in progress.
#[derive(Serialize, ToSchema)]
pub struct CallJson {
    /// Call id.
    #[schema(value_type = u64)]
    pub call: u32,
    /// `group`, `private` or `emergency`.
    #[serde(rename = "type")]
    pub call_type: &'static str,
    /// Who asked.
    pub caller: UnitJson,
    /// Whom.
    pub target: TargetJson,
    /// The slots it holds.
    pub slots: Vec<CallSlotJson>,
    /// Who holds the floor; absent in hang time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub talker: Option<UnitJson>,
    /// Priority level (0..=15).
    pub priority: u8,
    /// Unix ms.
    pub requested_at_ms: i64,
    /// Unix ms.
    pub granted_at_ms: i64,
}

/// `GET /calls`.
#[derive(Serialize, ToSchema)]
pub struct CallsJson {
    /// By call id.
    pub calls: Vec<CallJson>,
}

/// The calls in progress.
#[utoipa::path(
    get,
    path = "/calls",
    tag = "live",
    responses((status = 200, description = "The calls in progress", body = CallsJson), Unauthorized)
)]
async fn calls(State(s): State<ApiState>, caller: Caller) -> Result<Json<CallsJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let calls = calls_in_scope(&s, p)?.iter().map(call_json).collect();
    Ok(Json(CallsJson { calls }))
}

/// `GET /queues`'s query.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct QueuesQuery {
    /// Only this site's queue.
    #[param(minimum = 1, maximum = 4095)]
    site: Option<u16>,
}

/// A request waiting in a busy queue.
#[derive(Serialize, ToSchema)]
pub struct QueuedJson {
    /// 1 = next.
    pub position: usize,
    /// Who asked.
    pub caller: UnitJson,
    /// `group`, `private` or `emergency`.
    #[serde(rename = "type")]
    pub call_type: &'static str,
    /// Whom.
    pub target: TargetJson,
    /// 16 = emergency, else the caller's priority level.
    pub class: u8,
    /// When it was asked for, Unix ms.
    pub requested_at_ms: i64,
}

/// A site's busy queue.
#[derive(Serialize, ToSchema)]
pub struct QueueJson {
    /// The site.
    pub site: u16,
    /// In queue order.
    pub requests: Vec<QueuedJson>,
}

/// `GET /queues`.
#[derive(Serialize, ToSchema)]
pub struct QueuesJson {
    /// By site.
    pub queues: Vec<QueueJson>,
}

/// The requests waiting in each site's busy queue.
#[utoipa::path(
    get,
    path = "/queues",
    tag = "live",
    params(QueuesQuery),
    responses(
        (status = 200, description = "The busy queues", body = QueuesJson),
        BadRequest,
        Unauthorized,
        NotFound,
    )
)]
async fn queues(
    State(s): State<ApiState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Json<QueuesJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let q: QueuesQuery = query_params(&uri)?;
    let site = q
        .site
        .map(|v| id("site", v, SiteId::new, SiteId::MAX))
        .transpose()?;
    let all = match s.live()?.query(Query::Queues { site }) {
        Ok(Answer::Queues(q)) => q,
        Ok(_) => return Err(ApiError::internal()),
        Err(e) => return Err(ApiError::from_query(e, "site")),
    };
    let in_scope = |q: &&QueuedCall| {
        p.fleets.allows(q.entry.caller.fleet) || p.fleets.allows(target_fleet(&q.entry.target))
    };
    let queues = all
        .into_iter()
        .map(|(site, entries)| QueueJson {
            site: site.get(),
            requests: entries.iter().filter(in_scope).map(queued_json).collect(),
        })
        .collect();
    Ok(Json(QueuesJson { queues }))
}

/// A provisioned site and its link.
#[derive(Serialize, ToSchema)]
pub struct LinkJson {
    /// The site.
    pub site: u16,
    /// Its name.
    pub name: String,
    /// Whether its gateway's link is up.
    pub connected: bool,
}

/// `GET /links`.
#[derive(Serialize, ToSchema)]
pub struct LinksJson {
    /// By site.
    pub links: Vec<LinkJson>,
}

/// The provisioned sites and whether their gateways are linked.
#[utoipa::path(
    get,
    path = "/links",
    tag = "live",
    responses((status = 200, description = "Every site's link", body = LinksJson), Unauthorized)
)]
async fn links(State(s): State<ApiState>, caller: Caller) -> Result<Json<LinksJson>, ApiError> {
    caller.require(Role::Viewer)?;
    let links: Vec<LinkState> = match s.live()?.query(Query::Links) {
        Ok(Answer::Links(l)) => l,
        _ => return Err(ApiError::internal()),
    };
    Ok(Json(LinksJson {
        links: links.iter().map(link_json).collect(),
    }))
}

/// `GET /parameters`: name → value.
#[derive(Serialize, ToSchema)]
pub struct ParametersJson {
    /// By name.
    pub parameters: std::collections::BTreeMap<String, String>,
}

/// The system parameters in force (admin).
#[utoipa::path(
    get,
    path = "/parameters",
    tag = "live",
    responses(
        (status = 200, description = "Every system parameter", body = ParametersJson),
        Unauthorized,
        Forbidden,
    )
)]
async fn parameters(State(s): State<ApiState>, caller: Caller) -> Result<Json<ParametersJson>, ApiError> {
    caller.require(Role::Admin)?;
    match s.live()?.query(Query::Parameters) {
        Ok(Answer::Parameters(p)) => Ok(Json(ParametersJson {
            parameters: p.into_iter().collect(),
        })),
        _ => Err(ApiError::internal()),
    }
}

/// A call in progress as the API shows it.
pub(super) fn call_json(c: &ActiveCall) -> CallJson {
    CallJson {
        call: c.view.call.get(),
        call_type: call_type(c.view.call_type),
        caller: c.view.caller.into(),
        target: c.view.target.into(),
        slots: c.view.slots.iter().map(call_slot_json).collect(),
        talker: c.view.talker.map(UnitJson::from),
        priority: c.view.priority,
        requested_at_ms: c.requested_at_ms,
        granted_at_ms: c.granted_at_ms,
    }
}

/// A slot a call holds, as the API shows it.
pub(super) fn call_slot_json(&(site, carrier, slot): &(SiteId, u8, u8)) -> CallSlotJson {
    CallSlotJson {
        site: site.get(),
        carrier,
        slot,
    }
}

/// A queued request as the API shows it.
pub(super) fn queued_json(q: &QueuedCall) -> QueuedJson {
    let e = &q.entry;
    QueuedJson {
        position: e.position,
        caller: e.caller.into(),
        call_type: call_type(e.call_type),
        target: e.target.into(),
        class: e.class,
        requested_at_ms: q.requested_at_ms,
    }
}

/// A site's link as the API shows it.
pub(super) fn link_json(l: &LinkState) -> LinkJson {
    LinkJson {
        site: l.site.get(),
        name: l.name.clone(),
        connected: l.connected,
    }
}
