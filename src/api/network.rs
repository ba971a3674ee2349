//! Fleets, their talkgroups (with the subscribers permitted on each) and sites, as
//! operators keep them: create, read, rename, delete; a site's link key is shown once,
//! when trunkd generates it (at creation, or `POST /sites/{site}/key`), never read back.
//!
//! Rights: any role reads; an admin writes. An operator limited to fleets sees and
//! changes only their fleets and talkgroups; fleets and sites are created and removed
//! by admins of every fleet (they belong to no fleet of their own), and sites are the
//! infrastructure every operator sees.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::commands::actor;
use super::live::{fleet_in_scope, page_limit, path_id};
use super::openapi::{BadRequest, BodyRefused, Conflict, Forbidden, NotFound, Unauthorized};
use super::{query_params, ApiError, ApiRoutes, ApiState, Body, Caller};
use crate::auth::{Fleets, Principal, Role};
use crate::controller::Reads;
use crate::hlr::{Fleet, Site, Talkgroup};
use crate::protocol::{FleetId, Imsi, SiteId, SiteKey, TalkgroupId};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(fleets, add_fleet))
        .routes(routes!(fleet, rename_fleet, remove_fleet))
        .routes(routes!(talkgroups, add_talkgroup))
        .routes(routes!(talkgroup, rename_talkgroup, remove_talkgroup))
        .routes(routes!(members))
        .routes(routes!(sites, add_site))
        .routes(routes!(site, rename_site, remove_site))
        .routes(routes!(rekey_site))
}

/// A fleet.
#[derive(Serialize, ToSchema)]
pub struct FleetJson {
    /// Fleet id.
    pub id: u16,
    /// Its name.
    pub name: String,
}

/// `GET /fleets`.
#[derive(Serialize, ToSchema)]
pub struct FleetsJson {
    /// By id.
    pub fleets: Vec<FleetJson>,
}

/// A body that names something: `{"name": …}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// The new name.
    pub name: String,
}

/// `POST /fleets`'s and `POST /fleets/{fleet}/talkgroups`' body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNamed {
    /// Its id, 1..=65535.
    pub id: u16,
    /// Its name.
    pub name: String,
}

/// 403 unless `p` acts on every fleet.
fn every_fleet(p: &Principal, what: &str) -> Result<(), ApiError> {
    match p.fleets {
        Fleets::All => Ok(()),
        Fleets::Only(_) => Err(ApiError::forbidden(format!(
            "{what} needs an operator of every fleet; {} is limited to some",
            p.name
        ))),
    }
}

fn not_found(m: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", m)
}

/// The fleets the caller sees.
#[utoipa::path(
    get,
    path = "/fleets",
    tag = "network",
    responses(
        (status = 200, description = "The fleets the caller sees", body = FleetsJson),
        Unauthorized,
        Forbidden,
    )
)]
async fn fleets(State(s): State<ApiState>, caller: Caller) -> Result<Json<FleetsJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let all = s.reads.fleets().await?;
    Ok(Json(FleetsJson {
        fleets: all
            .into_iter()
            .filter(|f| p.fleets.allows(f.id))
            .map(|f| FleetJson {
                id: f.id.get(),
                name: f.name,
            })
            .collect(),
    }))
}

/// The fleet named in the path, if `p` may see it.
fn fleet_of(p: &Principal, raw: &str) -> Result<FleetId, ApiError> {
    let f = path_id("fleet", raw, FleetId::new, FleetId::MAX)?;
    fleet_in_scope(p, Some(f))?;
    Ok(f)
}

/// One fleet.
#[utoipa::path(
    get,
    path = "/fleets/{fleet}",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet")),
    responses(
        (status = 200, description = "The fleet", body = FleetJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn fleet(
    State(s): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<FleetJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let id = fleet_of(p, &raw)?;
    let f = s
        .reads
        .fleets()
        .await?
        .into_iter()
        .find(|f| f.id == id)
        .ok_or_else(|| not_found(format!("fleet {id} does not exist")))?;
    Ok(Json(FleetJson {
        id: f.id.get(),
        name: f.name,
    }))
}

/// Create a fleet.
#[utoipa::path(
    post,
    path = "/fleets",
    tag = "network",
    request_body = NewNamed,
    responses(
        (status = 201, description = "Created", body = FleetJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn add_fleet(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Body(b): Body<NewNamed>,
) -> Result<(StatusCode, Json<FleetJson>), ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "creating a fleet")?;
    let id = FleetId::new(b.id).ok_or_else(|| ApiError::invalid("id", "id must be 1..=65535"))?;
    let fleet = Fleet { id, name: b.name };
    s.live()?.records().add_fleet(&actor(p, peer), &fleet).await?;
    Ok((
        StatusCode::CREATED,
        Json(FleetJson {
            id: id.get(),
            name: fleet.name,
        }),
    ))
}

/// Rename a fleet.
#[utoipa::path(
    patch,
    path = "/fleets/{fleet}",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet")),
    request_body = NameBody,
    responses(
        (status = 200, description = "Renamed", body = FleetJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn rename_fleet(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<NameBody>,
) -> Result<Json<FleetJson>, ApiError> {
    let p = caller.require(Role::Admin)?;
    let id = fleet_of(p, &raw)?;
    s.live()?
        .records()
        .rename_fleet(&actor(p, peer), id, &b.name)
        .await?;
    Ok(Json(FleetJson {
        id: id.get(),
        name: b.name,
    }))
}

/// Remove a fleet with no talkgroups or subscribers.
#[utoipa::path(
    delete,
    path = "/fleets/{fleet}",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet")),
    responses(
        (status = 204, description = "Removed"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn remove_fleet(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "removing a fleet")?;
    let id = fleet_of(p, &raw)?;
    s.live()?.records().remove_fleet(&actor(p, peer), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A talkgroup.
#[derive(Serialize, ToSchema)]
pub struct TalkgroupJson {
    /// Its fleet.
    pub fleet: u16,
    /// Talkgroup id within the fleet.
    pub id: u16,
    /// Its name.
    pub name: String,
}

impl From<Talkgroup> for TalkgroupJson {
    fn from(t: Talkgroup) -> Self {
        TalkgroupJson {
            fleet: t.fleet.get(),
            id: t.id.get(),
            name: t.name,
        }
    }
}

/// `GET /fleets/{fleet}/talkgroups`.
#[derive(Serialize, ToSchema)]
pub struct TalkgroupsJson {
    /// By id.
    pub talkgroups: Vec<TalkgroupJson>,
}

/// A fleet's talkgroups.
#[utoipa::path(
    get,
    path = "/fleets/{fleet}/talkgroups",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet")),
    responses(
        (status = 200, description = "The fleet's talkgroups", body = TalkgroupsJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn talkgroups(
    State(s): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<TalkgroupsJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let fleet = fleet_of(p, &raw)?;
    if !s.reads.fleets().await?.iter().any(|f| f.id == fleet) {
        return Err(not_found(format!("fleet {fleet} does not exist")));
    }
    let all = s.reads.talkgroups(Some(fleet)).await?;
    Ok(Json(TalkgroupsJson {
        talkgroups: all.into_iter().map(TalkgroupJson::from).collect(),
    }))
}

/// The fleet and talkgroup named in the path, if `p` may see the fleet.
fn talkgroup_of(p: &Principal, (fleet, tg): &(String, String)) -> Result<(FleetId, TalkgroupId), ApiError> {
    let fleet = fleet_of(p, fleet)?;
    Ok((
        fleet,
        path_id("talkgroup", tg, TalkgroupId::new, TalkgroupId::MAX)?,
    ))
}

async fn find_talkgroup(s: &ApiState, fleet: FleetId, id: TalkgroupId) -> Result<Talkgroup, ApiError> {
    s.reads
        .talkgroups(Some(fleet))
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| not_found(format!("talkgroup {id} does not exist in fleet {fleet}")))
}

/// One talkgroup.
#[utoipa::path(
    get,
    path = "/fleets/{fleet}/talkgroups/{talkgroup}",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet"), ("talkgroup" = u16, Path, minimum = 1, maximum = 65535, description = "The talkgroup within the fleet")),
    responses(
        (status = 200, description = "The talkgroup", body = TalkgroupJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn talkgroup(
    State(s): State<ApiState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
) -> Result<Json<TalkgroupJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let (fleet, id) = talkgroup_of(p, &path)?;
    Ok(Json(find_talkgroup(&s, fleet, id).await?.into()))
}

/// Create a talkgroup in a fleet.
#[utoipa::path(
    post,
    path = "/fleets/{fleet}/talkgroups",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet")),
    request_body = NewNamed,
    responses(
        (status = 201, description = "Created", body = TalkgroupJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn add_talkgroup(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<NewNamed>,
) -> Result<(StatusCode, Json<TalkgroupJson>), ApiError> {
    let p = caller.require(Role::Admin)?;
    let fleet = fleet_of(p, &raw)?;
    let id = TalkgroupId::new(b.id).ok_or_else(|| ApiError::invalid("id", "id must be 1..=65535"))?;
    let tg = Talkgroup {
        fleet,
        id,
        name: b.name,
    };
    s.live()?.records().add_talkgroup(&actor(p, peer), &tg).await?;
    Ok((StatusCode::CREATED, Json(tg.into())))
}

/// Rename a talkgroup.
#[utoipa::path(
    patch,
    path = "/fleets/{fleet}/talkgroups/{talkgroup}",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet"), ("talkgroup" = u16, Path, minimum = 1, maximum = 65535, description = "The talkgroup within the fleet")),
    request_body = NameBody,
    responses(
        (status = 200, description = "Renamed", body = TalkgroupJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn rename_talkgroup(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Body(b): Body<NameBody>,
) -> Result<Json<TalkgroupJson>, ApiError> {
    let p = caller.require(Role::Admin)?;
    let (fleet, id) = talkgroup_of(p, &path)?;
    s.live()?
        .records()
        .rename_talkgroup(&actor(p, peer), fleet, id, &b.name)
        .await?;
    Ok(Json(TalkgroupJson {
        fleet: fleet.get(),
        id: id.get(),
        name: b.name,
    }))
}

/// Remove a talkgroup no subscriber is permitted on.
#[utoipa::path(
    delete,
    path = "/fleets/{fleet}/talkgroups/{talkgroup}",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet"), ("talkgroup" = u16, Path, minimum = 1, maximum = 65535, description = "The talkgroup within the fleet")),
    responses(
        (status = 204, description = "Removed"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn remove_talkgroup(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(path): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    let (fleet, id) = talkgroup_of(p, &path)?;
    s.live()?
        .records()
        .remove_talkgroup(&actor(p, peer), fleet, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/members`' query.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MembersQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// A page of the subscribers permitted on a talkgroup.
#[derive(Serialize, ToSchema)]
pub struct MembersPage {
    /// Their IMSIs, in order.
    pub members: Vec<String>,
    /// Give it as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// The subscribers permitted on a talkgroup, a page at a time.
#[utoipa::path(
    get,
    path = "/fleets/{fleet}/talkgroups/{talkgroup}/members",
    tag = "network",
    params(("fleet" = u16, Path, minimum = 1, maximum = 65535, description = "The fleet"), ("talkgroup" = u16, Path, minimum = 1, maximum = 65535, description = "The talkgroup within the fleet"), MembersQuery),
    responses(
        (status = 200, description = "A page of the subscribers permitted on it", body = MembersPage),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn members(
    State(s): State<ApiState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Json<MembersPage>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let (fleet, id) = talkgroup_of(p, &path)?;
    let q: MembersQuery = query_params(&uri)?;
    let limit = page_limit(q.limit)?;
    let after = q
        .after
        .as_deref()
        .map(|a| Imsi::parse(a).map_err(|e| ApiError::invalid("after", e.to_string())))
        .transpose()?;
    find_talkgroup(&s, fleet, id).await?;
    let mut page = s
        .reads
        .talkgroup_members(fleet, id, after, limit as u32 + 1)
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    Ok(Json(MembersPage {
        next_after: more.then(|| page.last().map(ToString::to_string)).flatten(),
        members: page.iter().map(ToString::to_string).collect(),
    }))
}

/// A site, never its key.
#[derive(Serialize, ToSchema)]
pub struct SiteJson {
    /// Site id.
    pub id: u16,
    /// Its name.
    pub name: String,
    /// Carriers.
    pub carriers: u8,
    /// Slots per carrier.
    pub slots_per_carrier: u8,
}

impl From<&Site> for SiteJson {
    fn from(s: &Site) -> Self {
        SiteJson {
            id: s.id.get(),
            name: s.name.clone(),
            carriers: s.carriers,
            slots_per_carrier: s.slots_per_carrier,
        }
    }
}

/// `GET /sites`.
#[derive(Serialize, ToSchema)]
pub struct SitesJson {
    /// By id.
    pub sites: Vec<SiteJson>,
}

/// Every site (never its link key).
#[utoipa::path(
    get,
    path = "/sites",
    tag = "network",
    responses(
        (status = 200, description = "Every site, never its link key", body = SitesJson),
        Unauthorized,
        Forbidden,
    )
)]
async fn sites(State(s): State<ApiState>, caller: Caller) -> Result<Json<SitesJson>, ApiError> {
    caller.require(Role::Viewer)?;
    let all = s.reads.sites().await?;
    Ok(Json(SitesJson {
        sites: all.iter().map(SiteJson::from).collect(),
    }))
}

/// One site (never its link key).
#[utoipa::path(
    get,
    path = "/sites/{site}",
    tag = "network",
    params(("site" = u16, Path, minimum = 1, maximum = 4095, description = "The site")),
    responses(
        (status = 200, description = "The site, never its link key", body = SiteJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
    )
)]
async fn site(
    State(s): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<SiteJson>, ApiError> {
    caller.require(Role::Viewer)?;
    let id = path_id("site", &raw, SiteId::new, SiteId::MAX)?;
    let site = find_site(&s.reads, id).await?;
    Ok(Json((&site).into()))
}

async fn find_site(reads: &Reads, id: SiteId) -> Result<Site, ApiError> {
    reads
        .sites()
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| not_found(format!("site {id} does not exist")))
}

/// `POST /sites`' body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSiteBody {
    /// Site id, 1..=4095.
    pub id: u16,
    /// Its name.
    pub name: String,
    /// Carriers, 1..=8.
    pub carriers: u8,
    /// Slots per carrier, 2..=6.
    pub slots_per_carrier: u8,
}

/// A site with the link key trunkd generated for it: shown in this answer only.
#[derive(Serialize, ToSchema)]
pub struct SiteWithKey {
    /// The site.
    pub site: SiteJson,
    /// Its link key, 64 hex digits: configure it on the site's gateway.
    pub link_key: String,
}

fn new_key() -> Result<SiteKey, ApiError> {
    SiteKey::generate().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no randomness for the link key",
        )
    })
}

/// Create a site with a generated link key.
#[utoipa::path(
    post,
    path = "/sites",
    tag = "network",
    request_body = NewSiteBody,
    responses(
        (status = 201, description = "Created, with its generated link key shown here only", body = SiteWithKey),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn add_site(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Body(b): Body<NewSiteBody>,
) -> Result<(StatusCode, Json<SiteWithKey>), ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "creating a site")?;
    let site = Site {
        id: SiteId::new(b.id)
            .ok_or_else(|| ApiError::invalid("id", format!("id must be 1..={}", SiteId::MAX)))?,
        name: b.name,
        carriers: b.carriers,
        slots_per_carrier: b.slots_per_carrier,
        key: new_key()?,
    };
    s.live()?.records().add_site(&actor(p, peer), &site).await?;
    Ok((
        StatusCode::CREATED,
        Json(SiteWithKey {
            site: (&site).into(),
            link_key: site.key.to_hex(),
        }),
    ))
}

/// Rename a site.
#[utoipa::path(
    patch,
    path = "/sites/{site}",
    tag = "network",
    params(("site" = u16, Path, minimum = 1, maximum = 4095, description = "The site")),
    request_body = NameBody,
    responses(
        (status = 200, description = "Renamed", body = SiteJson),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        BodyRefused,
    )
)]
async fn rename_site(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<NameBody>,
) -> Result<Json<SiteJson>, ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "changing a site")?;
    let id = path_id("site", &raw, SiteId::new, SiteId::MAX)?;
    s.live()?
        .records()
        .rename_site(&actor(p, peer), id, &b.name)
        .await?;
    let site = find_site(&s.reads, id).await?;
    Ok(Json((&site).into()))
}

/// `POST /sites/{site}/key`: a new link key, generated, shown in the answer only. The
/// gateway's link up now stays up; its next handshake needs the new key.
#[utoipa::path(
    post,
    path = "/sites/{site}/key",
    tag = "network",
    params(("site" = u16, Path, minimum = 1, maximum = 4095, description = "The site")),
    responses(
        (status = 200, description = "A new link key, shown here only", body = SiteWithKey),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn rekey_site(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<SiteWithKey>, ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "changing a site's key")?;
    let id = path_id("site", &raw, SiteId::new, SiteId::MAX)?;
    let key = new_key()?;
    s.live()?
        .records()
        .set_site_key(&actor(p, peer), id, &key)
        .await?;
    let site = find_site(&s.reads, id).await?;
    Ok(Json(SiteWithKey {
        site: (&site).into(),
        link_key: key.to_hex(),
    }))
}

/// Remove a site.
#[utoipa::path(
    delete,
    path = "/sites/{site}",
    tag = "network",
    params(("site" = u16, Path, minimum = 1, maximum = 4095, description = "The site")),
    responses(
        (status = 204, description = "Removed"),
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
    )
)]
async fn remove_site(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "removing a site")?;
    let id = path_id("site", &raw, SiteId::new, SiteId::MAX)?;
    s.live()?.records().remove_site(&actor(p, peer), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
