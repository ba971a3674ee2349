//! History: call records (any role; an operator limited to fleets sees the calls made
//! by or to them) and the audit log (admins of every fleet), each with filters and
//! paged newest first: a page's `next_before` is the `before` of the next.
//!
//! The audit log is append-only through the API: there is no route that changes it.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::live::{fleet_in_scope, id, page_limit, TargetJson, UnitJson};
use super::openapi::{BadRequest, Forbidden, Unauthorized};
use super::{query_params, ApiError, ApiRoutes, ApiState, Caller};
use crate::auth::{Fleets, Role};
use crate::protocol::{Cause, FleetId, MemberId, SiteId, TalkgroupId, Target, Unit};
use crate::store::{AuditSearch, CallSearch};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(call_history))
        .routes(routes!(audit_log))
}

/// `GET /history/calls`' query: every criterion given must match.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CallsQuery {
    /// Requested at or after, Unix ms.
    from_ms: Option<i64>,
    /// Requested before, Unix ms.
    to_ms: Option<i64>,
    /// With `member`: calls made by or to that unit; with `talkgroup`: to that
    /// talkgroup; alone: calls made by or to the fleet.
    fleet: Option<u16>,
    member: Option<u16>,
    talkgroup: Option<u16>,
    site: Option<u16>,
    #[serde(rename = "type")]
    call_type: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

/// A call record.
#[derive(Serialize, ToSchema)]
pub struct CallRecordJson {
    /// Its place in the history (`before` pages by it).
    pub id: i64,
    /// The call id the gateways saw.
    pub call: i64,
    /// `group`, `private` or `emergency`.
    #[serde(rename = "type")]
    pub call_type: String,
    /// Who asked.
    pub caller: UnitJson,
    /// Whom for.
    pub target: TargetJson,
    /// Sites that held a slot for it.
    pub sites: Vec<u16>,
    /// Unix ms.
    pub requested_at_ms: i64,
    /// Unix ms; absent for a request never granted.
    pub granted_at_ms: Option<i64>,
    /// Unix ms: when it ended or was refused.
    pub ended_at_ms: i64,
    /// The cause code it ended (or was refused) with (PROTOCOL.md §6).
    pub cause: u8,
    /// That cause's name.
    pub cause_text: &'static str,
    /// Ended by an emergency's preemption.
    pub preempted: bool,
    /// An emergency call.
    pub emergency: bool,
}

/// A page of call records.
#[derive(Serialize, ToSchema)]
pub struct CallsPage {
    /// Newest first.
    pub calls: Vec<CallRecordJson>,
    /// Give it as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

fn range(from: Option<i64>, to: Option<i64>) -> Result<(), ApiError> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => Err(ApiError::invalid("to_ms", "to_ms must not be before from_ms")),
        _ => Ok(()),
    }
}

fn before(b: Option<i64>) -> Result<Option<i64>, ApiError> {
    match b {
        Some(b) if b < 1 => Err(ApiError::invalid("before", "before must be a positive id")),
        other => Ok(other),
    }
}

/// Call records, filtered, newest first.
#[utoipa::path(
    get,
    path = "/history/calls",
    tag = "history",
    params(CallsQuery),
    responses(
        (status = 200, description = "A page of call records, newest first", body = CallsPage),
        BadRequest,
        Unauthorized,
        Forbidden,
    )
)]
async fn call_history(
    State(s): State<ApiState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Json<CallsPage>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let q: CallsQuery = query_params(&uri)?;
    let limit = page_limit(q.limit)?;
    range(q.from_ms, q.to_ms)?;
    let fleet = q
        .fleet
        .map(|f| id("fleet", f, FleetId::new, FleetId::MAX))
        .transpose()?;
    fleet_in_scope(p, fleet)?;
    let member = q
        .member
        .map(|m| id("member", m, MemberId::new, MemberId::MAX))
        .transpose()?;
    let talkgroup = q
        .talkgroup
        .map(|t| id("talkgroup", t, TalkgroupId::new, TalkgroupId::MAX))
        .transpose()?;
    let need_fleet = |field: &str| {
        ApiError::invalid(
            field,
            format!("{field} needs fleet (it is numbered within a fleet)"),
        )
    };
    let unit = match (fleet, member) {
        (Some(fleet), Some(member)) => Some(Unit { fleet, member }),
        (None, Some(_)) => return Err(need_fleet("member")),
        _ => None,
    };
    let talkgroup = match (fleet, talkgroup) {
        (Some(f), Some(t)) => Some((f, t)),
        (None, Some(_)) => return Err(need_fleet("talkgroup")),
        _ => None,
    };
    if let Some(t) = &q.call_type {
        if !["group", "private", "emergency"].contains(&t.as_str()) {
            return Err(ApiError::invalid(
                "type",
                "type must be group, private or emergency",
            ));
        }
    }
    // A fleet alone asks for its calls; an operator limited to fleets sees only theirs.
    let fleets = match (fleet, unit, talkgroup, &p.fleets) {
        (Some(f), None, None, _) => Some(vec![f]),
        (_, _, _, Fleets::Only(mine)) => Some(mine.clone()),
        _ => None,
    };
    let search = CallSearch {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        unit,
        talkgroup,
        site: q
            .site
            .map(|v| id("site", v, SiteId::new, SiteId::MAX))
            .transpose()?,
        call_type: q.call_type,
        fleets,
        before: before(q.before)?,
        limit: limit as u32 + 1,
    };
    let mut found = s.reads.call_history(&search).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let calls = found
        .iter()
        .map(|e| {
            let r = &e.record;
            let unit = |f: i64, m: i64| -> Option<Unit> {
                Some(Unit {
                    fleet: FleetId::new(u16::try_from(f).ok()?)?,
                    member: MemberId::new(u16::try_from(m).ok()?)?,
                })
            };
            let caller = unit(r.caller_fleet, r.caller_member).ok_or_else(ApiError::internal)?;
            let target = if r.target_kind == "talkgroup" {
                let fleet = FleetId::new(r.target_fleet as u16).ok_or_else(ApiError::internal)?;
                let talkgroup = TalkgroupId::new(r.target_id as u16).ok_or_else(ApiError::internal)?;
                Target::Talkgroup { fleet, talkgroup }
            } else {
                Target::Unit(unit(r.target_fleet, r.target_id).ok_or_else(ApiError::internal)?)
            };
            let cause = u8::try_from(r.end_cause).ok().and_then(Cause::from_code);
            Ok(CallRecordJson {
                id: e.id,
                call: r.call_id,
                call_type: r.call_type.clone(),
                caller: caller.into(),
                target: target.into(),
                sites: r.sites.split(',').filter_map(|s| s.parse().ok()).collect(),
                requested_at_ms: r.requested_at,
                granted_at_ms: r.granted_at,
                ended_at_ms: r.ended_at,
                cause: r.end_cause as u8,
                cause_text: cause.map_or("unknown", Cause::text),
                preempted: r.preempted,
                emergency: r.emergency,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(CallsPage {
        next_before: if more { found.last().map(|e| e.id) } else { None },
        calls,
    }))
}

/// `GET /history/audit`'s query: every criterion given must match.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    actor: Option<String>,
    action: Option<String>,
    object: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

/// An audit-log entry.
#[derive(Serialize, ToSchema)]
pub struct AuditJson {
    /// Its place in the log (`before` pages by it).
    pub id: i64,
    /// Unix ms.
    pub at_ms: i64,
    /// Who: `api:<operator>@<client address>`, `cli:<user>`, `controller`, …
    pub actor: String,
    /// What, e.g. `subscriber.inhibit`.
    pub action: String,
    /// On what, e.g. `subscriber:001010000000001`.
    pub object: String,
    /// Details (never secrets).
    pub detail: String,
}

/// A page of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditJson>,
    /// Give it as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// The audit log, filtered, newest first.
#[utoipa::path(
    get,
    path = "/history/audit",
    tag = "history",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log, newest first", body = AuditPage),
        BadRequest,
        Unauthorized,
        Forbidden,
    )
)]
async fn audit_log(
    State(s): State<ApiState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Json<AuditPage>, ApiError> {
    let p = caller.require(Role::Admin)?;
    if let Fleets::Only(_) = p.fleets {
        return Err(ApiError::forbidden(format!(
            "the audit log needs an admin of every fleet; {} is limited to some",
            p.name
        )));
    }
    let q: AuditQuery = query_params(&uri)?;
    let limit = page_limit(q.limit)?;
    range(q.from_ms, q.to_ms)?;
    let search = AuditSearch {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        actor: q.actor,
        action: q.action,
        object: q.object,
        before: before(q.before)?,
        limit: limit as u32 + 1,
    };
    let mut found = s.reads.audit(&search).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    Ok(Json(AuditPage {
        next_before: if more { found.last().map(|e| e.id) } else { None },
        entries: found
            .into_iter()
            .map(|e| AuditJson {
                id: e.id,
                at_ms: e.at,
                actor: e.actor,
                action: e.action,
                object: e.object,
                detail: e.detail,
            })
            .collect(),
    }))
}
