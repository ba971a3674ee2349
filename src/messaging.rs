//! The messaging services around the messaging state machine ([`Courier`]): looks up
//! what each request needs in the VLR and the HLR cache (the sender, the target unit's
//! site and TMSI, a talkgroup's units), hands it to the machine, carries out its actions
//! (frames to gateways, short data stored, read and removed in the HLR database), and
//! drives its timers. Runs inside the controller, as `crate::calls` does around the
//! trunking machine.
//!
//! - Call alert and status to a unit: sent to the unit's site; the sender hears `ACK`
//!   once that gateway acknowledges, or `DENY` "target unreachable" after
//!   `messaging.delivery_timeout_ms`. A status to a talkgroup goes to every affiliated
//!   unit on the air but the sender, each delivery waiting for room on its link, and is
//!   acknowledged to the sender once sent; at most
//!   `messaging.max_status_fanouts_in_flight` at once, beyond that `DENY` "busy".
//! - Short data is stored and forwarded: written to the HLR database (one row per
//!   recipient) before the sender hears `ACK`, delivered when the recipient is (or next
//!   becomes) registered, removed only when its gateway sends `SHORT_DATA_ACK`, dropped
//!   after `messaging.short_data_ttl_ms`. Nothing is lost across a restart. At most
//!   `messaging.max_short_data_in_flight` are being written at once; beyond that, or
//!   when the database fails to store it, the sender hears `DENY` "busy" and may send it
//!   again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::{debug, info};

use crate::alarm::Alarm;
use crate::clock::Clock;
use crate::config::MessagingConfig;
pub use crate::core::messaging::STORED_PAGE;
use crate::core::messaging::{
    Action, Addressee, Courier, CourierConfig, Input, OnAir, Request, Sender, ShortDataTarget, StatusTarget,
    StoredMessage,
};
use crate::hlr::HlrCache;
use crate::link::Links;
use crate::protocol::{Frame, Imsi, Message, MessageType, SiteId, Target, Tmsi, Unit};
use crate::store::health::DbHealth;
use crate::store::Store;
use crate::vlr::VlrView;

/// The messaging services.
pub struct Messaging {
    core: Mutex<Courier>,
    hlr: Arc<HlrCache>,
    vlr: VlrView,
    links: Links,
    store: Store,
    /// The clock the machine runs on (its monotonic scale).
    clock: Clock,
    /// Wakes the timer task for an earlier deadline.
    alarm: Alarm,
    health: Arc<DbHealth>,
}

impl Messaging {
    /// The services over the given registries and store, on `clock`.
    pub fn new(
        hlr: Arc<HlrCache>,
        vlr: VlrView,
        links: Links,
        store: Store,
        cfg: &MessagingConfig,
        clock: Clock,
    ) -> Self {
        let core = Courier::new(CourierConfig {
            short_data_ttl_ms: cfg.short_data_ttl_ms as i64,
            delivery_timeout_ms: cfg.delivery_timeout_ms as i64,
            max_stores_in_flight: cfg.max_short_data_in_flight,
            max_fanouts_in_flight: cfg.max_status_fanouts_in_flight,
            expiry_check_ms: cfg.delivery_timeout_ms.clamp(10, 1000) as i64,
        });
        Messaging {
            core: Mutex::new(core),
            hlr,
            vlr,
            links,
            store,
            clock,
            alarm: Alarm::default(),
            health: Arc::default(),
        }
    }

    /// Reports the database operations of these services to `health` (the controller's
    /// shared tracker) rather than to a tracker of their own.
    pub fn reporting_to(mut self, health: Arc<DbHealth>) -> Self {
        self.health = health;
        self
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Courier> {
        // A panic while holding the lock would be a bug; keep serving with the state as is.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that short data is stored for `imsi` (on start-up, for what the database
    /// holds): its next registration looks in the database.
    pub fn mail_stored(&self, imsi: Imsi) {
        self.core().mail_stored(imsi);
    }

    /// Handles a messaging frame from `site`; `None` for any other message.
    pub fn handle(self: &Arc<Self>, site: SiteId, frame: &Frame) -> Option<Vec<Frame>> {
        let txn = frame.txn;
        let input = match &frame.msg {
            Message::CallAlertReq { tmsi, target } => self.request(site, txn, *tmsi, {
                Request::CallAlert {
                    target: self.addressee(*target),
                }
            }),
            Message::StatusReq { tmsi, target, code } => self.request(site, txn, *tmsi, {
                let target = match *target {
                    Target::Unit(u) => StatusTarget::Unit(self.addressee(u)),
                    Target::Talkgroup { fleet, talkgroup } => StatusTarget::Talkgroup {
                        fleet,
                        talkgroup,
                        exists: self.hlr.talkgroup_exists(fleet, talkgroup),
                        affiliated: (self.vlr.affiliated_units(fleet, talkgroup).into_iter())
                            .map(|(imsi, tmsi, site)| (imsi, OnAir { tmsi, site }))
                            .collect(),
                    },
                };
                Request::Status { code: *code, target }
            }),
            Message::ShortDataReq { tmsi, target, data } => self.request(site, txn, *tmsi, {
                let target = match *target {
                    Target::Unit(u) => ShortDataTarget::Unit(self.hlr.imsi_for_unit(&u)),
                    Target::Talkgroup { fleet, talkgroup } => ShortDataTarget::Talkgroup {
                        fleet,
                        talkgroup,
                        exists: self.hlr.talkgroup_exists(fleet, talkgroup),
                        members: self.hlr.talkgroup_members(fleet, talkgroup),
                    },
                };
                Request::ShortData {
                    data: data.clone(),
                    target,
                }
            }),
            Message::Ack {
                acked: MessageType::CallAlert | MessageType::StatusDelivery,
            } => Input::Ack { site, txn },
            Message::ShortDataAck { id } => Input::ShortDataAck { site, id: *id },
            _ => return None,
        };
        Some(self.run(input, Some((site, txn))))
    }

    /// The unit is on the air: what is stored for it is delivered, [`STORED_PAGE`]
    /// messages at a time; the next ones go once those are acknowledged, and if they are
    /// not within the delivery timeout (or the unit left or moved meanwhile), the rest
    /// waits for the unit's next registration.
    pub fn attached(self: &Arc<Self>, imsi: Imsi, tmsi: Tmsi, site: SiteId) {
        self.run(Input::Attached { imsi, tmsi, site }, None);
    }

    /// Runs the machine's timers (delivery timeouts, removal of expired short data)
    /// until `stop` turns true.
    pub async fn run_timers(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let this = &self;
        let tick = |now| {
            let mut core = this.core();
            let mut actions = core.tick(now);
            let before = actions.len();
            // Done by this task rather than spawned, so that removals never pile up.
            actions.retain(|a| *a != Action::ExpireStored);
            let expire = actions.len() < before;
            this.dispatch(&mut core, actions, None);
            async move {
                if expire {
                    this.expire_stored().await;
                }
            }
        };
        let alarm = &self.alarm;
        alarm
            .run(
                &self.core,
                Courier::next_wakeup,
                || self.clock.mono_ms(),
                tick,
                stop,
            )
            .await;
    }

    /// Feeds one input to the machine and carries out its actions; returns the frames
    /// that answer `answering` (the site and transaction of the frame being handled).
    /// Wakes the timer task if the machine's next deadline is now earlier than the one
    /// it sleeps for.
    ///
    /// Frames are queued on the sites' links while the machine is still locked, so each
    /// gateway receives the machine's output in the order it was produced.
    fn run(self: &Arc<Self>, input: Input, answering: Option<(SiteId, u32)>) -> Vec<Frame> {
        let mut core = self.core();
        let actions = core.handle(input, self.clock.mono_ms());
        let answers = self.dispatch(&mut core, actions, answering);
        self.alarm.rearm(core.next_wakeup());
        answers
    }

    /// As [`Messaging::run`], for the work done behind the answers (after a store, a
    /// read or a fan-out): each frame waits for room on its link, so the many frames of
    /// a talkgroup's short data or a unit's stored messages never overflow a link that
    /// is keeping up.
    async fn run_paced(self: &Arc<Self>, input: Input) {
        let actions = {
            let mut core = self.core();
            let actions = core.handle(input, self.clock.mono_ms());
            self.alarm.rearm(core.next_wakeup());
            actions
        };
        for a in actions {
            match a {
                Action::Send(site, frame) => {
                    let txn = frame.txn;
                    if !self.send_paced(site, frame).await {
                        self.run(Input::SendFailed { site, txn }, None);
                    }
                }
                other => self.start(other),
            }
        }
    }

    /// Carries out actions with the machine locked: frames that answer `answering` are
    /// returned, other frames queued on their site's link (a frame that cannot be is
    /// reported back to the machine), the rest started in tasks of their own.
    fn dispatch(
        self: &Arc<Self>,
        core: &mut Courier,
        actions: Vec<Action>,
        answering: Option<(SiteId, u32)>,
    ) -> Vec<Frame> {
        let mut answers = Vec::new();
        let mut todo = VecDeque::from(actions);
        while let Some(a) = todo.pop_front() {
            match a {
                Action::Send(site, frame) if answering == Some((site, frame.txn)) => answers.push(frame),
                Action::Send(site, frame) => {
                    let txn = frame.txn;
                    if let Err(e) = self.links.send(site, frame) {
                        debug!(error = %e, "message for a site not delivered");
                        todo.extend(core.handle(Input::SendFailed { site, txn }, self.clock.mono_ms()));
                    }
                }
                other => self.start(other),
            }
        }
        answers
    }

    /// Starts the work of an action behind the answers, in a task of its own; it feeds
    /// the outcome back to the machine. (A [`Action::Send`] is queued as is: callers
    /// that must hear of a failed send queue frames themselves.)
    fn start(self: &Arc<Self>, action: Action) {
        let this = self.clone();
        match action {
            Action::Send(site, frame) => {
                if let Err(e) = self.links.send(site, frame) {
                    debug!(error = %e, "message for a site not delivered");
                }
            }
            Action::FanOut { op, frames, then } => {
                tokio::spawn(async move {
                    for (site, frame) in frames {
                        this.send_paced(site, frame).await;
                    }
                    this.send_paced(then.0, then.1).await;
                    this.run(Input::FannedOut { op }, None);
                });
            }
            Action::Store {
                op,
                recipients,
                source,
                data,
                expires_ms,
            } => {
                tokio::spawn(async move {
                    // The database keeps expiry in Unix ms.
                    let expires_at = this.clock.unix_of(expires_ms);
                    let stored = (this.store)
                        .store_short_data(&recipients, source, data.as_bytes(), expires_at)
                        .await;
                    let stored = this.health.report("storing short data", stored).map(|ids| {
                        let here = |imsi| {
                            this.vlr.get(imsi).map(|u| OnAir {
                                tmsi: u.tmsi,
                                site: u.site,
                            })
                        };
                        ids.into_iter()
                            .zip(&recipients)
                            .map(|(id, imsi)| (id, here(imsi)))
                            .collect()
                    });
                    this.run_paced(Input::Stored { op, stored }).await;
                });
            }
            Action::Remove(id) => {
                tokio::spawn(async move {
                    let removed = this.store.remove_short_data(id.get() as i64).await;
                    match this.health.report("removing delivered short data", removed) {
                        Some(true) => debug!(%id, "short data delivered"),
                        Some(false) => debug!(%id, "short data acknowledged twice"),
                        None => debug!(%id, "delivered short data not removed"),
                    }
                });
            }
            Action::ReadStored {
                session,
                imsi,
                tmsi,
                site,
                after,
                limit,
            } => {
                tokio::spawn(async move {
                    let page = this.read_stored(imsi, tmsi, site, after, limit).await;
                    this.run_paced(Input::StoredRead { imsi, session, page }).await;
                });
            }
            Action::ExpireStored => {
                tokio::spawn(async move { this.expire_stored().await });
            }
        }
    }

    /// A page of what is stored for `imsi`, if the unit is still at `tmsi` on `site`.
    async fn read_stored(
        &self,
        imsi: Imsi,
        tmsi: Tmsi,
        site: SiteId,
        after: i64,
        limit: i64,
    ) -> Option<Vec<StoredMessage>> {
        if !(self.vlr.get(&imsi)).is_some_and(|u| u.tmsi == tmsi && u.site == site) {
            return None; // left or moved: the rest waits for its next registration
        }
        let page = self.store.pending_short_data_page(imsi, after, limit).await;
        let Some(page) = self.health.report("reading stored short data", page) else {
            debug!(%imsi, "stored short data not read");
            return None;
        };
        let page = page.into_iter();
        Some(
            page.map(|(id, source, payload)| StoredMessage { id, source, payload })
                .collect(),
        )
    }

    async fn expire_stored(&self) {
        let expired = self.store.expire_short_data(self.clock.unix_ms()).await;
        match self.health.report("expiring short data", expired) {
            None | Some(0) => {}
            Some(n) => info!(messages = n, "undelivered short data expired"),
        }
    }

    /// Queues a frame for `site`, waiting while its link's queue is full; `false` if it
    /// could not be queued.
    async fn send_paced(&self, site: SiteId, frame: Frame) -> bool {
        let sent = self.links.send_wait(site, frame).await;
        if let Err(e) = &sent {
            debug!(error = %e, "message for a site not delivered");
        }
        sent.is_ok()
    }

    fn request(&self, site: SiteId, txn: u32, tmsi: Tmsi, request: Request) -> Input {
        Input::Request {
            site,
            txn,
            sender: self.sender(site, tmsi),
            request,
        }
    }

    /// The sender of a request from `site`, as the VLR and the HLR cache know it.
    fn sender(&self, site: SiteId, tmsi: Tmsi) -> Sender {
        let Some(imsi) = self.vlr.imsi_of(tmsi) else {
            return Sender::NotRegistered;
        };
        if self.vlr.get(&imsi).is_none_or(|u| u.site != site) {
            return Sender::NotRegistered;
        }
        match self.hlr.subscriber(&imsi) {
            None => Sender::NotProvisioned,
            Some(sub) => Sender::Known {
                imsi,
                unit: sub.unit,
                inhibited: sub.inhibited,
                permissions: sub.permissions,
            },
        }
    }

    /// A unit addressed by a request, as the HLR cache and the VLR know it.
    fn addressee(&self, unit: Unit) -> Addressee {
        let Some(imsi) = self.hlr.imsi_for_unit(&unit) else {
            return Addressee::Unknown;
        };
        Addressee::Known {
            imsi,
            // Removed since its address was looked up: as unreachable as inhibited.
            inhibited: self.hlr.subscriber(&imsi).is_none_or(|s| s.inhibited),
            on_air: self.vlr.get(&imsi).map(|u| OnAir {
                tmsi: u.tmsi,
                site: u.site,
            }),
        }
    }
}
