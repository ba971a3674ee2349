//! Messages from a dispatcher's console: a status code or short data, to a unit or a
//! talkgroup, sent as one of the fleet's units (`from`, a provisioned subscriber with the
//! right permission). The answer waits for the outcome: delivered to the unit, sent to
//! the talkgroup's units on the air, or stored for a unit off the air (short data);
//! refused with the cause a radio's `DENY` would carry (409 `refused`).
//!
//! Rights: a dispatcher or admin, for `from` and the target in its fleets.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::commands::{actor, UnitBody};
use super::live::id;
use super::openapi::{BadRequest, BodyRefused, Conflict, Forbidden, NotFound, Unauthorized};
use super::{ApiError, ApiRoutes, ApiState, Body, Caller};
use crate::auth::{Principal, Role};
use crate::controller::{Command, Outcome};
use crate::protocol::{FleetId, ShortData, TalkgroupId, Target, Unit};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(status))
        .routes(routes!(short_data))
}

/// Whom a message is for.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetBody {
    /// One unit.
    Unit {
        /// Fleet id.
        fleet: u16,
        /// Member id.
        member: u16,
    },
    /// A talkgroup's units on the air.
    Talkgroup {
        /// Fleet id.
        fleet: u16,
        /// Talkgroup id.
        talkgroup: u16,
    },
}

impl TargetBody {
    fn target(&self) -> Result<Target, ApiError> {
        Ok(match *self {
            TargetBody::Unit { fleet, member } => Target::Unit(UnitBody { fleet, member }.unit("to")?),
            TargetBody::Talkgroup { fleet, talkgroup } => Target::Talkgroup {
                fleet: id("to.fleet", fleet, FleetId::new, FleetId::MAX)?,
                talkgroup: id("to.talkgroup", talkgroup, TalkgroupId::new, TalkgroupId::MAX)?,
            },
        })
    }
}

/// `POST /messages/status`' body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// The console's unit.
    pub from: UnitBody,
    /// Whom for.
    pub to: TargetBody,
    /// The status code, 0..=65535.
    pub code: u16,
}

/// `POST /messages/short-data`' body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShortDataBody {
    /// The console's unit.
    pub from: UnitBody,
    /// Whom for.
    pub to: TargetBody,
    /// The payload, base64 (standard alphabet, padded): 1 to 1024 bytes.
    pub data: String,
}

/// What became of a message.
#[derive(Serialize, ToSchema)]
pub struct MessageOutcome {
    /// `delivered`, `sent_to_talkgroup` or `stored`.
    pub outcome: &'static str,
    /// For a talkgroup or stored short data: how many units it went to or waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<usize>,
}

/// The console's unit and the target, if `p` may send between them.
fn ends(p: &Principal, from: &UnitBody, to: &TargetBody) -> Result<(Unit, Target), ApiError> {
    let (from, to) = (from.unit("from")?, to.target()?);
    let to_fleet = match to {
        Target::Unit(u) => u.fleet,
        Target::Talkgroup { fleet, .. } => fleet,
    };
    for (field, fleet) in [("from", from.fleet), ("to", to_fleet)] {
        if !p.fleets.allows(fleet) {
            return Err(ApiError {
                field: Some(field.into()),
                ..ApiError::forbidden(format!("fleet {fleet} is not among {}'s fleets", p.name))
            });
        }
    }
    Ok((from, to))
}

async fn send(s: &ApiState, who: String, command: Command) -> Result<Json<MessageOutcome>, ApiError> {
    let (outcome, recipients) = match s.live()?.command(&who, command).await? {
        Outcome::Delivered => ("delivered", None),
        Outcome::SentToTalkgroup { recipients } => ("sent_to_talkgroup", Some(recipients)),
        Outcome::Stored { recipients } => ("stored", Some(recipients)),
        _ => return Err(ApiError::internal()),
    };
    Ok(Json(MessageOutcome { outcome, recipients }))
}

/// Send a status code from a console.
#[utoipa::path(
    post,
    path = "/messages/status",
    tag = "messages",
    request_body = StatusBody,
    responses(
        (status = 200, description = "What became of it", body = MessageOutcome),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn status(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Body(b): Body<StatusBody>,
) -> Result<Json<MessageOutcome>, ApiError> {
    let p = caller.require(Role::Dispatcher)?;
    let (from, target) = ends(p, &b.from, &b.to)?;
    let command = Command::Status {
        from,
        target,
        code: b.code,
    };
    send(&s, actor(p, peer), command).await
}

/// Send short data from a console.
#[utoipa::path(
    post,
    path = "/messages/short-data",
    tag = "messages",
    request_body = ShortDataBody,
    responses(
        (status = 200, description = "What became of it", body = MessageOutcome),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn short_data(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Body(b): Body<ShortDataBody>,
) -> Result<Json<MessageOutcome>, ApiError> {
    let p = caller.require(Role::Dispatcher)?;
    let (from, target) = ends(p, &b.from, &b.to)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b.data.as_bytes())
        .map_err(|e| ApiError::invalid("data", format!("data must be base64: {e}")))?;
    let data = ShortData::new(bytes).ok_or_else(|| {
        ApiError::invalid("data", format!("data must be 1 to {} bytes", ShortData::MAX_LEN))
    })?;
    let command = Command::ShortData { from, target, data };
    send(&s, actor(p, peer), command).await
}
