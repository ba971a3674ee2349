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
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::commands::actor;
use super::live::{fleet_in_scope, page_limit, path_id};
use super::{query_params, ApiError, ApiState, Body, Caller};
use crate::auth::{Fleets, Principal, Role};
use crate::controller::Records;
use crate::hlr::{Fleet, Site, Talkgroup};
use crate::protocol::{FleetId, Imsi, SiteId, SiteKey, TalkgroupId};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/fleets", get(fleets).post(add_fleet))
        .route(
            "/fleets/{fleet}",
            get(fleet).patch(rename_fleet).delete(remove_fleet),
        )
        .route("/fleets/{fleet}/talkgroups", get(talkgroups).post(add_talkgroup))
        .route(
            "/fleets/{fleet}/talkgroups/{talkgroup}",
            get(talkgroup).patch(rename_talkgroup).delete(remove_talkgroup),
        )
        .route("/fleets/{fleet}/talkgroups/{talkgroup}/members", get(members))
        .route("/sites", get(sites).post(add_site))
        .route("/sites/{site}", get(site).patch(rename_site).delete(remove_site))
        .route("/sites/{site}/key", post(rekey_site))
}

/// A fleet.
#[derive(Serialize)]
pub struct FleetJson {
    /// Fleet id.
    pub id: u16,
    /// Its name.
    pub name: String,
}

/// `GET /fleets`.
#[derive(Serialize)]
pub struct FleetsJson {
    /// By id.
    pub fleets: Vec<FleetJson>,
}

/// A body that names something: `{"name": …}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// The new name.
    pub name: String,
}

/// `POST /fleets`'s and `POST /fleets/{fleet}/talkgroups`' body.
#[derive(Deserialize)]
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

async fn fleets(State(s): State<ApiState>, caller: Caller) -> Result<Json<FleetsJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let all = s.handle.records().fleets().await?;
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

async fn fleet(
    State(s): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<FleetJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let id = fleet_of(p, &raw)?;
    let f = s
        .handle
        .records()
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
    s.handle.records().add_fleet(&actor(p, peer), &fleet).await?;
    Ok((
        StatusCode::CREATED,
        Json(FleetJson {
            id: id.get(),
            name: fleet.name,
        }),
    ))
}

async fn rename_fleet(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
    Body(b): Body<NameBody>,
) -> Result<Json<FleetJson>, ApiError> {
    let p = caller.require(Role::Admin)?;
    let id = fleet_of(p, &raw)?;
    s.handle
        .records()
        .rename_fleet(&actor(p, peer), id, &b.name)
        .await?;
    Ok(Json(FleetJson {
        id: id.get(),
        name: b.name,
    }))
}

async fn remove_fleet(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "removing a fleet")?;
    let id = fleet_of(p, &raw)?;
    s.handle.records().remove_fleet(&actor(p, peer), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A talkgroup.
#[derive(Serialize)]
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
#[derive(Serialize)]
pub struct TalkgroupsJson {
    /// By id.
    pub talkgroups: Vec<TalkgroupJson>,
}

async fn talkgroups(
    State(s): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<TalkgroupsJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let fleet = fleet_of(p, &raw)?;
    let records = s.handle.records();
    if !records.fleets().await?.iter().any(|f| f.id == fleet) {
        return Err(not_found(format!("fleet {fleet} does not exist")));
    }
    let all = records.talkgroups(Some(fleet)).await?;
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
    s.handle
        .records()
        .talkgroups(Some(fleet))
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| not_found(format!("talkgroup {id} does not exist in fleet {fleet}")))
}

async fn talkgroup(
    State(s): State<ApiState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
) -> Result<Json<TalkgroupJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    let (fleet, id) = talkgroup_of(p, &path)?;
    Ok(Json(find_talkgroup(&s, fleet, id).await?.into()))
}

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
    s.handle.records().add_talkgroup(&actor(p, peer), &tg).await?;
    Ok((StatusCode::CREATED, Json(tg.into())))
}

async fn rename_talkgroup(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Body(b): Body<NameBody>,
) -> Result<Json<TalkgroupJson>, ApiError> {
    let p = caller.require(Role::Admin)?;
    let (fleet, id) = talkgroup_of(p, &path)?;
    s.handle
        .records()
        .rename_talkgroup(&actor(p, peer), fleet, id, &b.name)
        .await?;
    Ok(Json(TalkgroupJson {
        fleet: fleet.get(),
        id: id.get(),
        name: b.name,
    }))
}

async fn remove_talkgroup(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(path): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    let (fleet, id) = talkgroup_of(p, &path)?;
    s.handle
        .records()
        .remove_talkgroup(&actor(p, peer), fleet, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/members`' query.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// A page of the subscribers permitted on a talkgroup.
#[derive(Serialize)]
pub struct MembersPage {
    /// Their IMSIs, in order.
    pub members: Vec<String>,
    /// Give it as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

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
        .handle
        .records()
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
#[derive(Serialize)]
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
#[derive(Serialize)]
pub struct SitesJson {
    /// By id.
    pub sites: Vec<SiteJson>,
}

async fn sites(State(s): State<ApiState>, caller: Caller) -> Result<Json<SitesJson>, ApiError> {
    caller.require(Role::Viewer)?;
    let all = s.handle.records().sites().await?;
    Ok(Json(SitesJson {
        sites: all.iter().map(SiteJson::from).collect(),
    }))
}

async fn site(
    State(s): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<SiteJson>, ApiError> {
    caller.require(Role::Viewer)?;
    let id = path_id("site", &raw, SiteId::new, SiteId::MAX)?;
    let site = find_site(&s.handle.records(), id).await?;
    Ok(Json((&site).into()))
}

async fn find_site(records: &Records, id: SiteId) -> Result<Site, ApiError> {
    records
        .sites()
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| not_found(format!("site {id} does not exist")))
}

/// `POST /sites`' body.
#[derive(Deserialize)]
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
#[derive(Serialize)]
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
    s.handle.records().add_site(&actor(p, peer), &site).await?;
    Ok((
        StatusCode::CREATED,
        Json(SiteWithKey {
            site: (&site).into(),
            link_key: site.key.to_hex(),
        }),
    ))
}

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
    let records = s.handle.records();
    records.rename_site(&actor(p, peer), id, &b.name).await?;
    let site = find_site(&records, id).await?;
    Ok(Json((&site).into()))
}

/// `POST /sites/{site}/key`: a new link key, generated, shown in the answer only. The
/// gateway's link up now stays up; its next handshake needs the new key.
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
    let records = s.handle.records();
    records.set_site_key(&actor(p, peer), id, &key).await?;
    let site = find_site(&records, id).await?;
    Ok(Json(SiteWithKey {
        site: (&site).into(),
        link_key: key.to_hex(),
    }))
}

async fn remove_site(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller.require(Role::Admin)?;
    every_fleet(p, "removing a site")?;
    let id = path_id("site", &raw, SiteId::new, SiteId::MAX)?;
    s.handle.records().remove_site(&actor(p, peer), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
