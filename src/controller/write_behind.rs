//! Work done behind the answers, in one place that can be drained and stopped: last
//! locations and the units on the air (both coalesced per unit until the next flush),
//! audit entries, call records with
//! the journal of calls in progress, and the short data the messaging shell stores and
//! removes. Every task doing such work runs on one [`TaskTracker`]; stopping the
//! write-behind writes what is pending, then waits until every one of those tasks has
//! finished. The controller stops it after its links are closed (the active-standby
//! pair of issue 13 is meant to do the same to fence a controller that lost its lease).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashSet;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::clock::Clock;
use crate::core::registration::Event;
use crate::core::trunking::CallRecord;
use crate::protocol::{Imsi, SiteId, Tmsi};
use crate::shell::calls::{write_records, CallService};
use crate::shell::remote::AuditEntry;
use crate::store::health::DbHealth;
use crate::store::Store;
use crate::vlr::VlrView;

use super::stopped;

/// How often an audit entry is tried before it is given up (and logged as an error).
const AUDIT_ATTEMPTS: u32 = 60;

/// Work done behind the answers.
pub(super) struct WriteBehind {
    locations: crate::protocol::IdMap<Imsi, (SiteId, Tmsi, i64)>,
    /// Units whose VLR entry changed since the last flush (written as the VLR holds
    /// them at the flush, or removed if it no longer does).
    units: DashSet<Imsi, foldhash::fast::RandomState>,
    vlr: VlrView,
    /// Entries for the audit writer.
    pub(super) audit: mpsc::Sender<AuditEntry>,
    health: Arc<DbHealth>,
    clock: Clock,
    store: Store,
    /// Every task writing behind the answers.
    tasks: TaskTracker,
    /// Set when the write-behind is stopped.
    stop: watch::Sender<bool>,
}

/// What [`WriteBehind::new`] needs started later, once the call service exists.
pub(super) struct Inputs {
    audit: mpsc::Receiver<AuditEntry>,
}

impl WriteBehind {
    /// A write-behind on `store`; `tasks` is the tracker the shells also spawn their
    /// writes on. Its writers run once [`start`](Self::start) is called.
    pub(super) fn new(
        store: Store,
        vlr: VlrView,
        health: Arc<DbHealth>,
        clock: Clock,
        tasks: TaskTracker,
    ) -> (Self, Inputs) {
        let (audit, audit_rx) = mpsc::channel(10_000);
        let writer = WriteBehind {
            locations: Default::default(),
            units: Default::default(),
            vlr,
            audit,
            health,
            clock,
            store,
            tasks,
            stop: watch::channel(false).0,
        };
        (writer, Inputs { audit: audit_rx })
    }

    /// Starts the writers: last locations and units on the air every `flush`, call records from `records`
    /// every `flush`, audit entries as they come.
    pub(super) fn start(
        self: &Arc<Self>,
        inputs: Inputs,
        calls: Arc<CallService>,
        records: mpsc::UnboundedReceiver<CallRecord>,
        flush: Duration,
    ) {
        let (store, health) = (self.store.clone(), self.health.clone());
        self.tasks.spawn(write_records(
            store,
            health,
            calls,
            records,
            flush,
            self.stop.subscribe(),
        ));
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut stop = this.stop.subscribe();
            let mut tick = tokio::time::interval(flush);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => this.flush().await,
                    _ = stopped(&mut stop) => break,
                }
            }
            this.flush().await;
        });
        self.tasks.spawn(self.clone().write_audit(inputs.audit));
    }

    /// Writes what is pending and waits until every task writing behind the answers has
    /// finished. Each of them ends on its own (a write that keeps failing is given up
    /// after its retries), so nothing pending is dropped to stop sooner; past `grace`
    /// the wait is logged.
    pub(super) async fn stop_and_drain(&self, grace: Duration) {
        self.stop.send_replace(true);
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            warn!(
                tasks = self.tasks.len(),
                "still writing behind the answers at the end of the shutdown grace; waiting"
            );
            self.tasks.wait().await;
        }
    }

    /// Writes audit entries until stopped, then the ones still queued.
    async fn write_audit(self: Arc<Self>, mut rx: mpsc::Receiver<AuditEntry>) {
        let mut stop = self.stop.subscribe();
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = stopped(&mut stop) => {
                    rx.close();
                    rx.recv().await
                }
            };
            let Some((action, object, detail)) = item else {
                break;
            };
            // The database may be busy (a bulk import holds SQLite's write lock):
            // retry rather than lose the entry.
            for attempt in 1..=AUDIT_ATTEMPTS {
                match self.store.audit("controller", &action, &object, &detail).await {
                    Ok(()) => {
                        self.health.succeeded();
                        break;
                    }
                    Err(e) if attempt == AUDIT_ATTEMPTS => {
                        error!(error = %e, %action, %object, %detail, "audit entry could not be written");
                    }
                    Err(e) => {
                        self.health.failed("writing an audit entry", &e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    pub(super) fn event(&self, e: Event) {
        match e {
            Event::Located { imsi, site, tmsi } => self.located(imsi, site, tmsi, self.clock.unix_ms()),
            Event::Unit(u) => self.unit_changed(u.imsi()),
            Event::UnitGone { .. } | Event::TmsiChanged { .. } | Event::Attached { .. } => {}
            Event::Audit {
                action,
                object,
                detail,
            } => {
                warn!(action, %object, %detail, "security event");
                if self.audit.try_send((action.to_string(), object, detail)).is_err() {
                    warn!("audit queue full: entry kept in the log only");
                }
            }
        }
    }

    /// The VLR entry of `imsi` changed: it is written (or removed) at the next flush.
    pub(super) fn unit_changed(&self, imsi: Imsi) {
        self.units.insert(imsi);
    }

    /// Last locations (with the units on the air) and audit entries waiting to be
    /// written (call records are counted by the call service, which refuses new calls
    /// when too many wait).
    pub(super) fn backlog(&self) -> (usize, usize) {
        let audit = self.audit.max_capacity().saturating_sub(self.audit.capacity());
        (self.locations.len() + self.units.len(), audit)
    }

    /// Keeps the newest sighting of a unit until the next flush.
    fn located(&self, imsi: Imsi, site: SiteId, tmsi: Tmsi, at_ms: i64) {
        self.locations
            .entry(imsi)
            .and_modify(|v| {
                if at_ms >= v.2 {
                    *v = (site, tmsi, at_ms)
                }
            })
            .or_insert((site, tmsi, at_ms));
    }

    async fn flush(&self) {
        self.flush_locations().await;
        self.flush_units().await;
    }

    /// Writes the VLR entry of every unit that changed, as it is now; on failure they
    /// stay pending for the next flush.
    async fn flush_units(&self) {
        let changed: Vec<Imsi> = self.units.iter().map(|i| *i).collect();
        if changed.is_empty() {
            return;
        }
        for imsi in &changed {
            self.units.remove(imsi);
        }
        let (mut on_air, mut gone) = (Vec::new(), Vec::new());
        for imsi in &changed {
            match self.vlr.get(imsi) {
                Some(unit) => on_air.push((*imsi, unit)),
                None => gone.push(*imsi),
            }
        }
        let written = self.store.write_units(&on_air, &gone).await;
        if self
            .health
            .report("writing the units on the air", written)
            .is_none()
        {
            for imsi in changed {
                self.units.insert(imsi);
            }
        }
    }

    /// Writes every pending location; on failure they are kept for the next flush.
    async fn flush_locations(&self) {
        let keys: Vec<Imsi> = self.locations.iter().map(|e| *e.key()).collect();
        let batch: Vec<(Imsi, SiteId, Tmsi, i64)> = keys
            .iter()
            .filter_map(|k| {
                self.locations
                    .remove(k)
                    .map(|(imsi, (site, tmsi, at))| (imsi, site, tmsi, at))
            })
            .collect();
        if batch.is_empty() {
            return;
        }
        let written = self.store.write_locations(&batch).await;
        if self.health.report("writing last locations", written).is_none() {
            for (imsi, site, tmsi, at) in batch {
                self.located(imsi, site, tmsi, at);
            }
        }
    }
}
