//! Work done behind the answers: last locations, coalesced per unit until the next
//! flush, and audit entries queued for the audit writer.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tracing::warn;

use crate::clock::Clock;
use crate::core::registration::Event;
use crate::protocol::{Imsi, SiteId, Tmsi};
use crate::store::health::DbHealth;
use crate::store::Store;

/// Work done behind the answers: last locations (coalesced per unit) and audit entries.
pub(super) struct WriteBehind {
    pub(super) locations: DashMap<Imsi, (SiteId, Tmsi, i64)>,
    pub(super) audit: mpsc::Sender<(String, String, String)>,
    pub(super) health: Arc<DbHealth>,
    pub(super) clock: Clock,
}

impl WriteBehind {
    pub(super) fn event(&self, e: Event) {
        match e {
            Event::Located { imsi, site, tmsi } => self.located(imsi, site, tmsi, self.clock.unix_ms()),
            Event::UnitGone { .. } | Event::TmsiChanged { .. } | Event::Attached { .. } | Event::Unit(_) => {}
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

    /// Keeps the newest sighting of a unit until the next flush.
    pub(super) fn located(&self, imsi: Imsi, site: SiteId, tmsi: Tmsi, at_ms: i64) {
        self.locations
            .entry(imsi)
            .and_modify(|v| {
                if at_ms >= v.2 {
                    *v = (site, tmsi, at_ms)
                }
            })
            .or_insert((site, tmsi, at_ms));
    }

    /// Writes every pending location; on failure they are kept for the next flush.
    pub(super) async fn flush_locations(&self, store: &Store) {
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
        let written = store.write_locations(&batch).await;
        if self.health.report("writing last locations", written).is_none() {
            for (imsi, site, tmsi, at) in batch {
                self.located(imsi, site, tmsi, at);
            }
        }
    }
}
