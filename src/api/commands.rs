//! What operators do: radio commands followed by id (inhibit, enable, radio check, call
//! alert; read back at `GET /commands/{id}`), authorising a subscriber, releasing a call, taking a
//! slot or carrier out of service, and changing system parameters.
//!
//! Rights: a dispatcher inhibits, enables, checks, alerts and releases calls; an admin also
//! authorises, changes slots' service and parameters. An operator limited to fleets acts
//! only on their subscribers and calls. Every change is written to the audit log with the
//! actor `api:<operator>@<client address>`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::live::{calls_in_scope, id};
use super::openapi::{BadRequest, BodyRefused, Conflict, Forbidden, NotFound, Unauthorized};
use super::{ApiError, ApiRoutes, ApiState, Body, Caller};
use crate::auth::{Principal, Role};
use crate::controller::{Command, CommandError, CommandKind, CommandState, Outcome, TrackedCommand};
use crate::hlr::Permissions;
use crate::protocol::{CallId, FleetId, Imsi, MemberId, SiteId, Unit};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(inhibit))
        .routes(routes!(enable))
        .routes(routes!(radio_check))
        .routes(routes!(alert))
        .routes(routes!(authorize))
        .routes(routes!(command))
        .routes(routes!(release))
        .routes(routes!(out_of_service))
        .routes(routes!(in_service))
        .routes(routes!(set_parameter))
}

/// The audit log's actor for `p` at `peer`.
pub(super) fn actor(p: &Principal, peer: SocketAddr) -> String {
    format!("api:{}@{}", p.name, peer.ip())
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match &e {
            CommandError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m.clone()),
            CommandError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", m.clone()),
            CommandError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m.clone()),
            CommandError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
            }
            CommandError::Refused(c) => {
                ApiError::new(StatusCode::CONFLICT, "refused", format!("refused: {c}"))
            }
        }
    }
}

/// A radio command and where it stands.
#[derive(Serialize, ToSchema)]
pub struct CommandJson {
    /// Its id.
    pub id: String,
    /// `inhibit`, `enable`, `check` or `alert`.
    pub kind: &'static str,
    /// The subscriber.
    pub imsi: String,
    /// Who asked.
    pub actor: String,
    /// `pending`, `acknowledged`, `failed` or `timed_out`.
    pub state: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub updated_at_ms: i64,
}

impl From<TrackedCommand> for CommandJson {
    fn from(c: TrackedCommand) -> Self {
        CommandJson {
            id: c.id,
            kind: c.kind.as_str(),
            imsi: c.imsi.to_string(),
            actor: c.actor,
            state: c.state.as_str(),
            reason: match c.state {
                CommandState::Failed { reason } => Some(reason),
                _ => None,
            },
            created_at_ms: c.created_at_ms,
            updated_at_ms: c.updated_at_ms,
        }
    }
}

/// The subscriber named in the path, if `p` may act on its fleet.
fn subscriber(s: &ApiState, p: &Principal, imsi: &str) -> Result<Imsi, ApiError> {
    let imsi = Imsi::parse(imsi).map_err(|e| ApiError::invalid("imsi", e.to_string()))?;
    let unit = s.live()?.unit_of(imsi).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("subscriber {imsi} does not exist"),
        )
    })?;
    if !p.fleets.allows(unit.fleet) {
        return Err(ApiError::forbidden(format!(
            "subscriber {imsi} is not in {}'s fleets",
            p.name
        )));
    }
    Ok(imsi)
}

async fn radio(
    s: ApiState,
    caller: Caller,
    peer: SocketAddr,
    imsi: String,
    kind: CommandKind,
    from: Option<Unit>,
) -> Result<(StatusCode, Json<CommandJson>), ApiError> {
    let p = caller.require(Role::Dispatcher)?;
    let imsi = subscriber(&s, p, &imsi)?;
    let c = s.live()?.radio_command(&actor(p, peer), kind, imsi, from).await?;
    Ok((StatusCode::ACCEPTED, Json(c.into())))
}

/// Inhibits a subscriber (dispatcher): refused from now on, and its radio told.
#[utoipa::path(
    post,
    path = "/subscribers/{imsi}/inhibit",
    tag = "commands",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    responses(
        (status = 202, description = "The command, pending; follow it at /commands/{id} or on \
            the event stream", body = CommandJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn inhibit(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(imsi): Path<String>,
) -> Result<(StatusCode, Json<CommandJson>), ApiError> {
    radio(s, caller, peer, imsi, CommandKind::Inhibit, None).await
}

/// Enables an inhibited subscriber again (dispatcher).
#[utoipa::path(
    post,
    path = "/subscribers/{imsi}/enable",
    tag = "commands",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    responses(
        (status = 202, description = "The command, pending; follow it at /commands/{id} or on \
            the event stream", body = CommandJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn enable(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(imsi): Path<String>,
) -> Result<(StatusCode, Json<CommandJson>), ApiError> {
    radio(s, caller, peer, imsi, CommandKind::Enable, None).await
}

/// Checks whether a subscriber's radio is reachable now (dispatcher): `acknowledged` when
/// the radio answered its gateway, `timed_out` when it did not, `failed` at once when the
/// unit is not registered.
#[utoipa::path(
    post,
    path = "/subscribers/{imsi}/check",
    tag = "commands",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    responses(
        (status = 202, description = "The command, pending (or failed when the unit is not \
            registered); follow it at /commands/{id} or on the event stream", body = CommandJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn radio_check(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(imsi): Path<String>,
) -> Result<(StatusCode, Json<CommandJson>), ApiError> {
    radio(s, caller, peer, imsi, CommandKind::Check, None).await
}

/// `POST /subscribers/{imsi}/alert`'s body: the console's own unit address.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertBody {
    /// The dispatcher's unit (a provisioned subscriber with the private-call permission).
    pub from: UnitBody,
}

/// A unit address in a body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitBody {
    /// Fleet id.
    #[schema(minimum = 1, maximum = 65535)]
    pub fleet: u16,
    /// Member id.
    #[schema(minimum = 1, maximum = 65535)]
    pub member: u16,
}

impl UnitBody {
    pub(super) fn unit(&self, field: &str) -> Result<Unit, ApiError> {
        let fleet = FleetId::new(self.fleet)
            .ok_or_else(|| ApiError::invalid(&format!("{field}.fleet"), "must be 1..=65535"))?;
        let member = MemberId::new(self.member)
            .ok_or_else(|| ApiError::invalid(&format!("{field}.member"), "must be 1..=65535"))?;
        Ok(Unit { fleet, member })
    }
}

/// Sends a call alert to a subscriber from the console's own unit (dispatcher).
#[utoipa::path(
    post,
    path = "/subscribers/{imsi}/alert",
    tag = "commands",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    request_body = AlertBody,
    responses(
        (status = 202, description = "The command, pending; follow it at /commands/{id} or on \
            the event stream", body = CommandJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn alert(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(imsi): Path<String>,
    Body(body): Body<AlertBody>,
) -> Result<(StatusCode, Json<CommandJson>), ApiError> {
    let from = body.from.unit("from")?;
    if !caller.0.fleets.allows(from.fleet) {
        return Err(ApiError::forbidden(format!(
            "unit {} is not in {}'s fleets",
            from.fleet, caller.0.name
        )));
    }
    radio(s, caller, peer, imsi, CommandKind::Alert, Some(from)).await
}

/// A radio command and where it stands.
#[utoipa::path(
    get,
    path = "/commands/{id}",
    tag = "commands",
    params(("id" = String, Path, description = "The id the command was answered with")),
    responses(
        (status = 200, description = "The command", body = CommandJson),
        Unauthorized,
        NotFound,
    )
)]
async fn command(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CommandJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let live = s.live()?;
    let c = live
        .tracked_command(&id)
        .filter(|c| live.unit_of(c.imsi).is_none_or(|u| p.fleets.allows(u.fleet)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no command {id}")))?;
    Ok(Json(c.into()))
}

/// `POST /subscribers/{imsi}/authorize`'s body: each part only when given.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct AuthorizeBody {
    /// Priority level, 0..=15.
    #[schema(maximum = 15)]
    pub priority: Option<u8>,
    /// Permissions: `group`, `private`, `emergency`, `data`, `interconnect`, `all` or
    /// `none`, separated by `,`.
    pub permissions: Option<String>,
}

/// Changes a subscriber's priority or permissions (admin), in force for its next request.
#[utoipa::path(
    post,
    path = "/subscribers/{imsi}/authorize",
    tag = "commands",
    params(("imsi" = String, Path, pattern = "^[0-9]{15}$", description = "The subscriber's IMSI")),
    request_body = AuthorizeBody,
    responses(
        (status = 204, description = "Done"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn authorize(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(imsi): Path<String>,
    Body(body): Body<AuthorizeBody>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    let imsi = subscriber(&s, p, &imsi)?;
    let permissions = body
        .permissions
        .map(|t| Permissions::parse(&t).map_err(|e| ApiError::invalid("permissions", e)))
        .transpose()?;
    if let Some(pr) = body.priority.filter(|p| *p > 15) {
        return Err(ApiError::invalid(
            "priority",
            format!("priority {pr} is outside 0..=15"),
        ));
    }
    let cmd = Command::Authorize {
        imsi,
        priority: body.priority,
        permissions,
    };
    s.live()?.command(&actor(p, peer), cmd).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends a call in progress (dispatcher), with cause 0x5F.
#[utoipa::path(
    post,
    path = "/calls/{call}/release",
    tag = "commands",
    params(("call" = u64, Path, minimum = 1, description = "The call id, 1..=4294967295")),
    responses(
        (status = 204, description = "The call is over"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn release(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(call): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Dispatcher)?;
    let call = call
        .parse::<u32>()
        .ok()
        .and_then(CallId::new)
        .ok_or_else(|| ApiError::invalid("call", "a call id is 1..=4294967295"))?;
    if !calls_in_scope(&s, p)?.iter().any(|c| c.view.call == call) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("call {call} is not in progress"),
        ));
    }
    s.live()?
        .command(&actor(p, peer), Command::EndCall { call })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which slot (or with no `slot`, whole carrier) of a site.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotBody {
    /// Carrier, 0..=63.
    #[schema(maximum = 63)]
    pub carrier: u8,
    /// Slot, 0..=5; absent for the whole carrier.
    #[schema(maximum = 5)]
    pub slot: Option<u8>,
}

async fn slot_service(
    s: ApiState,
    caller: Caller,
    peer: SocketAddr,
    site: String,
    body: SlotBody,
    out: bool,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    let site = site
        .parse::<u16>()
        .map_err(|_| ApiError::invalid("site", "site must be 1..=4095"))
        .and_then(|v| id("site", v, SiteId::new, SiteId::MAX))?;
    let (carrier, slot) = (body.carrier, body.slot);
    let cmd = if out {
        Command::SlotOutOfService { site, carrier, slot }
    } else {
        Command::SlotInService { site, carrier, slot }
    };
    s.live()?.command(&actor(p, peer), cmd).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a slot, or a whole carrier, out of service (admin).
#[utoipa::path(
    post,
    path = "/sites/{site}/slots/out-of-service",
    tag = "commands",
    params(("site" = u16, Path, minimum = 1, maximum = 4095, description = "The site")),
    request_body = SlotBody,
    responses(
        (status = 204, description = "Done"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn out_of_service(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(site): Path<String>,
    Body(body): Body<SlotBody>,
) -> Result<StatusCode, ApiError> {
    slot_service(s, caller, peer, site, body, true).await
}

/// Puts a slot, or a whole carrier, back in service (admin).
#[utoipa::path(
    post,
    path = "/sites/{site}/slots/in-service",
    tag = "commands",
    params(("site" = u16, Path, minimum = 1, maximum = 4095, description = "The site")),
    request_body = SlotBody,
    responses(
        (status = 204, description = "Done"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn in_service(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(site): Path<String>,
    Body(body): Body<SlotBody>,
) -> Result<StatusCode, ApiError> {
    slot_service(s, caller, peer, site, body, false).await
}

/// `PUT /parameters/{name}`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParameterBody {
    /// The new value, as text.
    pub value: String,
}

/// A system parameter's name: one of [`crate::params::NAMES`].
pub struct ParameterName;

impl utoipa::PartialSchema for ParameterName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(crate::params::NAMES))
            .into()
    }
}

impl ToSchema for ParameterName {}

/// A parameter as it now is.
#[derive(Serialize, ToSchema)]
pub struct ParameterJson {
    /// Its name.
    pub name: String,
    /// Its value in force.
    pub value: String,
}

/// Changes a system parameter (admin), in force for the next request.
#[utoipa::path(
    put,
    path = "/parameters/{name}",
    tag = "commands",
    params(("name" = inline(ParameterName), Path, description = "The parameter, as `GET /parameters` names it")),
    request_body = ParameterBody,
    responses(
        (status = 200, description = "The parameter as it now is", body = ParameterJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn set_parameter(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<ParameterBody>,
) -> Result<Json<ParameterJson>, ApiError> {
    let p = caller.require(Role::Admin)?;
    if !crate::params::NAMES.contains(&name.as_str()) {
        return Err(ApiError {
            field: Some("name".into()),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("there is no system parameter {name:?}"),
            )
        });
    }
    let cmd = Command::SetParameter {
        name,
        value: body.value,
    };
    match s.live()?.command(&actor(p, peer), cmd).await {
        Ok(Outcome::Parameter { name, value }) => Ok(Json(ParameterJson { name, value })),
        Ok(_) => Err(ApiError::internal()),
        Err(CommandError::Invalid(m)) => Err(ApiError::invalid("value", m)),
        Err(e) => Err(e.into()),
    }
}
