//! Call alert, status messages and short data: the services that use no traffic slot.
//!
//! - Call alert and status to a unit: sent to the unit's site; the sender hears `ACK`
//!   once that gateway acknowledges, or `DENY` "target unreachable" after
//!   `messaging.delivery_timeout_ms`. A status to a talkgroup goes to every affiliated
//!   unit on the air and is acknowledged to the sender once sent.
//! - Short data is stored and forwarded: written to the HLR database (one row per
//!   recipient) before the sender hears `ACK`, delivered when the recipient is (or next
//!   becomes) registered, removed only when its gateway sends `SHORT_DATA_ACK`, dropped
//!   after `messaging.short_data_ttl_ms`. Nothing is lost across a restart. At most
//!   `messaging.max_short_data_in_flight` are being written at once; beyond that, or
//!   when the database fails to store it, the sender hears `DENY` "busy" and may send it
//!   again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Semaphore;
use tracing::{debug, info};

use crate::config::MessagingConfig;
use crate::hlr::HlrCache;
use crate::link::Links;
use crate::protocol::{
    Cause, Frame, Imsi, Message, MessageId, MessageType, ShortData, SiteId, Target, Tmsi, Unit,
    CONTROLLER_TXN_BASE,
};
use crate::store::health::DbHealth;
use crate::store::{now_ms, Store};
use crate::vlr::VlrView;

/// How many of a unit's stored messages are delivered before their acknowledgements are
/// waited for.
pub const STORED_PAGE: i64 = 32;

/// A delivery waiting for its gateway's acknowledgement.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    /// Where and on which transaction the sender asked.
    origin: (SiteId, u32),
    request: MessageType,
    deadline_ms: i64,
}

/// The messaging services.
pub struct Messaging {
    hlr: Arc<HlrCache>,
    vlr: VlrView,
    links: Links,
    store: Store,
    ttl_ms: i64,
    timeout_ms: i64,
    /// (target site, controller txn) → the alert or status waiting for its ACK.
    waiting: DashMap<(SiteId, u32), Waiting>,
    /// Short data sent out and not yet acknowledged: message id → the site it went to.
    /// Only that site's acknowledgement removes the message.
    delivered: DashMap<u64, SiteId>,
    /// Recipients that may have short data stored, with the number of the last store
    /// for them: a registration looks in the database only for these. An entry goes
    /// when a look finds nothing and no store for the recipient came after it began.
    mailbox: DashMap<Imsi, u64>,
    stores: AtomicU64,
    /// One permit per short data being written; none left: the request is refused "busy"
    /// rather than queued without bound.
    store_slots: Arc<Semaphore>,
    /// One permit per talkgroup status being fanned out; none left: refused "busy".
    fanout_slots: Arc<Semaphore>,
    next_txn: AtomicU32,
    health: Arc<DbHealth>,
}

impl Messaging {
    /// The services over the given registries and store.
    pub fn new(hlr: Arc<HlrCache>, vlr: VlrView, links: Links, store: Store, cfg: &MessagingConfig) -> Self {
        Messaging {
            hlr,
            vlr,
            links,
            store,
            ttl_ms: cfg.short_data_ttl_ms as i64,
            timeout_ms: cfg.delivery_timeout_ms as i64,
            waiting: DashMap::new(),
            delivered: DashMap::new(),
            mailbox: DashMap::new(),
            stores: AtomicU64::new(0),
            store_slots: Arc::new(Semaphore::new(cfg.max_short_data_in_flight)),
            fanout_slots: Arc::new(Semaphore::new(cfg.max_status_fanouts_in_flight)),
            next_txn: AtomicU32::new(0),
            health: Arc::default(),
        }
    }

    /// Reports the database operations of these services to `health` (the controller's
    /// shared tracker) rather than to a tracker of their own.
    pub fn reporting_to(mut self, health: Arc<DbHealth>) -> Self {
        self.health = health;
        self
    }

    /// Notes that short data is stored for `imsi` (on start-up, for what the database
    /// holds; afterwards, once a store is written).
    pub fn mail_stored(&self, imsi: Imsi) {
        self.mailbox
            .insert(imsi, self.stores.fetch_add(1, Ordering::SeqCst));
    }

    /// A controller transaction id from a range of its own (`0xA000_0000..`), so that
    /// acknowledgements cannot be confused with those of other procedures.
    fn txn(&self) -> u32 {
        (CONTROLLER_TXN_BASE | 0x2000_0000) + (self.next_txn.fetch_add(1, Ordering::Relaxed) & 0x0FFF_FFFF)
    }

    /// Handles a messaging frame from `site`; `None` for any other message.
    pub fn handle(self: &Arc<Self>, site: SiteId, frame: &Frame, now: i64) -> Option<Vec<Frame>> {
        let txn = frame.txn;
        let ty = frame.msg.message_type();
        let deny = |cause| vec![Frame::new(txn, Message::Deny { request: ty, cause })];
        let out = match &frame.msg {
            Message::CallAlertReq { tmsi, target } => match self.sender(site, *tmsi, ty) {
                Err(c) => deny(c),
                Ok((_, source)) => match self.unit_on_air(*target) {
                    Err(c) => deny(c),
                    Ok((to_tmsi, to_site)) => {
                        let msg = Message::CallAlert {
                            tmsi: to_tmsi,
                            caller: source,
                        };
                        self.deliver_awaiting_ack(to_site, msg, (site, txn), ty, now)
                            .map_or_else(deny, |()| vec![])
                    }
                },
            },
            Message::StatusReq { tmsi, target, code } => match self.sender(site, *tmsi, ty) {
                Err(c) => deny(c),
                Ok(sender) => self.status(site, txn, sender, *target, *code, now),
            },
            Message::ShortDataReq { tmsi, target, data } => match self.sender(site, *tmsi, ty) {
                Err(c) => deny(c),
                Ok(sender) => self.short_data(site, txn, sender, *target, data.clone()),
            },
            Message::Ack {
                acked: MessageType::CallAlert | MessageType::StatusDelivery,
            } => {
                if let Some((_, w)) = self.waiting.remove(&(site, txn)) {
                    let ack = Frame::new(w.origin.1, Message::Ack { acked: w.request });
                    self.send(w.origin.0, ack);
                }
                vec![]
            }
            Message::ShortDataAck { id } => {
                let id = id.get();
                if self.delivered.remove_if(&id, |_, to| *to == site).is_none() {
                    debug!(id, %site, "short data acknowledged by a site it was not sent to; ignored");
                    return Some(vec![]);
                }
                let this = self.clone();
                tokio::spawn(async move {
                    let removed = this.store.remove_short_data(id as i64).await;
                    match this.health.report("removing delivered short data", removed) {
                        Some(true) => debug!(id, "short data delivered"),
                        Some(false) => debug!(id, "short data acknowledged twice"),
                        None => debug!(id, "delivered short data not removed"),
                    }
                });
                vec![]
            }
            _ => return None,
        };
        Some(out)
    }

    /// The unit is on the air: deliver what is stored for it, [`STORED_PAGE`] messages
    /// at a time; the next ones go once those are acknowledged, and if they are not
    /// within the delivery timeout (or the unit left or moved meanwhile), the rest waits
    /// for the unit's next registration.
    pub fn attached(self: &Arc<Self>, imsi: Imsi, tmsi: Tmsi, site: SiteId) {
        let Some(looked_after) = self.mailbox.get(&imsi).map(|n| *n) else {
            return; // nothing stored: no database round trip for this registration
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let page = this.store.pending_short_data_page(imsi, after, STORED_PAGE).await;
                let Some(page) = this.health.report("reading stored short data", page) else {
                    return debug!(%imsi, "stored short data not read");
                };
                if page.is_empty() && after == 0 {
                    this.mailbox.remove_if(&imsi, |_, n| *n == looked_after);
                }
                let full = page.len() as i64 == STORED_PAGE;
                let mut sent = Vec::new();
                for (id, source, payload) in page {
                    after = id;
                    let (Some(id), Some(data)) = (MessageId::new(id as u64), ShortData::new(payload)) else {
                        continue;
                    };
                    let msg = Message::ShortDataDelivery {
                        id,
                        tmsi,
                        source,
                        data,
                    };
                    this.delivered.insert(id.get(), site);
                    sent.push(id.get());
                    this.send_paced(site, Frame::new(this.txn(), msg)).await;
                }
                let still_here = |this: &Self| {
                    this.vlr
                        .get(&imsi)
                        .is_some_and(|u| u.tmsi == tmsi && u.site == site)
                };
                if !full || !this.acknowledged(&sent).await || !still_here(&this) {
                    return;
                }
            }
        });
    }

    /// Waits until every message of `ids` is acknowledged; `false` if the delivery
    /// timeout passes first.
    async fn acknowledged(&self, ids: &[u64]) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.timeout_ms as u64);
        while ids.iter().any(|id| self.delivered.contains_key(id)) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Times out unacknowledged deliveries and drops expired short data.
    pub async fn sweep(&self, now: i64) {
        let late: Vec<(SiteId, u32)> = self
            .waiting
            .iter()
            .filter(|e| e.deadline_ms <= now)
            .map(|e| *e.key())
            .collect();
        for k in late {
            if let Some((_, w)) = self.waiting.remove(&k) {
                let deny = Message::Deny {
                    request: w.request,
                    cause: Cause::TargetUnreachable,
                };
                self.send(w.origin.0, Frame::new(w.origin.1, deny));
            }
        }
        let expired = self.store.expire_short_data(now_ms()).await;
        match self.health.report("expiring short data", expired) {
            None | Some(0) => {}
            Some(n) => info!(messages = n, "undelivered short data expired"),
        }
    }

    fn send(&self, site: SiteId, frame: Frame) {
        if let Err(e) = self.links.send(site, frame) {
            debug!(error = %e, "message for a site not delivered");
        }
    }

    /// Queues a frame for `site`, waiting while its link's queue is full: for what the
    /// spawned tasks send (the many frames of a talkgroup status, a talkgroup's short
    /// data or a unit's stored short data, and the answers after them), which must not
    /// overflow a link that is keeping up.
    async fn send_paced(&self, site: SiteId, frame: Frame) {
        if let Err(e) = self.links.send_wait(site, frame).await {
            debug!(error = %e, "message for a site not delivered");
        }
    }

    /// The registered, enabled sender at `site`, permitted to make `request`
    /// (`PROTOCOL.md §5.6`): its IMSI and dispatch address.
    fn sender(&self, site: SiteId, tmsi: Tmsi, request: MessageType) -> Result<(Imsi, Unit), Cause> {
        let imsi = self.vlr.imsi_of(tmsi).ok_or(Cause::NotRegistered)?;
        self.vlr
            .get(&imsi)
            .filter(|u| u.site == site)
            .ok_or(Cause::NotRegistered)?;
        let sub = self.hlr.subscriber(&imsi).ok_or(Cause::UnknownSubscriber)?;
        if sub.inhibited {
            return Err(Cause::UnitInhibited);
        }
        if !sub.permissions.allows(request) {
            return Err(Cause::ServiceNotPermitted);
        }
        Ok((imsi, sub.unit))
    }

    /// Whether `talkgroup` exists in the sender's own fleet (a message to another
    /// fleet's talkgroup, or to none, is refused "invalid target").
    fn own_talkgroup(
        &self,
        source: Unit,
        fleet: crate::protocol::FleetId,
        talkgroup: crate::protocol::TalkgroupId,
    ) -> bool {
        fleet == source.fleet && self.hlr.talkgroup_exists(fleet, talkgroup)
    }

    /// The TMSI and site of a provisioned unit that is registered now.
    fn unit_on_air(&self, unit: Unit) -> Result<(Tmsi, SiteId), Cause> {
        let imsi = self.hlr.imsi_for_unit(&unit).ok_or(Cause::InvalidTarget)?;
        if self.hlr.subscriber(&imsi).is_none_or(|s| s.inhibited) {
            return Err(Cause::TargetUnreachable);
        }
        let u = self.vlr.get(&imsi).ok_or(Cause::TargetUnreachable)?;
        Ok((u.tmsi, u.site))
    }

    fn deliver_awaiting_ack(
        &self,
        to_site: SiteId,
        msg: Message,
        origin: (SiteId, u32),
        request: MessageType,
        now: i64,
    ) -> Result<(), Cause> {
        let txn = self.txn();
        self.waiting.insert(
            (to_site, txn),
            Waiting {
                origin,
                request,
                deadline_ms: now + self.timeout_ms,
            },
        );
        self.links.send(to_site, Frame::new(txn, msg)).map_err(|_| {
            self.waiting.remove(&(to_site, txn));
            Cause::TargetUnreachable
        })
    }

    fn status(
        self: &Arc<Self>,
        site: SiteId,
        txn: u32,
        (sender, source): (Imsi, Unit),
        target: Target,
        code: u16,
        now: i64,
    ) -> Vec<Frame> {
        let ty = MessageType::StatusReq;
        match target {
            Target::Unit(u) => match self.unit_on_air(u) {
                Err(cause) => vec![Frame::new(txn, Message::Deny { request: ty, cause })],
                Ok((tmsi, to_site)) => {
                    let msg = Message::StatusDelivery { tmsi, source, code };
                    match self.deliver_awaiting_ack(to_site, msg, (site, txn), ty, now) {
                        Ok(()) => vec![],
                        Err(cause) => vec![Frame::new(txn, Message::Deny { request: ty, cause })],
                    }
                }
            },
            Target::Talkgroup { fleet, talkgroup } => {
                if !self.own_talkgroup(source, fleet, talkgroup) {
                    return vec![Frame::new(
                        txn,
                        Message::Deny {
                            request: ty,
                            cause: Cause::InvalidTarget,
                        },
                    )];
                }
                // A talkgroup can have more members at a site than its link queues: the
                // deliveries wait for room, then the sender hears ACK. The sender gets
                // no copy of its own status.
                let Ok(slot) = self.fanout_slots.clone().try_acquire_owned() else {
                    debug!("too many talkgroup statuses in flight; refused busy");
                    return vec![Frame::new(
                        txn,
                        Message::Deny {
                            request: ty,
                            cause: Cause::Busy,
                        },
                    )];
                };
                let mut units = self.vlr.affiliated_units(fleet, talkgroup);
                units.retain(|(imsi, _, _)| *imsi != sender);
                let this = self.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    for (_, tmsi, to_site) in units {
                        let msg = Message::StatusDelivery { tmsi, source, code };
                        this.send_paced(to_site, Frame::new(this.txn(), msg)).await;
                    }
                    this.send_paced(site, Frame::new(txn, Message::Ack { acked: ty }))
                        .await;
                });
                vec![]
            }
        }
    }

    /// Stores the message for every recipient, then acknowledges and delivers to those
    /// on the air.
    fn short_data(
        self: &Arc<Self>,
        site: SiteId,
        txn: u32,
        (sender, source): (Imsi, Unit),
        target: Target,
        data: ShortData,
    ) -> Vec<Frame> {
        let ty = MessageType::ShortDataReq;
        let recipients: Vec<Imsi> = match target {
            Target::Unit(u) => match self.hlr.imsi_for_unit(&u) {
                Some(i) => vec![i],
                None => {
                    return vec![Frame::new(
                        txn,
                        Message::Deny {
                            request: ty,
                            cause: Cause::InvalidTarget,
                        },
                    )]
                }
            },
            Target::Talkgroup { fleet, talkgroup } if self.own_talkgroup(source, fleet, talkgroup) => {
                // Every member but the sender.
                let mut members = self.hlr.talkgroup_members(fleet, talkgroup);
                members.retain(|imsi| *imsi != sender);
                members
            }
            Target::Talkgroup { .. } => {
                return vec![Frame::new(
                    txn,
                    Message::Deny {
                        request: ty,
                        cause: Cause::InvalidTarget,
                    },
                )]
            }
        };
        let Ok(slot) = self.store_slots.clone().try_acquire_owned() else {
            debug!("too many short data stores in flight; refused busy");
            return vec![Frame::new(
                txn,
                Message::Deny {
                    request: ty,
                    cause: Cause::Busy,
                },
            )];
        };
        let this = self.clone();
        let expires = now_ms() + self.ttl_ms;
        tokio::spawn(async move {
            let _slot = slot;
            let stored = this
                .store
                .store_short_data(&recipients, source, data.as_bytes(), expires)
                .await;
            match this.health.report("storing short data", stored) {
                Some(ids) => {
                    for imsi in &recipients {
                        this.mail_stored(*imsi);
                    }
                    this.send_paced(site, Frame::new(txn, Message::Ack { acked: ty }))
                        .await;
                    for (imsi, id) in recipients.iter().zip(ids) {
                        let (Some(u), Some(id)) = (this.vlr.get(imsi), MessageId::new(id as u64)) else {
                            continue;
                        };
                        let msg = Message::ShortDataDelivery {
                            id,
                            tmsi: u.tmsi,
                            source,
                            data: data.clone(),
                        };
                        this.delivered.insert(id.get(), u.site);
                        this.send_paced(u.site, Frame::new(this.txn(), msg)).await;
                    }
                }
                None => {
                    // Nothing was stored: the radio may send it again (PROTOCOL.md §5.1).
                    let deny = Message::Deny {
                        request: ty,
                        cause: Cause::Busy,
                    };
                    this.send_paced(site, Frame::new(txn, deny)).await;
                }
            }
        });
        vec![]
    }
}
