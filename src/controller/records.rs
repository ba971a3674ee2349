//! The HLR's records as operators keep them — subscribers (one, or a bulk import),
//! fleets, talkgroups and sites — and the history (call records, the audit log, stored
//! alarms), in two parts:
//!
//! - [`Records`], through the handle of a running controller: every write goes to the
//!   database with its audit entry naming the actor, and the running controller applies
//!   it before the call returns (as the handle's commands do).
//! - [`Reads`]: what is read from the database (never the keys), with the HLR cache
//!   naming units. It needs no running controller: the handle gives the controller's
//!   own, and a standby of an HA pair builds one of its own (`crate::api::serve_standby`).

use std::future::Future;
use std::sync::Arc;

use tracing::warn;

use crate::auth::Fleets;
use crate::events::EventKind;
use crate::hlr::{Fleet, HlrCache, NewSubscriber, Site, Subscriber, Talkgroup};
use crate::protocol::{FleetId, Imsi, SiteId, SiteKey, TalkgroupId, Unit};
use crate::store::{
    AlarmPage, AuditEntry, AuditSearch, CallHistoryEntry, CallSearch, ImportError, Provisioned, Store,
    StoreError, SubscriberSearch, SubscriberUpdate,
};

use super::alarms::{Alarm, AlarmError, AlarmQuery};
use super::{ControllerHandle, Node};

/// Changes to the HLR's records, from [`ControllerHandle::records`]; reads are [`Reads`].
pub struct Records {
    node: Arc<Node>,
}

impl ControllerHandle {
    /// Changes to the HLR's records.
    pub fn records(&self) -> Records {
        Records {
            node: self.node.clone(),
        }
    }

    /// The HLR's records and the history, as the database holds them.
    pub fn reads(&self) -> Reads {
        Reads::new(self.node.store.clone(), self.node.hlr.clone())
    }
}

impl Records {
    /// Waits for `write`, then applies what it changed to the running controller.
    async fn write<T>(&self, write: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let done = write.await?;
        self.node.follow_hlr().await;
        Ok(done)
    }

    /// Provisions one subscriber (its IMSI assigned under `registration.imsi_prefix`
    /// when it has none) and returns it as stored.
    pub async fn add_subscriber(&self, actor: &str, new: NewSubscriber) -> Result<Subscriber, StoreError> {
        let prefix = self.node.config().registration.imsi_prefix;
        self.write(self.node.store.add_subscriber(actor, new, &prefix))
            .await
    }

    /// Imports subscribers all or nothing (the rules of `trunkd subscriber import`).
    pub async fn import_subscribers(
        &self,
        actor: &str,
        rows: Vec<(u64, NewSubscriber)>,
    ) -> Result<Vec<Provisioned>, ImportError> {
        let prefix = self.node.config().registration.imsi_prefix;
        let done = self.node.store.import_subscribers(actor, rows, &prefix).await?;
        self.node.follow_hlr().await;
        Ok(done)
    }

    /// Changes a subscriber's IMEI, MSISDN or talkgroups; told on the event stream.
    pub async fn update_subscriber(
        &self,
        actor: &str,
        imsi: Imsi,
        change: &SubscriberUpdate,
    ) -> Result<Subscriber, StoreError> {
        self.write(self.node.store.update_subscriber(actor, imsi, change))
            .await?;
        let sub = self
            .node
            .store
            .subscriber(imsi)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("subscriber {imsi} does not exist")))?;
        self.node.events.publish(EventKind::SubscriberChanged {
            imsi,
            unit: sub.unit,
            actor: actor.to_string(),
            change: "updated".into(),
        });
        Ok(sub)
    }

    /// Removes a subscriber; a running controller forgets it.
    pub async fn remove_subscriber(&self, actor: &str, imsi: Imsi) -> Result<(), StoreError> {
        self.write(self.node.store.remove_subscriber(actor, imsi)).await
    }

    /// Adds a fleet.
    pub async fn add_fleet(&self, actor: &str, fleet: &Fleet) -> Result<(), StoreError> {
        self.write(self.node.store.add_fleet(actor, fleet)).await
    }

    /// Renames a fleet.
    pub async fn rename_fleet(&self, actor: &str, id: FleetId, name: &str) -> Result<(), StoreError> {
        self.write(self.node.store.rename_fleet(actor, id, name)).await
    }

    /// Removes a fleet (refused while it has talkgroups or subscribers).
    pub async fn remove_fleet(&self, actor: &str, id: FleetId) -> Result<(), StoreError> {
        self.write(self.node.store.remove_fleet(actor, id)).await
    }

    /// Adds a talkgroup to a fleet.
    pub async fn add_talkgroup(&self, actor: &str, tg: &Talkgroup) -> Result<(), StoreError> {
        self.write(self.node.store.add_talkgroup(actor, tg)).await
    }

    /// Renames a talkgroup.
    pub async fn rename_talkgroup(
        &self,
        actor: &str,
        fleet: FleetId,
        id: TalkgroupId,
        name: &str,
    ) -> Result<(), StoreError> {
        self.write(self.node.store.rename_talkgroup(actor, fleet, id, name))
            .await
    }

    /// Removes a talkgroup (refused while a subscriber is permitted on it).
    pub async fn remove_talkgroup(
        &self,
        actor: &str,
        fleet: FleetId,
        id: TalkgroupId,
    ) -> Result<(), StoreError> {
        self.write(self.node.store.remove_talkgroup(actor, fleet, id))
            .await
    }

    /// Adds a site with its link key.
    pub async fn add_site(&self, actor: &str, site: &Site) -> Result<(), StoreError> {
        self.write(self.node.store.add_site(actor, site)).await
    }

    /// Renames a site.
    pub async fn rename_site(&self, actor: &str, id: SiteId, name: &str) -> Result<(), StoreError> {
        self.write(self.node.store.rename_site(actor, id, name)).await
    }

    /// Gives a site a new link key, for its gateway's next handshake.
    pub async fn set_site_key(&self, actor: &str, id: SiteId, key: &SiteKey) -> Result<(), StoreError> {
        self.write(self.node.store.set_site_key(actor, id, key)).await
    }

    /// Removes a site; the controller stops accepting its gateway.
    pub async fn remove_site(&self, actor: &str, id: SiteId) -> Result<(), StoreError> {
        self.write(self.node.store.remove_site(actor, id)).await
    }
}

/// The HLR's records and the history as the database holds them, with the HLR cache
/// naming units; cheap to clone.
#[derive(Clone)]
pub struct Reads {
    store: Store,
    hlr: Arc<HlrCache>,
}

impl Reads {
    /// Reads from `store`, naming units from `hlr` (which whoever owns it keeps current).
    pub fn new(store: Store, hlr: Arc<HlrCache>) -> Reads {
        Reads { store, hlr }
    }

    /// One subscriber.
    pub async fn subscriber(&self, imsi: Imsi) -> Result<Option<Subscriber>, StoreError> {
        self.store.subscriber(imsi).await
    }

    /// One page of the subscribers `search` finds.
    pub async fn search_subscribers(&self, search: &SubscriberSearch) -> Result<Vec<Subscriber>, StoreError> {
        self.store.search_subscribers(search).await
    }

    /// Every fleet.
    pub async fn fleets(&self) -> Result<Vec<Fleet>, StoreError> {
        self.store.fleets().await
    }

    /// A fleet's talkgroups (every fleet's with `None`).
    pub async fn talkgroups(&self, fleet: Option<FleetId>) -> Result<Vec<Talkgroup>, StoreError> {
        self.store.talkgroups_of(fleet).await
    }

    /// One page of the subscribers permitted on a talkgroup.
    pub async fn talkgroup_members(
        &self,
        fleet: FleetId,
        id: TalkgroupId,
        after: Option<Imsi>,
        limit: u32,
    ) -> Result<Vec<Imsi>, StoreError> {
        self.store.talkgroup_members(fleet, id, after, limit).await
    }

    /// Every site (with its key: the caller must never show it but at creation).
    pub async fn sites(&self) -> Result<Vec<Site>, StoreError> {
        self.store.sites().await
    }

    /// One page of the call records `search` finds, newest first.
    pub async fn call_history(&self, search: &CallSearch) -> Result<Vec<CallHistoryEntry>, StoreError> {
        self.store.call_history(search).await
    }

    /// One page of the audit entries `search` finds, newest first.
    pub async fn audit(&self, search: &AuditSearch) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.search_audit(search).await
    }

    /// The dispatch address of a provisioned subscriber, from the HLR cache.
    pub fn subscriber_unit(&self, imsi: &Imsi) -> Option<Unit> {
        self.hlr.subscriber(imsi).map(|s| s.unit)
    }

    /// Alarms newest first, a page at a time, as the database holds them: those that
    /// need attention, or with [`AlarmQuery::finished`] every one. A running controller
    /// may hold newer states than it has written
    /// ([`ControllerHandle::alarms`] adds them).
    pub async fn alarms(&self, q: &AlarmQuery) -> Result<Vec<Alarm>, AlarmError> {
        let rows = self
            .store
            .alarms_page(&AlarmPage {
                before: q.before.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                limit: i64::try_from(q.limit).unwrap_or(i64::MAX),
                fleets: match &q.fleets {
                    Fleets::All => None,
                    Fleets::Only(f) => Some(f.iter().map(|f| i64::from(f.get())).collect()),
                },
                finished: q.finished,
            })
            .await
            .map_err(AlarmError::Unavailable)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Alarm::from_row(row)
                    .map_err(|e| warn!(error = %e, "alarm in the database not understood; not listed"))
                    .ok()
            })
            .collect())
    }

    /// Alarm `id` as the database holds it.
    pub async fn alarm(&self, id: u64) -> Result<Alarm, AlarmError> {
        let row = self
            .store
            .alarm(i64::try_from(id).unwrap_or(-1))
            .await
            .map_err(AlarmError::Unavailable)?;
        row.ok_or_else(|| format!("alarm {id} does not exist"))
            .and_then(Alarm::from_row)
            .map_err(AlarmError::NotFound)
    }
}
