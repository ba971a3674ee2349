//! [`Records`]: the HLR's records as operators keep them through the handle — subscribers
//! (one, or a bulk import), fleets, talkgroups and sites — and the history (call records,
//! the audit log). Every write goes to the database with its audit entry naming the
//! actor, and the running controller applies it before the call returns (as the handle's
//! commands do); reads come from the database, never the keys.

use std::future::Future;
use std::sync::Arc;

use crate::events::EventKind;
use crate::hlr::{Fleet, NewSubscriber, Site, Subscriber, Talkgroup};
use crate::protocol::{FleetId, Imsi, SiteId, SiteKey, TalkgroupId};
use crate::store::{
    AuditEntry, AuditSearch, CallHistoryEntry, CallSearch, ImportError, Provisioned, StoreError,
    SubscriberSearch, SubscriberUpdate,
};

use super::{ControllerHandle, Node};

/// The HLR's records and the history, from [`ControllerHandle::records`].
pub struct Records {
    node: Arc<Node>,
}

impl ControllerHandle {
    /// The HLR's records and the history.
    pub fn records(&self) -> Records {
        Records {
            node: self.node.clone(),
        }
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

    /// One subscriber.
    pub async fn subscriber(&self, imsi: Imsi) -> Result<Option<Subscriber>, StoreError> {
        self.node.store.subscriber(imsi).await
    }

    /// One page of the subscribers `search` finds.
    pub async fn search_subscribers(&self, search: &SubscriberSearch) -> Result<Vec<Subscriber>, StoreError> {
        self.node.store.search_subscribers(search).await
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

    /// Every fleet.
    pub async fn fleets(&self) -> Result<Vec<Fleet>, StoreError> {
        self.node.store.fleets().await
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

    /// A fleet's talkgroups (every fleet's with `None`).
    pub async fn talkgroups(&self, fleet: Option<FleetId>) -> Result<Vec<Talkgroup>, StoreError> {
        self.node.store.talkgroups_of(fleet).await
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

    /// One page of the subscribers permitted on a talkgroup.
    pub async fn talkgroup_members(
        &self,
        fleet: FleetId,
        id: TalkgroupId,
        after: Option<Imsi>,
        limit: u32,
    ) -> Result<Vec<Imsi>, StoreError> {
        self.node.store.talkgroup_members(fleet, id, after, limit).await
    }

    /// Every site (with its key: the caller must never show it but at creation).
    pub async fn sites(&self) -> Result<Vec<Site>, StoreError> {
        self.node.store.sites().await
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

    /// One page of the call records `search` finds, newest first.
    pub async fn call_history(&self, search: &CallSearch) -> Result<Vec<CallHistoryEntry>, StoreError> {
        self.node.store.call_history(search).await
    }

    /// One page of the audit entries `search` finds, newest first.
    pub async fn audit(&self, search: &AuditSearch) -> Result<Vec<AuditEntry>, StoreError> {
        self.node.store.search_audit(search).await
    }
}
