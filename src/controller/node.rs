//! The parts of a running controller, shared by its frame routing, its background work
//! and its handle; what they do together (carrying out the registrar's events,
//! following the HLR, putting system parameters in force).

use std::sync::{Arc, PoisonError};

use tracing::{info, warn};

use crate::auth::Authority;
use crate::clock::Clock;
use crate::config::Config;
use crate::core::registration::{Event, Registrar};
use crate::events::{EventBus, EventKind};
use crate::hlr::{HlrCache, HlrChange};
use crate::link::Links;
use crate::metrics::Metrics;
use crate::params;
use crate::protocol::Imsi;
use crate::shell::calls::CallService;
use crate::shell::messaging::Messaging;
use crate::shell::remote::RemoteControl;
use crate::store::health::DbHealth;
use crate::store::Store;
use crate::vlr::VlrView;

use super::write_behind::WriteBehind;

/// The parts of a running controller, shared by its link handler, its background work
/// and its handle.
pub(super) struct Node {
    /// The configuration with the system parameters in force.
    pub(super) cfg: std::sync::RwLock<Config>,
    pub(super) store: Store,
    pub(super) hlr: Arc<HlrCache>,
    pub(super) registrar: Arc<Registrar>,
    pub(super) vlr: VlrView,
    pub(super) links: Links,
    pub(super) calls: Arc<CallService>,
    pub(super) messaging: Arc<Messaging>,
    pub(super) remote: Arc<RemoteControl>,
    pub(super) writer: Arc<WriteBehind>,
    pub(super) events: Arc<EventBus>,
    pub(super) health: Arc<DbHealth>,
    /// The operator API's logins and tokens.
    pub(super) auth: Arc<Authority>,
    /// Radio commands operators follow by id.
    pub(super) commands: Arc<super::commands::CommandLog>,
    /// What the frame path counts and measures (`GET /metrics`).
    pub(super) metrics: Arc<Metrics>,
    /// The alarms operators must see to.
    pub(super) alarms: Arc<super::alarms::AlarmKeeper>,
    pub(super) clock: Clock,
    /// The active node's fence in an HA group: no frame is served once it no longer
    /// holds. `None` without HA.
    pub(super) fence: Option<Arc<crate::ha::Fence>>,
    /// Held while HLR changes are applied, so that the handle and the periodic follow
    /// never apply the same change twice.
    pub(super) following: tokio::sync::Mutex<()>,
}

impl Node {
    /// The configuration in force (system parameters included).
    pub(super) fn config(&self) -> Config {
        self.cfg.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts new system parameters in force.
    pub(super) fn apply_config(&self, new: Config) {
        self.calls.set_config(new.trunking.core());
        self.registrar.set_policy(new.registration.policy());
        *self.cfg.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    /// Applies what changed in the HLR since the last look (by this controller's handle
    /// or by any other process on the database) to the running controller.
    pub(super) async fn follow_hlr(&self) {
        let _one_at_a_time = self.following.lock().await;
        match self
            .health
            .report("following HLR changes", self.hlr.refresh(&self.store).await)
        {
            None | Some(0) => {}
            Some(n) => {
                info!(changes = n, "HLR changes applied to the cache");
                self.calls.sync_sites();
            }
        }
        if let Some(r) = self.auth.retry_reloads().await {
            self.health.report("reloading operators", r);
        }
        for change in self.hlr.take_changes() {
            match change {
                // Inhibits and enables go over the air (PROTOCOL.md §5.4).
                HlrChange::Inhibited(imsi, inhibited) => {
                    self.remote.changed(imsi, inhibited, self.clock.mono_ms()).await
                }
                // A removed subscriber leaves the air at once, and its calls end.
                HlrChange::Removed(imsi) => {
                    self.carry_out(self.registrar.subscriber_removed(imsi, self.clock.mono_ms()))
                }
                // Another controller on the database changed system parameters.
                HlrChange::Parameters => self.load_parameters().await,
                // The operator API's accounts, sessions and keys.
                change => {
                    if let Some(r) = self.auth.hear(&change).await {
                        self.health.report("reloading the API's operators and keys", r);
                    }
                }
            }
        }
    }

    /// Carries out what the registrar reports: calls follow a unit's TMSI, messages
    /// stored for a unit go out when it attaches, operators hear of it, the rest is
    /// written behind.
    pub(super) fn carry_out(&self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::UnitGone { tmsi } => self.calls.unit_gone(tmsi),
                Event::TmsiChanged { old, new } => self.calls.tmsi_changed(old, new),
                Event::Attached { imsi, tmsi, site } => self.messaging.attached(imsi, tmsi, site),
                Event::Unit(u) => {
                    self.writer.unit_changed(u.imsi());
                    self.events.publish(EventKind::Unit(u));
                }
                Event::Audit {
                    action: "clone.suspected",
                    ref object,
                    ref detail,
                } => {
                    if let Some(imsi) = object
                        .strip_prefix("subscriber:")
                        .and_then(|i| Imsi::parse(i).ok())
                    {
                        let event = EventKind::CloneSuspected {
                            imsi,
                            detail: detail.clone(),
                        };
                        self.events.publish(event);
                    }
                    self.writer.event(e);
                }
                e => self.writer.event(e),
            }
        }
    }

    /// Periodic-registration expiry and challenge sweeping, decided by the registrar.
    pub(super) fn tick_registrations(&self, now: i64) {
        let events = self.registrar.tick(now);
        let expired = events
            .iter()
            .filter(|e| matches!(e, Event::UnitGone { .. }))
            .count();
        if expired > 0 {
            info!(
                units = expired,
                "periodic registration expired; units left the VLR"
            );
        }
        self.carry_out(events);
    }

    /// Puts the system parameters the database holds in force.
    pub(super) async fn load_parameters(&self) {
        let Some(stored) = self
            .health
            .report("reading system parameters", self.store.parameters().await)
        else {
            return;
        };
        let current = self.config();
        let (cfg, skipped) = params::apply_stored(&current, &stored);
        for e in skipped {
            warn!(error = %e, "system parameter in the database ignored");
        }
        for (name, value) in params::all(&cfg) {
            if params::get(&current, name).as_ref() != Some(&value) {
                info!(%name, %value, "system parameter changed in the database");
                let event = EventKind::ParameterChanged {
                    name: name.to_string(),
                    value,
                    actor: "database".into(),
                };
                self.events.publish(event);
            }
        }
        self.apply_config(cfg);
    }
}
