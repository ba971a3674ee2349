//! The in-memory copy of what the hot path needs from the HLR: subscribers (by IMSI and
//! IMEI) and sites. Loaded at start; kept in step by following the audit log, which
//! every write to the HLR appends to in the same transaction, so changes made by
//! another process (`trunkd subscriber add` while the controller runs) arrive too.
//! The registration path reads only this cache (as the registrar's
//! [`SubscriberLookup`]) and never waits on the database.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::{Site, Subscriber};
use crate::core::registration::SubscriberLookup;
use crate::link::SiteKeys;
use crate::protocol::{FleetId, Imei, Imsi, SiteId, SiteKey, TalkgroupId, Unit};
use crate::store::{Store, StoreError};

/// The cache.
#[derive(Default)]
pub struct HlrCache {
    subscribers: crate::protocol::IdMap<Imsi, Arc<Subscriber>>,
    by_imei: crate::protocol::IdMap<Imei, Imsi>,
    by_unit: crate::protocol::IdMap<Unit, Imsi>,
    sites: DashMap<SiteId, Site>,
    /// Talkgroups that exist, per fleet.
    talkgroups: DashMap<(FleetId, TalkgroupId), ()>,
    /// Slots operators took out of service: (site, carrier, slot or 255 = carrier).
    slot_faults: std::sync::Mutex<Vec<(SiteId, u8, u8)>>,
    audit_seen: AtomicI64,
    /// Changes to subscribers the running controller must act on, not yet taken.
    changes: std::sync::Mutex<Vec<HlrChange>>,
}

/// A change in the HLR that a running controller acts on (see
/// [`HlrCache::take_changes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HlrChange {
    /// Inhibited (`true`) or enabled again (`false`).
    Inhibited(Imsi, bool),
    /// Removed from the HLR.
    Removed(Imsi),
    /// System parameters were changed (by any controller on the database).
    Parameters,
    /// An operator of the API was added, changed or removed.
    Operator(String),
    /// An operator's session was revoked.
    SessionRevoked(String),
    /// The API's signing keys were rotated.
    SigningKeys,
}

impl HlrCache {
    /// Loads everything from the store.
    pub async fn load(store: &Store) -> Result<HlrCache, StoreError> {
        let cache = HlrCache::default();
        let high = store.audit_high_water().await?;
        cache.reload_subscribers(store).await?;
        cache.reload_sites(store).await?;
        cache.reload_talkgroups(store).await?;
        cache.audit_seen.store(high, Ordering::SeqCst);
        Ok(cache)
    }

    /// Applies HLR changes made since the last call; returns how many were applied.
    pub async fn refresh(&self, store: &Store) -> Result<usize, StoreError> {
        let mut applied = 0;
        loop {
            let after = self.audit_seen.load(Ordering::SeqCst);
            let entries = store.audit_since(after, 1000).await?;
            let Some(last) = entries.last().map(|e| e.id) else {
                return Ok(applied);
            };
            let mut full_reload = false;
            let mut sites = false;
            let mut talkgroups = false;
            let mut parameters = false;
            for e in &entries {
                if let Some(imsi) = e.object.strip_prefix("subscriber:") {
                    if let Ok(imsi) = Imsi::parse(imsi) {
                        self.reload_subscriber(store, imsi).await?;
                    }
                } else if e.object == "subscribers" {
                    full_reload = true;
                } else if e.object.starts_with("site:") {
                    sites = true;
                } else if e.object.starts_with("talkgroup:") || e.object.starts_with("fleet:") {
                    talkgroups = true;
                } else if e.object.starts_with("parameter:") {
                    parameters = true;
                } else if let Some(name) = e.object.strip_prefix("operator:") {
                    self.changed(HlrChange::Operator(name.to_string()));
                } else if let Some(family) = e.object.strip_prefix("session:") {
                    if e.action == "session.revoke" {
                        self.changed(HlrChange::SessionRevoked(family.to_string()));
                    }
                } else if e.object == "signing-keys" {
                    self.changed(HlrChange::SigningKeys);
                }
            }
            if full_reload {
                self.reload_subscribers(store).await?;
            }
            if sites {
                self.reload_sites(store).await?;
            }
            if talkgroups {
                self.reload_talkgroups(store).await?;
            }
            if parameters {
                self.changed(HlrChange::Parameters);
            }
            applied += entries.len();
            self.audit_seen.store(last, Ordering::SeqCst);
        }
    }

    async fn reload_subscribers(&self, store: &Store) -> Result<(), StoreError> {
        store.each_subscriber(|s| self.put(s)).await?;
        Ok(())
    }

    async fn reload_subscriber(&self, store: &Store, imsi: Imsi) -> Result<(), StoreError> {
        match store.subscriber(imsi).await? {
            Some(s) => self.put(s),
            None => {
                if let Some((_, old)) = self.subscribers.remove(&imsi) {
                    self.by_imei.remove(&old.imei);
                    self.by_unit.remove(&old.unit);
                    self.changed(HlrChange::Removed(imsi));
                }
            }
        }
        Ok(())
    }

    async fn reload_sites(&self, store: &Store) -> Result<(), StoreError> {
        let sites = store.sites().await?;
        self.sites.retain(|id, _| sites.iter().any(|s| s.id == *id));
        for s in sites {
            self.sites.insert(s.id, s);
        }
        let faults = store.slot_faults().await?;
        *self.slot_faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
        Ok(())
    }

    async fn reload_talkgroups(&self, store: &Store) -> Result<(), StoreError> {
        let all = store.talkgroups().await?;
        self.talkgroups
            .retain(|k, _| all.iter().any(|t| (t.fleet, t.id) == *k));
        for t in all {
            self.talkgroups.insert((t.fleet, t.id), ());
        }
        Ok(())
    }

    /// Whether `talkgroup` exists in `fleet`.
    pub fn talkgroup_exists(&self, fleet: FleetId, talkgroup: TalkgroupId) -> bool {
        self.talkgroups.contains_key(&(fleet, talkgroup))
    }

    /// Puts a subscriber in the cache (also used by in-process writers).
    pub fn put(&self, s: Subscriber) {
        let (imsi, imei, unit) = (s.imsi, s.imei, s.unit);
        let inhibited = s.inhibited;
        if let Some(old) = self.subscribers.insert(imsi, Arc::new(s)) {
            if old.inhibited != inhibited {
                self.changed(HlrChange::Inhibited(imsi, inhibited));
            }
            if old.imei != imei {
                self.by_imei.remove_if(&old.imei, |_, i| *i == imsi);
            }
            if old.unit != unit {
                self.by_unit.remove_if(&old.unit, |_, i| *i == imsi);
            }
        }
        self.by_imei.insert(imei, imsi);
        self.by_unit.insert(unit, imsi);
    }

    fn changed(&self, c: HlrChange) {
        self.changes.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    /// Subscribers inhibited, enabled or removed since the last call, in the order the
    /// changes were applied.
    pub fn take_changes(&self) -> Vec<HlrChange> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The IMSI of the subscriber with this fleet and member.
    pub fn imsi_for_unit(&self, unit: &Unit) -> Option<Imsi> {
        self.by_unit.get(unit).map(|i| *i)
    }

    /// Every subscriber of `fleet` permitted on `talkgroup` (a scan, for group-addressed
    /// short data).
    pub fn talkgroup_members(&self, fleet: FleetId, talkgroup: TalkgroupId) -> Vec<Imsi> {
        self.subscribers
            .iter()
            .filter(|e| e.unit.fleet == fleet && e.talkgroups.contains(&talkgroup))
            .map(|e| *e.key())
            .collect()
    }

    /// Slots operators took out of service: (site, carrier, slot or 255 = whole carrier).
    pub fn slot_faults(&self) -> Vec<(SiteId, u8, u8)> {
        self.slot_faults.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every site.
    pub fn sites(&self) -> Vec<Site> {
        let mut v: Vec<Site> = self.sites.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// A subscriber by IMSI.
    pub fn subscriber(&self, imsi: &Imsi) -> Option<Arc<Subscriber>> {
        self.subscribers.get(imsi).map(|s| s.clone())
    }

    /// The IMSI provisioned for an IMEI.
    pub fn imsi_for_imei(&self, imei: &Imei) -> Option<Imsi> {
        self.by_imei.get(imei).map(|i| *i)
    }

    /// A site.
    pub fn site(&self, id: SiteId) -> Option<Site> {
        self.sites.get(&id).map(|s| s.clone())
    }

    /// Subscribers in the cache.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }
}

impl SubscriberLookup for HlrCache {
    fn subscriber(&self, imsi: &Imsi) -> Option<Arc<Subscriber>> {
        HlrCache::subscriber(self, imsi)
    }

    fn imsi_for_imei(&self, imei: &Imei) -> Option<Imsi> {
        HlrCache::imsi_for_imei(self, imei)
    }

    fn talkgroup_exists(&self, fleet: FleetId, talkgroup: TalkgroupId) -> bool {
        HlrCache::talkgroup_exists(self, fleet, talkgroup)
    }
}

impl SiteKeys for HlrCache {
    fn site_key(&self, site: SiteId) -> Option<SiteKey> {
        self.sites.get(&site).map(|s| s.key.clone())
    }
}
