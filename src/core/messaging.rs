//! The messaging state machine: call alert, status messages and store-and-forward short
//! data (`PROTOCOL.md §5.3`), the services that use no traffic slot. Sans-IO: every
//! input carries the facts the shell (`crate::shell::messaging`) looked up for it and the
//! current time (monotonic ms), and returns the [`Action`]s to carry out;
//! [`Courier::next_wakeup`] says when to call [`Courier::tick`]. No clock, no tokio, no
//! database, no links inside.
//!
//! What it promises:
//! - A request is checked in the order of `PROTOCOL.md §5.3`: the sender is registered
//!   at the sending site, provisioned, not inhibited and holds the permission of §5.6
//!   ([`Permissions::allows`]); then the target. The first failure is the `DENY` cause.
//! - A call alert or status to a unit is answered `ACK` once the recipient's gateway
//!   acknowledges it, or `DENY` "target unreachable" when it does not within
//!   `delivery_timeout_ms` or the frame could not be queued ([`Input::SendFailed`]).
//!   Every such request is answered exactly once.
//! - A status to a talkgroup goes to every affiliated unit on the air but the sender,
//!   then `ACK`; at most `max_fanouts_in_flight` at once, beyond that `DENY` "busy".
//! - Short data is acknowledged only once stored ([`Action::Store`], then
//!   [`Input::Stored`]); at most `max_stores_in_flight` are being stored at once, beyond
//!   that (or when the store fails) `DENY` "busy". A stored message is removed only when
//!   the gateway of the site it was last delivered to sends `SHORT_DATA_ACK`.
//! - A unit that comes on the air gets what is stored for it [`STORED_PAGE`] messages at
//!   a time; the next page is read once all of one are acknowledged. A page not
//!   acknowledged within `delivery_timeout_ms` leaves the rest for the next
//!   registration.
//! - Memory is bounded: every entry waiting for an acknowledgement has a deadline, and
//!   a delivered message is forgotten at the latest `short_data_ttl_ms` after its
//!   delivery (by then the store has dropped it).
//! - A request may come from a radio or from a console ([`Origin`]). Both go through
//!   the same checks and the same delivery; a radio hears its answer as `ACK` or `DENY`
//!   on its request's transaction ([`Action::Send`]), a console as an
//!   [`Action::Answer`] carrying the same [`Reply`], exactly once, at the same moment a
//!   radio would.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::hlr::model::Permissions;
use crate::protocol::{
    Cause, FleetId, Frame, Imsi, Message, MessageId, MessageType, ShortData, SiteId, TalkgroupId, Tmsi, Unit,
    CONTROLLER_TXN_BASE,
};

/// How many of a unit's stored messages are delivered before their acknowledgements are
/// waited for.
pub const STORED_PAGE: i64 = 32;

/// The messaging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CourierConfig {
    /// How long stored short data is kept, ms.
    pub short_data_ttl_ms: i64,
    /// How long a delivery's acknowledgement is waited for, ms.
    pub delivery_timeout_ms: i64,
    /// Short data being stored at once.
    pub max_stores_in_flight: usize,
    /// Talkgroup statuses being fanned out at once.
    pub max_fanouts_in_flight: usize,
    /// How often expired short data is removed from the store ([`Action::ExpireStored`]), ms.
    pub expiry_check_ms: i64,
}

/// Where a unit is on the air now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnAir {
    /// Its TMSI.
    pub tmsi: Tmsi,
    /// Its site.
    pub site: SiteId,
}

/// Who sent a request, and so where its answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A radio: answered `ACK` or `DENY` on transaction `txn` to the gateway of `site`.
    Radio {
        /// The sending site.
        site: SiteId,
        /// The request's transaction.
        txn: u32,
    },
    /// A console request the shell numbered `id`: answered with [`Action::Answer`].
    Console(u64),
}

/// What the sender of a request is told in the end; a radio hears [`Reply::Refused`] as
/// `DENY` with its cause and every other reply as `ACK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The recipient's gateway acknowledged the call alert or status.
    Delivered,
    /// The talkgroup status was queued for every affiliated unit on the air but the
    /// sender, `recipients` of them (their acknowledgements are not waited for).
    SentToTalkgroup {
        /// How many units it was sent to.
        recipients: usize,
    },
    /// The short data was stored durably for `recipients` subscribers: those on the air
    /// receive it now, the others when they next register.
    Stored {
        /// How many subscribers it was stored for.
        recipients: usize,
    },
    /// Refused, with the cause a radio's `DENY` carries (`PROTOCOL.md §5.3`, §6).
    Refused(Cause),
}

/// The unit that sent a request, as the shell found it in the VLR and the HLR. A console
/// sends from a dispatcher's unit address, which is not on the air: the shell looks it
/// up in the HLR only, and it is never [`Sender::NotRegistered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// Its TMSI is not registered at the site the request came from.
    NotRegistered,
    /// Registered, but the HLR has no subscriber for it.
    NotProvisioned,
    /// Registered at the sending site and provisioned.
    Known {
        /// Its IMSI.
        imsi: Imsi,
        /// Its dispatch address (the source of what it sends).
        unit: Unit,
        /// Whether an operator inhibited it.
        inhibited: bool,
        /// What it may use.
        permissions: Permissions,
    },
}

/// A unit addressed by a request, as the shell found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressee {
    /// No subscriber has that address.
    Unknown,
    /// A provisioned subscriber.
    Known {
        /// Its IMSI.
        imsi: Imsi,
        /// Whether it is inhibited (or was removed since its address was looked up).
        inhibited: bool,
        /// Where it is registered now; `None`: off the air.
        on_air: Option<OnAir>,
    },
}

/// What a status message is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusTarget {
    /// One unit.
    Unit(Addressee),
    /// A talkgroup.
    Talkgroup {
        /// Its fleet.
        fleet: FleetId,
        /// The talkgroup.
        talkgroup: TalkgroupId,
        /// Whether the HLR has it.
        exists: bool,
        /// The units on the air affiliated to it (the sender may be among them).
        affiliated: Vec<(Imsi, OnAir)>,
    },
}

/// What short data is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShortDataTarget {
    /// One unit: its IMSI, `None` if no subscriber has the address.
    Unit(Option<Imsi>),
    /// A talkgroup.
    Talkgroup {
        /// Its fleet.
        fleet: FleetId,
        /// The talkgroup.
        talkgroup: TalkgroupId,
        /// Whether the HLR has it.
        exists: bool,
        /// Every subscriber permitted on it (the sender may be among them).
        members: Vec<Imsi>,
    },
}

/// A stored message as the store gives it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id in the store.
    pub id: i64,
    /// Who sent it.
    pub source: Unit,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What a unit asks for, with the facts about its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `CALL_ALERT_REQ`: page a unit.
    CallAlert {
        /// The unit to page.
        target: Addressee,
    },
    /// `STATUS_REQ`.
    Status {
        /// The status code.
        code: u16,
        /// To whom.
        target: StatusTarget,
    },
    /// `SHORT_DATA_REQ`.
    ShortData {
        /// The payload.
        data: ShortData,
        /// To whom.
        target: ShortDataTarget,
    },
}

impl Request {
    /// The request's message type (what its `DENY` names).
    pub fn message_type(&self) -> MessageType {
        match self {
            Request::CallAlert { .. } => MessageType::CallAlertReq,
            Request::Status { .. } => MessageType::StatusReq,
            Request::ShortData { .. } => MessageType::ShortDataReq,
        }
    }
}

/// Input from gateways and from the shell's completed work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A request from a radio or a console.
    Request {
        /// Who sent it, and where it is answered.
        origin: Origin,
        /// The sender.
        sender: Sender,
        /// What it asks for.
        request: Request,
    },
    /// `ACK` from `site` of a `CALL_ALERT` or `STATUS_DELIVERY` sent on `txn`.
    Ack {
        /// The acknowledging site.
        site: SiteId,
        /// The transaction of the delivery.
        txn: u32,
    },
    /// `SHORT_DATA_ACK` from `site`.
    ShortDataAck {
        /// The acknowledging site.
        site: SiteId,
        /// The message.
        id: MessageId,
    },
    /// A frame of an [`Action::Send`] could not be queued on `site`'s link (link down or
    /// its queue full).
    SendFailed {
        /// The site.
        site: SiteId,
        /// The frame's transaction.
        txn: u32,
    },
    /// The [`Action::Store`] `op` is done: the ids of the stored messages in recipient
    /// order, each with where its recipient is on the air now; `None`: nothing stored.
    Stored {
        /// The store.
        op: u64,
        /// What was stored.
        stored: Option<Vec<(i64, Option<OnAir>)>>,
    },
    /// The [`Action::FanOut`] `op` is done.
    FannedOut {
        /// The fan-out.
        op: u64,
    },
    /// A unit registered (or moved) and is on the air at `site`.
    Attached {
        /// The unit.
        imsi: Imsi,
        /// Its TMSI now.
        tmsi: Tmsi,
        /// Its site.
        site: SiteId,
    },
    /// The [`Action::ReadStored`] of `session` is done: the page read, oldest first;
    /// `None` if it could not be read or the unit is no longer where it was.
    StoredRead {
        /// The unit.
        imsi: Imsi,
        /// The delivery session.
        session: u64,
        /// The page.
        page: Option<Vec<StoredMessage>>,
    },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Queue `frame` for the gateway of `site` (a frame on the transaction of a request
    /// from `site` is that request's answer). If it cannot be queued, report
    /// [`Input::SendFailed`].
    Send(SiteId, Frame),
    /// Send `frames` in order, each waiting for room on its link, then `then`; report
    /// [`Input::FannedOut`] once done.
    FanOut {
        /// The fan-out.
        op: u64,
        /// The deliveries.
        frames: Vec<(SiteId, Frame)>,
        /// The answer to a radio sender, after them; `None` for a console, which is
        /// answered ([`Action::Answer`]) once [`Input::FannedOut`] is reported.
        then: Option<(SiteId, Frame)>,
    },
    /// Tell console request `console` its reply (for a radio: [`Action::Send`] of the
    /// `ACK` or `DENY`).
    Answer {
        /// The console request.
        console: u64,
        /// What it is told.
        reply: Reply,
    },
    /// Store `data` for every recipient (one message each, all or none), kept until
    /// `expires_ms` (on the clock of this machine); report [`Input::Stored`].
    Store {
        /// The store.
        op: u64,
        /// The recipients.
        recipients: Vec<Imsi>,
        /// The sender's address.
        source: Unit,
        /// The payload.
        data: ShortData,
        /// Expiry, on the same clock as the `now` of the inputs.
        expires_ms: i64,
    },
    /// Remove the stored message: its recipient's gateway acknowledged it.
    Remove(MessageId),
    /// Read at most `limit` messages stored for `imsi` with an id above `after`, for
    /// the unit at `tmsi` on `site`; report [`Input::StoredRead`].
    ReadStored {
        /// The delivery session.
        session: u64,
        /// The unit.
        imsi: Imsi,
        /// Its TMSI when the session began.
        tmsi: Tmsi,
        /// Its site when the session began.
        site: SiteId,
        /// Only ids above this.
        after: i64,
        /// At most this many.
        limit: i64,
    },
    /// Remove every stored message whose expiry has passed.
    ExpireStored,
}

/// An alert or status delivered to a unit, waiting for its gateway's `ACK`.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    /// Who asked.
    origin: Origin,
    request: MessageType,
    deadline: i64,
}

/// A short data delivery not acknowledged yet.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    /// Only this site's acknowledgement removes the message.
    site: SiteId,
    imsi: Imsi,
    /// Forgotten then: the store has dropped the message by that time.
    forget_at: i64,
}

/// A unit's stored messages being delivered, a page at a time.
#[derive(Clone, Debug)]
struct Session {
    seq: u64,
    tmsi: Tmsi,
    site: SiteId,
    /// The mailbox number when the session began.
    look: u64,
    /// The last id read.
    after: i64,
    /// Delivered ids of the current page not acknowledged yet.
    outstanding: HashSet<u64>,
    /// When the current page's acknowledgements are given up (`None`: reading).
    deadline: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The alert or status delivered on (site, txn).
    Answer(SiteId, u32),
    /// A session's page.
    Page(Imsi),
    /// A delivered message is forgotten.
    Forget(u64),
    /// Expired short data is removed from the store.
    Expiry,
}

/// A short data request being stored.
#[derive(Clone, Debug)]
struct Storing {
    origin: Origin,
    recipients: Vec<Imsi>,
    source: Unit,
    data: ShortData,
}

/// The messaging state machine.
pub struct Courier {
    cfg: CourierConfig,
    /// (target site, controller txn) → the alert or status waiting for its ACK.
    waiting: HashMap<(SiteId, u32), Waiting>,
    /// Message id → the delivery not acknowledged yet.
    delivered: HashMap<u64, Delivered>,
    /// Recipients that may have short data stored, with the number of the last store
    /// for them: a registration reads the store only for these. An entry goes when a
    /// read finds nothing and no store for the recipient came after it began.
    mailbox: HashMap<Imsi, u64>,
    stores: u64,
    /// Unit → its delivery session.
    sessions: HashMap<Imsi, Session>,
    storing: HashMap<u64, Storing>,
    /// Fan-out → the console answer to give once it is done (a radio's goes with it).
    fanouts: HashMap<u64, Option<Action>>,
    timers: BTreeSet<(i64, Timer)>,
    next_op: u64,
    next_txn: u32,
}

impl Courier {
    /// A machine with nothing in flight; its first expiry check is due at
    /// `expiry_check_ms` on the caller's clock.
    pub fn new(cfg: CourierConfig) -> Self {
        let first_expiry = cfg.expiry_check_ms;
        Courier {
            cfg,
            waiting: HashMap::new(),
            delivered: HashMap::new(),
            mailbox: HashMap::new(),
            stores: 0,
            sessions: HashMap::new(),
            storing: HashMap::new(),
            fanouts: HashMap::new(),
            timers: BTreeSet::from([(first_expiry, Timer::Expiry)]),
            next_op: 0,
            next_txn: 0,
        }
    }

    /// Notes that short data may be stored for `imsi` (on start-up, for what the store
    /// holds): its next registration reads the store.
    pub fn mail_stored(&mut self, imsi: Imsi) {
        self.mailbox.insert(imsi, self.stores);
        self.stores += 1;
    }

    /// When [`Courier::tick`] is next due.
    pub fn next_wakeup(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// How many entries wait for something (acknowledgements, stores, fan-outs, page
    /// reads): for tests that check nothing is left behind.
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
            + self.delivered.len()
            + self.sessions.len()
            + self.storing.len()
            + self.fanouts.len()
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, input: Input, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Request {
                origin,
                sender,
                request,
            } => {
                let ty = request.message_type();
                match self.check(sender, ty) {
                    Err(cause) => out.push(deny(origin, ty, cause)),
                    Ok(sender) => out.push(self.request(origin, sender, request, now)),
                }
            }
            Input::Ack { site, txn } => {
                if let Some(w) = self.waiting.remove(&(site, txn)) {
                    self.timers.remove(&(w.deadline, Timer::Answer(site, txn)));
                    out.push(tell(w.origin, w.request, Reply::Delivered));
                }
            }
            Input::SendFailed { site, txn } => {
                // Only an alert or status waits on its frame being queued; a short data
                // delivery that did not go out stays stored for the next registration.
                if let Some(w) = self.waiting.remove(&(site, txn)) {
                    self.timers.remove(&(w.deadline, Timer::Answer(site, txn)));
                    out.push(deny(w.origin, w.request, Cause::TargetUnreachable));
                }
            }
            Input::ShortDataAck { site, id } => self.short_data_ack(site, id, &mut out),
            Input::Stored { op, stored } => self.stored(op, stored, now, &mut out),
            Input::FannedOut { op } => {
                out.extend(self.fanouts.remove(&op).flatten());
            }
            Input::Attached { imsi, tmsi, site } => {
                // Nothing stored: no read for this registration.
                if let Some(look) = self.mailbox.get(&imsi).copied() {
                    self.end_session(imsi);
                    let seq = self.op();
                    let session = Session {
                        seq,
                        tmsi,
                        site,
                        look,
                        after: 0,
                        outstanding: HashSet::new(),
                        deadline: None,
                    };
                    out.push(read(imsi, &session));
                    self.sessions.insert(imsi, session);
                }
            }
            Input::StoredRead { imsi, session, page } => self.stored_read(imsi, session, page, now, &mut out),
        }
        out
    }

    /// Fires every timer due at `now`.
    pub fn tick(&mut self, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                // (Every timer is removed with what it watches; the checks are a safety net.)
                Timer::Answer(site, txn) => {
                    if self.waiting.get(&(site, txn)).is_some_and(|w| w.deadline == at) {
                        if let Some(w) = self.waiting.remove(&(site, txn)) {
                            out.push(deny(w.origin, w.request, Cause::TargetUnreachable));
                        }
                    }
                }
                // The rest of the unit's messages wait for its next registration.
                Timer::Page(imsi) => {
                    if self.sessions.get(&imsi).is_some_and(|s| s.deadline == Some(at)) {
                        self.sessions.remove(&imsi);
                    }
                }
                Timer::Forget(id) => {
                    if self.delivered.get(&id).is_some_and(|d| d.forget_at == at) {
                        self.delivered.remove(&id);
                    }
                }
                Timer::Expiry => {
                    out.push(Action::ExpireStored);
                    self.timers
                        .insert((now + self.cfg.expiry_check_ms.max(1), Timer::Expiry));
                }
            }
        }
        out
    }

    /// The sender's IMSI and address if it may make `request` (`PROTOCOL.md §5.3`).
    fn check(&self, sender: Sender, request: MessageType) -> Result<(Imsi, Unit), Cause> {
        match sender {
            Sender::NotRegistered => Err(Cause::NotRegistered),
            Sender::NotProvisioned => Err(Cause::UnknownSubscriber),
            Sender::Known { inhibited: true, .. } => Err(Cause::UnitInhibited),
            Sender::Known { permissions, .. } if !permissions.allows(request) => {
                Err(Cause::ServiceNotPermitted)
            }
            Sender::Known { imsi, unit, .. } => Ok((imsi, unit)),
        }
    }

    /// A controller transaction id from a range of its own (`0xA000_0000..`), so that
    /// acknowledgements cannot be confused with those of other procedures.
    fn txn(&mut self) -> u32 {
        let n = self.next_txn;
        self.next_txn = n.wrapping_add(1);
        (CONTROLLER_TXN_BASE | 0x2000_0000) + (n & 0x0FFF_FFFF)
    }

    fn op(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op
    }

    /// Sends `msg` to `to_site` on a transaction of its own, answered to `origin` when
    /// acknowledged or timed out.
    fn await_ack(
        &mut self,
        origin: Origin,
        request: MessageType,
        to_site: SiteId,
        msg: Message,
        now: i64,
    ) -> Action {
        let txn = self.txn();
        let deadline = now + self.cfg.delivery_timeout_ms;
        self.waiting.insert(
            (to_site, txn),
            Waiting {
                origin,
                request,
                deadline,
            },
        );
        self.timers.insert((deadline, Timer::Answer(to_site, txn)));
        Action::Send(to_site, Frame::new(txn, msg))
    }

    /// Carries out a request from a sender that may make it: checks its target
    /// (`PROTOCOL.md §5.3`) and delivers, fans out or has stored what it asks for.
    fn request(
        &mut self,
        origin: Origin,
        (sender, source): (Imsi, Unit),
        request: Request,
        now: i64,
    ) -> Action {
        let ty = request.message_type();
        // A talkgroup target must exist in the sender's own fleet.
        let own = |fleet, exists| match exists && fleet == source.fleet {
            true => Ok(()),
            false => Err(Cause::InvalidTarget),
        };
        let done = match request {
            Request::CallAlert { target } => on_air(target).map(|to| {
                let msg = Message::CallAlert {
                    tmsi: to.tmsi,
                    caller: source,
                };
                self.await_ack(origin, ty, to.site, msg, now)
            }),
            Request::Status {
                code,
                target: StatusTarget::Unit(target),
            } => on_air(target).map(|to| {
                let msg = Message::StatusDelivery {
                    tmsi: to.tmsi,
                    source,
                    code,
                };
                self.await_ack(origin, ty, to.site, msg, now)
            }),
            Request::Status {
                code,
                target:
                    StatusTarget::Talkgroup {
                        fleet,
                        exists,
                        affiliated,
                        ..
                    },
            } => own(fleet, exists).and_then(|()| self.fan_out(origin, sender, source, code, affiliated)),
            Request::ShortData {
                data,
                target: ShortDataTarget::Unit(imsi),
            } => (imsi.ok_or(Cause::InvalidTarget))
                .and_then(|i| self.store(origin, vec![i], source, data, now)),
            Request::ShortData {
                data,
                target:
                    ShortDataTarget::Talkgroup {
                        fleet,
                        exists,
                        mut members,
                        ..
                    },
            } => own(fleet, exists).and_then(|()| {
                // Every member but the sender.
                members.retain(|imsi| *imsi != sender);
                self.store(origin, members, source, data, now)
            }),
        };
        done.unwrap_or_else(|cause| deny(origin, ty, cause))
    }

    /// A talkgroup status to every affiliated unit but the sender, then its `ACK`.
    fn fan_out(
        &mut self,
        origin: Origin,
        sender: Imsi,
        source: Unit,
        code: u16,
        affiliated: Vec<(Imsi, OnAir)>,
    ) -> Result<Action, Cause> {
        if self.fanouts.len() >= self.cfg.max_fanouts_in_flight {
            return Err(Cause::Busy);
        }
        // The sender gets no copy of its own status.
        let frames: Vec<(SiteId, Frame)> = affiliated
            .into_iter()
            .filter(|(imsi, _)| *imsi != sender)
            .map(|(_, to)| {
                let msg = Message::StatusDelivery {
                    tmsi: to.tmsi,
                    source,
                    code,
                };
                (to.site, Frame::new(self.txn(), msg))
            })
            .collect();
        let op = self.op();
        let sent = Reply::SentToTalkgroup {
            recipients: frames.len(),
        };
        // A radio's ACK goes on its link after the deliveries; a console is answered once
        // the fan-out reports that they are queued.
        let (then, later) = match tell(origin, MessageType::StatusReq, sent) {
            Action::Send(site, ack) => (Some((site, ack)), None),
            answer => (None, Some(answer)),
        };
        self.fanouts.insert(op, later);
        Ok(Action::FanOut { op, frames, then })
    }

    /// Has short data stored for every recipient (answered once it is).
    fn store(
        &mut self,
        origin: Origin,
        recipients: Vec<Imsi>,
        source: Unit,
        data: ShortData,
        now: i64,
    ) -> Result<Action, Cause> {
        if self.storing.len() >= self.cfg.max_stores_in_flight {
            return Err(Cause::Busy);
        }
        let op = self.op();
        let store = Action::Store {
            op,
            recipients: recipients.clone(),
            source,
            data: data.clone(),
            expires_ms: now + self.cfg.short_data_ttl_ms,
        };
        self.storing.insert(
            op,
            Storing {
                origin,
                recipients,
                source,
                data,
            },
        );
        Ok(store)
    }

    /// A store finished: the sender hears `ACK` (or "busy" if nothing was stored), then
    /// the recipients on the air get their delivery.
    fn stored(
        &mut self,
        op: u64,
        stored: Option<Vec<(i64, Option<OnAir>)>>,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.storing.remove(&op) else {
            return;
        };
        let ty = MessageType::ShortDataReq;
        let Some(stored) = stored else {
            // Nothing was stored: the radio may send it again (PROTOCOL.md §5.1).
            return out.push(deny(s.origin, ty, Cause::Busy));
        };
        for imsi in &s.recipients {
            self.mail_stored(*imsi);
        }
        let recipients = s.recipients.len();
        out.push(tell(s.origin, ty, Reply::Stored { recipients }));
        for (imsi, (id, to)) in s.recipients.iter().zip(stored) {
            let delivery = to.and_then(|to| self.deliver(*imsi, id, to, s.source, s.data.clone(), now));
            out.extend(delivery.map(|(_, send)| send));
        }
    }

    /// The delivery of a stored message to its recipient on the air, and its id; `None`
    /// if the stored id is not one a frame can carry (such a message is never delivered).
    fn deliver(
        &mut self,
        imsi: Imsi,
        id: i64,
        to: OnAir,
        source: Unit,
        data: ShortData,
        now: i64,
    ) -> Option<(u64, Action)> {
        let id = u64::try_from(id).ok().and_then(MessageId::new)?;
        let msg = Message::ShortDataDelivery {
            id,
            tmsi: to.tmsi,
            source,
            data,
        };
        let forget_at = now + self.cfg.short_data_ttl_ms;
        let id = id.get();
        if let Some(old) = self.delivered.insert(
            id,
            Delivered {
                site: to.site,
                imsi,
                forget_at,
            },
        ) {
            self.timers.remove(&(old.forget_at, Timer::Forget(id)));
        }
        self.timers.insert((forget_at, Timer::Forget(id)));
        Some((id, Action::Send(to.site, Frame::new(self.txn(), msg))))
    }

    fn short_data_ack(&mut self, site: SiteId, id: MessageId, out: &mut Vec<Action>) {
        let key = id.get();
        let Some(d) = self.delivered.get(&key).copied().filter(|d| d.site == site) else {
            return; // acknowledged by a site it was not sent to (or twice): ignored
        };
        self.delivered.remove(&key);
        self.timers.remove(&(d.forget_at, Timer::Forget(key)));
        out.push(Action::Remove(id));
        let Some(s) = self.sessions.get_mut(&d.imsi) else {
            return;
        };
        if s.outstanding.remove(&key) && s.outstanding.is_empty() {
            // The whole page is acknowledged: the next one.
            if let Some(deadline) = s.deadline.take() {
                self.timers.remove(&(deadline, Timer::Page(d.imsi)));
            }
            out.push(read(d.imsi, s));
        }
    }

    fn stored_read(
        &mut self,
        imsi: Imsi,
        seq: u64,
        page: Option<Vec<StoredMessage>>,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.sessions.get(&imsi).filter(|s| s.seq == seq) else {
            return; // a session replaced by a later registration
        };
        let (tmsi, site, look, first) = (s.tmsi, s.site, s.look, s.after == 0);
        let Some(page) = page else {
            self.sessions.remove(&imsi);
            return;
        };
        if page.is_empty() && first && self.mailbox.get(&imsi) == Some(&look) {
            self.mailbox.remove(&imsi);
        }
        let full = page.len() as i64 == STORED_PAGE;
        let mut after = 0;
        let mut sent = HashSet::new();
        for m in page {
            after = m.id;
            let Some(data) = ShortData::new(m.payload) else {
                continue;
            };
            if let Some((id, send)) = self.deliver(imsi, m.id, OnAir { tmsi, site }, m.source, data, now) {
                sent.insert(id);
                out.push(send);
            }
        }
        // Only full pages can have more behind them.
        let Some(s) = self.sessions.get_mut(&imsi).filter(|_| full) else {
            self.sessions.remove(&imsi);
            return;
        };
        s.after = after;
        if sent.is_empty() {
            out.push(read(imsi, s));
        } else {
            let deadline = now + self.cfg.delivery_timeout_ms;
            s.outstanding = sent;
            s.deadline = Some(deadline);
            self.timers.insert((deadline, Timer::Page(imsi)));
        }
    }

    fn end_session(&mut self, imsi: Imsi) {
        if let Some(deadline) = self.sessions.remove(&imsi).and_then(|s| s.deadline) {
            self.timers.remove(&(deadline, Timer::Page(imsi)));
        }
    }
}

/// Where an addressed unit is on the air, or why it cannot be reached (`PROTOCOL.md §5.3`).
fn on_air(target: Addressee) -> Result<OnAir, Cause> {
    match target {
        Addressee::Unknown => Err(Cause::InvalidTarget),
        Addressee::Known { inhibited: true, .. } | Addressee::Known { on_air: None, .. } => {
            Err(Cause::TargetUnreachable)
        }
        Addressee::Known { on_air: Some(at), .. } => Ok(at),
    }
}

/// Tells `origin` how its `request` ended: a radio `ACK` or `DENY` on its transaction, a
/// console its [`Reply`].
fn tell(origin: Origin, request: MessageType, reply: Reply) -> Action {
    match origin {
        Origin::Radio { site, txn } => Action::Send(
            site,
            match reply {
                Reply::Refused(cause) => Frame::deny(txn, request, cause),
                _ => Frame::new(txn, Message::Ack { acked: request }),
            },
        ),
        Origin::Console(console) => Action::Answer { console, reply },
    }
}

fn deny(origin: Origin, request: MessageType, cause: Cause) -> Action {
    tell(origin, request, Reply::Refused(cause))
}

fn read(imsi: Imsi, s: &Session) -> Action {
    Action::ReadStored {
        session: s.seq,
        imsi,
        tmsi: s.tmsi,
        site: s.site,
        after: s.after,
        limit: STORED_PAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MemberId;

    const TIMEOUT: i64 = 300;
    const TTL: i64 = 60_000;
    const EXPIRY_CHECK: i64 = 1000;

    fn courier(max_in_flight: usize) -> Courier {
        Courier::new(CourierConfig {
            short_data_ttl_ms: TTL,
            delivery_timeout_ms: TIMEOUT,
            max_stores_in_flight: max_in_flight,
            max_fanouts_in_flight: max_in_flight,
            expiry_check_ms: EXPIRY_CHECK,
        })
    }

    fn site(n: u16) -> SiteId {
        SiteId::new(n).unwrap()
    }
    fn imsi(n: u16) -> Imsi {
        Imsi::parse(&format!("00101{n:010}")).unwrap()
    }
    fn tmsi(n: u16) -> Tmsi {
        Tmsi::new(1000 + u32::from(n)).unwrap()
    }
    fn fleet() -> FleetId {
        FleetId::new(100).unwrap()
    }
    fn unit(n: u16) -> Unit {
        Unit {
            fleet: fleet(),
            member: MemberId::new(n).unwrap(),
        }
    }
    /// Unit `n` on the air at site `s`.
    fn at(n: u16, s: u16) -> OnAir {
        OnAir {
            tmsi: tmsi(n),
            site: site(s),
        }
    }
    fn sender(n: u16) -> Sender {
        with_permissions(n, Permissions::ALL)
    }
    fn with_permissions(n: u16, permissions: Permissions) -> Sender {
        Sender::Known {
            imsi: imsi(n),
            unit: unit(n),
            inhibited: false,
            permissions,
        }
    }
    /// Unit `n`, provisioned and enabled, on the air at site `s`.
    fn reachable(n: u16, s: u16) -> Addressee {
        Addressee::Known {
            imsi: imsi(n),
            inhibited: false,
            on_air: Some(at(n, s)),
        }
    }
    fn data(b: &[u8]) -> ShortData {
        ShortData::new(b.to_vec()).unwrap()
    }

    /// A request from `from` at site 1 on `txn`.
    fn ask(txn: u32, from: Sender, request: Request) -> Input {
        Input::Request {
            origin: Origin::Radio { site: site(1), txn },
            sender: from,
            request,
        }
    }
    /// Unit `n` comes on the air at site `s`.
    fn attach(n: u16, s: u16) -> Input {
        Input::Attached {
            imsi: imsi(n),
            tmsi: tmsi(n),
            site: site(s),
        }
    }
    /// A call alert from unit 1 at site 1 on `txn` to `target`.
    fn alert(txn: u32, target: Addressee) -> Input {
        ask(txn, sender(1), Request::CallAlert { target })
    }
    /// Short data from unit 1 at site 1 on `txn` to unit `n`.
    fn short_data_to(txn: u32, n: u16) -> Input {
        ask(
            txn,
            sender(1),
            Request::ShortData {
                data: data(b"hello"),
                target: ShortDataTarget::Unit(Some(imsi(n))),
            },
        )
    }
    fn talkgroup_status(
        txn: u32,
        from: Sender,
        target_fleet: FleetId,
        affiliated: Vec<(Imsi, OnAir)>,
    ) -> Input {
        ask(
            txn,
            from,
            Request::Status {
                code: 7,
                target: StatusTarget::Talkgroup {
                    fleet: target_fleet,
                    talkgroup: TalkgroupId::new(10).unwrap(),
                    exists: true,
                    affiliated,
                },
            },
        )
    }

    /// The frames sent, in order.
    fn sends(actions: &[Action]) -> Vec<(SiteId, Frame)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(s, f) => Some((*s, f.clone())),
                _ => None,
            })
            .collect()
    }
    /// What the sender at site 1 heard on `txn`, if anything.
    fn answers(actions: &[Action], txn: u32) -> Vec<Message> {
        sends(actions)
            .into_iter()
            .filter(|(s, f)| *s == site(1) && f.txn == txn)
            .map(|(_, f)| f.msg)
            .collect()
    }
    /// The one frame sent, if it is a refusal to the sender at site 1: its transaction,
    /// the request refused and why.
    fn denial(actions: &[Action]) -> Option<(u32, MessageType, Cause)> {
        match actions {
            [Action::Send(s, f)] if *s == site(1) => match f.msg {
                Message::Deny { request, cause } => Some((f.txn, request, cause)),
                _ => None,
            },
            _ => None,
        }
    }
    fn acked(acked: MessageType) -> Vec<Message> {
        vec![Message::Ack { acked }]
    }
    fn store_op(actions: &[Action]) -> u64 {
        match actions {
            [Action::Store { op, .. }] => *op,
            other => panic!("expected one store, got {other:?}"),
        }
    }
    /// The short data deliveries sent: (site, id, recipient).
    fn deliveries(actions: &[Action]) -> Vec<(SiteId, MessageId, Tmsi)> {
        sends(actions)
            .into_iter()
            .filter_map(|(s, f)| match f.msg {
                Message::ShortDataDelivery { id, tmsi, .. } => Some((s, id, tmsi)),
                _ => None,
            })
            .collect()
    }
    fn stored_page(ids: std::ops::RangeInclusive<i64>) -> Vec<StoredMessage> {
        ids.map(|id| StoredMessage {
            id,
            source: unit(1),
            payload: vec![id as u8],
        })
        .collect()
    }
    /// A request from console request `id`, sending as `from`.
    fn from_console(id: u64, from: Sender, request: Request) -> Input {
        Input::Request {
            origin: Origin::Console(id),
            sender: from,
            request,
        }
    }
    /// The console answers among `actions`, in order.
    fn console_answers(actions: &[Action]) -> Vec<(u64, Reply)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Answer { console, reply } => Some((*console, *reply)),
                _ => None,
            })
            .collect()
    }
    fn ack_of(id: i64, s: u16) -> Input {
        Input::ShortDataAck {
            site: site(s),
            id: MessageId::new(id as u64).unwrap(),
        }
    }

    #[test]
    fn an_alert_is_acknowledged_to_the_sender_once_the_recipients_gateway_acknowledges() {
        let mut m = courier(4);
        let out = m.handle(alert(5, reachable(2, 2)), 0);
        let [(to, f)] = sends(&out).try_into().unwrap();
        assert_eq!(to, site(2));
        assert_eq!(
            f.msg,
            Message::CallAlert {
                tmsi: tmsi(2),
                caller: unit(1)
            }
        );
        assert!(f.txn >= CONTROLLER_TXN_BASE, "a controller transaction");
        // An ACK from another site, or on another transaction, is not the one.
        assert!(m
            .handle(
                Input::Ack {
                    site: site(3),
                    txn: f.txn
                },
                10
            )
            .is_empty());
        assert!(m
            .handle(
                Input::Ack {
                    site: site(2),
                    txn: 5
                },
                10
            )
            .is_empty());
        let out = m.handle(
            Input::Ack {
                site: site(2),
                txn: f.txn,
            },
            20,
        );
        assert_eq!(answers(&out, 5), acked(MessageType::CallAlertReq));
        // Answered once: a second ACK and the deadline do nothing.
        assert!(m
            .handle(
                Input::Ack {
                    site: site(2),
                    txn: f.txn
                },
                30
            )
            .is_empty());
        assert_eq!(m.next_wakeup(), Some(EXPIRY_CHECK));
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn an_unacknowledged_status_is_refused_target_unreachable_at_the_delivery_timeout() {
        let mut m = courier(4);
        let status = ask(
            9,
            sender(1),
            Request::Status {
                code: 42,
                target: StatusTarget::Unit(reachable(2, 2)),
            },
        );
        let out = m.handle(status, 100);
        let [(_, f)] = sends(&out).try_into().unwrap();
        assert_eq!(
            f.msg,
            Message::StatusDelivery {
                tmsi: tmsi(2),
                source: unit(1),
                code: 42
            }
        );
        assert_eq!(m.next_wakeup(), Some(100 + TIMEOUT));
        assert!(m.tick(100 + TIMEOUT - 1).is_empty());
        let out = m.tick(100 + TIMEOUT);
        assert_eq!(
            denial(&out),
            Some((9, MessageType::StatusReq, Cause::TargetUnreachable))
        );
        // A late ACK is not answered again.
        assert!(m
            .handle(
                Input::Ack {
                    site: site(2),
                    txn: f.txn
                },
                500
            )
            .is_empty());
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn an_alert_whose_frame_cannot_be_queued_is_refused_at_once() {
        let mut m = courier(4);
        let out = m.handle(alert(5, reachable(2, 2)), 0);
        let [(_, f)] = sends(&out).try_into().unwrap();
        let out = m.handle(
            Input::SendFailed {
                site: site(2),
                txn: f.txn,
            },
            1,
        );
        assert_eq!(
            denial(&out),
            Some((5, MessageType::CallAlertReq, Cause::TargetUnreachable))
        );
        assert!(m.tick(TIMEOUT).is_empty(), "answered once");
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn alerts_to_units_that_cannot_be_reached_are_refused_with_the_first_failing_check() {
        let mut m = courier(4);
        let cases = [
            (Sender::NotRegistered, reachable(2, 2), Cause::NotRegistered),
            (Sender::NotProvisioned, reachable(2, 2), Cause::UnknownSubscriber),
            (
                Sender::Known {
                    imsi: imsi(1),
                    unit: unit(1),
                    inhibited: true,
                    permissions: Permissions::default(),
                },
                reachable(2, 2),
                Cause::UnitInhibited,
            ),
            (
                with_permissions(1, Permissions::default()),
                Addressee::Unknown,
                Cause::ServiceNotPermitted,
            ),
            (sender(1), Addressee::Unknown, Cause::InvalidTarget),
            (
                sender(1),
                Addressee::Known {
                    imsi: imsi(2),
                    inhibited: true,
                    on_air: Some(at(2, 2)),
                },
                Cause::TargetUnreachable,
            ),
            (
                sender(1),
                Addressee::Known {
                    imsi: imsi(2),
                    inhibited: false,
                    on_air: None,
                },
                Cause::TargetUnreachable,
            ),
        ];
        for (txn, (from, target, cause)) in (1..).zip(cases) {
            let input = ask(txn, from, Request::CallAlert { target });
            let out = m.handle(input, 0);
            let refused = Some((txn, MessageType::CallAlertReq, cause));
            assert_eq!(denial(&out), refused, "only the refusal");
        }
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn each_service_needs_its_own_permission() {
        let mut m = courier(4);
        let private_only = Permissions {
            private_call: true,
            ..Permissions::default()
        };
        let data_only = Permissions {
            short_data: true,
            ..Permissions::default()
        };
        // Call alerts need `private`; status messages and short data need `data`.
        let mut alert_from = |txn, permissions| {
            let input = ask(
                txn,
                with_permissions(1, permissions),
                Request::CallAlert {
                    target: reachable(2, 2),
                },
            );
            m.handle(input, 0)
        };
        assert_eq!(
            denial(&alert_from(1, data_only)),
            Some((1, MessageType::CallAlertReq, Cause::ServiceNotPermitted))
        );
        assert_eq!(sends(&alert_from(2, private_only)).len(), 1, "delivered");
        let status =
            |txn, permissions| talkgroup_status(txn, with_permissions(1, permissions), fleet(), vec![]);
        assert_eq!(
            denial(&m.handle(status(3, private_only), 0)),
            Some((3, MessageType::StatusReq, Cause::ServiceNotPermitted))
        );
        assert!(matches!(
            &m.handle(status(4, data_only), 0)[..],
            [Action::FanOut { .. }]
        ));
        let short_data = |txn, permissions| {
            ask(
                txn,
                with_permissions(1, permissions),
                Request::ShortData {
                    data: data(b"x"),
                    target: ShortDataTarget::Unit(Some(imsi(2))),
                },
            )
        };
        assert_eq!(
            denial(&m.handle(short_data(5, private_only), 0)),
            Some((5, MessageType::ShortDataReq, Cause::ServiceNotPermitted))
        );
        store_op(&m.handle(short_data(6, data_only), 0));
    }

    #[test]
    fn a_talkgroup_status_goes_to_every_affiliated_unit_but_the_sender_then_is_acknowledged() {
        let mut m = courier(4);
        let affiliated = vec![(imsi(1), at(1, 1)), (imsi(2), at(2, 2)), (imsi(3), at(3, 2))];
        let out = m.handle(talkgroup_status(8, sender(1), fleet(), affiliated), 0);
        let [Action::FanOut { op, frames, then }] = &out[..] else {
            panic!("expected a fan-out, got {out:?}");
        };
        let heard: Vec<(SiteId, Message)> = frames.iter().map(|(s, f)| (*s, f.msg.clone())).collect();
        let delivery = |n| Message::StatusDelivery {
            tmsi: tmsi(n),
            source: unit(1),
            code: 7,
        };
        assert_eq!(heard, vec![(site(2), delivery(2)), (site(2), delivery(3))]);
        assert_eq!(
            *then,
            Some((
                site(1),
                Frame::new(
                    8,
                    Message::Ack {
                        acked: MessageType::StatusReq
                    }
                )
            ))
        );
        assert_eq!(m.in_flight(), 1);
        m.handle(Input::FannedOut { op: *op }, 5);
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn targets_that_do_not_exist_or_belong_to_another_fleet_are_invalid() {
        let mut m = courier(4);
        let talkgroup = |fleet, exists| StatusTarget::Talkgroup {
            fleet,
            talkgroup: TalkgroupId::new(10).unwrap(),
            exists,
            affiliated: vec![(imsi(2), at(2, 2))],
        };
        let members = |fleet, exists| ShortDataTarget::Talkgroup {
            fleet,
            talkgroup: TalkgroupId::new(10).unwrap(),
            exists,
            members: vec![imsi(2)],
        };
        let other = FleetId::new(200).unwrap();
        let requests = [
            Request::CallAlert {
                target: Addressee::Unknown,
            },
            Request::Status {
                code: 1,
                target: StatusTarget::Unit(Addressee::Unknown),
            },
            Request::Status {
                code: 1,
                target: talkgroup(fleet(), false),
            },
            Request::Status {
                code: 1,
                target: talkgroup(other, true),
            },
            Request::ShortData {
                data: data(b"x"),
                target: ShortDataTarget::Unit(None),
            },
            Request::ShortData {
                data: data(b"x"),
                target: members(fleet(), false),
            },
            Request::ShortData {
                data: data(b"x"),
                target: members(other, true),
            },
        ];
        for (txn, request) in (1..).zip(requests) {
            let ty = request.message_type();
            let out = m.handle(ask(txn, sender(1), request), 0);
            assert_eq!(denial(&out), Some((txn, ty, Cause::InvalidTarget)));
        }
        assert_eq!(m.in_flight(), 0, "nothing fanned out or stored");
    }

    #[test]
    fn talkgroup_statuses_beyond_the_fanouts_in_flight_are_refused_busy_until_one_ends() {
        let mut m = courier(2);
        let mut ops = Vec::new();
        for txn in 1..=2 {
            match &m.handle(talkgroup_status(txn, sender(1), fleet(), vec![]), 0)[..] {
                [Action::FanOut { op, .. }] => ops.push(*op),
                other => panic!("expected a fan-out, got {other:?}"),
            }
        }
        let out = m.handle(talkgroup_status(3, sender(1), fleet(), vec![]), 0);
        assert_eq!(denial(&out), Some((3, MessageType::StatusReq, Cause::Busy)));
        m.handle(Input::FannedOut { op: ops[0] }, 1);
        let out = m.handle(talkgroup_status(4, sender(1), fleet(), vec![]), 2);
        assert!(matches!(&out[..], [Action::FanOut { .. }]));
    }

    #[test]
    fn short_data_is_acknowledged_once_stored_then_delivered_to_the_recipients_on_the_air() {
        let mut m = courier(4);
        let to_talkgroup = ask(
            3,
            sender(1),
            Request::ShortData {
                data: data(b"meet at gate 4"),
                target: ShortDataTarget::Talkgroup {
                    fleet: fleet(),
                    talkgroup: TalkgroupId::new(10).unwrap(),
                    exists: true,
                    members: vec![imsi(1), imsi(2), imsi(3)],
                },
            },
        );
        let out = m.handle(to_talkgroup, 1000);
        // Nothing is answered before the store: every member but the sender, kept for the TTL.
        let [Action::Store {
            op,
            recipients,
            source,
            expires_ms,
            ..
        }] = &out[..]
        else {
            panic!("expected a store, got {out:?}");
        };
        assert_eq!(recipients, &vec![imsi(2), imsi(3)]);
        assert_eq!((*source, *expires_ms), (unit(1), 1000 + TTL));
        // Unit 2 is on the air at site 2, unit 3 is off.
        let stored = Some(vec![(41, Some(at(2, 2))), (42, None)]);
        let out = m.handle(Input::Stored { op: *op, stored }, 1050);
        let sent = sends(&out);
        assert_eq!(
            sent[0],
            (
                site(1),
                Frame::new(
                    3,
                    Message::Ack {
                        acked: MessageType::ShortDataReq
                    }
                )
            ),
            "the sender hears ACK first"
        );
        assert_eq!(
            deliveries(&out),
            vec![(site(2), MessageId::new(41).unwrap(), tmsi(2))]
        );
        // Unit 3's next registration reads the store.
        let out = m.handle(attach(3, 1), 2000);
        assert!(matches!(&out[..], [Action::ReadStored { after: 0, .. }]));
    }

    #[test]
    fn short_data_that_could_not_be_stored_is_refused_busy() {
        let mut m = courier(4);
        let op = store_op(&m.handle(short_data_to(3, 2), 0));
        let out = m.handle(Input::Stored { op, stored: None }, 10);
        assert_eq!(denial(&out), Some((3, MessageType::ShortDataReq, Cause::Busy)));
        assert_eq!(out.len(), 1);
        assert_eq!(m.in_flight(), 0);
        // Nothing was stored, so nothing is looked for at registration.
        let attached = attach(2, 2);
        assert!(m.handle(attached, 20).is_empty());
    }

    #[test]
    fn short_data_beyond_the_stores_in_flight_is_refused_busy_until_one_is_stored() {
        let mut m = courier(1);
        let first = store_op(&m.handle(short_data_to(1, 3), 0));
        let out = m.handle(short_data_to(2, 3), 0);
        assert_eq!(denial(&out), Some((2, MessageType::ShortDataReq, Cause::Busy)));
        let stored = Some(vec![(1, None)]);
        m.handle(Input::Stored { op: first, stored }, 5);
        store_op(&m.handle(short_data_to(3, 3), 6));
    }

    #[test]
    fn stored_short_data_is_delivered_on_attach_a_page_at_a_time_as_it_is_acknowledged() {
        let mut m = courier(4);
        m.mail_stored(imsi(2));
        // A unit with nothing stored costs no read.
        let nothing = attach(3, 1);
        assert!(m.handle(nothing, 0).is_empty());
        let out = m.handle(attach(2, 2), 0);
        let [Action::ReadStored {
            session,
            imsi: who,
            tmsi: t,
            site: s,
            after: 0,
            limit: STORED_PAGE,
        }] = out[..]
        else {
            panic!("expected a read, got {out:?}");
        };
        assert_eq!((who, t, s), (imsi(2), tmsi(2), site(2)));
        let full = stored_page(1..=STORED_PAGE);
        let out = m.handle(
            Input::StoredRead {
                imsi: imsi(2),
                session,
                page: Some(full),
            },
            10,
        );
        let sent = deliveries(&out);
        assert_eq!(sent.len(), STORED_PAGE as usize);
        assert!(sent.iter().all(|(s, _, t)| (*s, *t) == (site(2), tmsi(2))));
        // No next page until every message of this one is acknowledged.
        for id in 1..STORED_PAGE {
            assert_eq!(
                m.handle(ack_of(id, 2), 20),
                vec![Action::Remove(MessageId::new(id as u64).unwrap())]
            );
        }
        let out = m.handle(ack_of(STORED_PAGE, 2), 20);
        assert_eq!(
            out[0],
            Action::Remove(MessageId::new(STORED_PAGE as u64).unwrap())
        );
        assert!(matches!(
            out[1],
            Action::ReadStored { after: STORED_PAGE, session: s, .. } if s == session
        ));
        // A short page is the last.
        let rest = stored_page(STORED_PAGE + 1..=STORED_PAGE + 3);
        let out = m.handle(
            Input::StoredRead {
                imsi: imsi(2),
                session,
                page: Some(rest),
            },
            30,
        );
        assert_eq!(deliveries(&out).len(), 3);
        for id in STORED_PAGE + 1..=STORED_PAGE + 3 {
            assert!(!m
                .handle(ack_of(id, 2), 40)
                .iter()
                .any(|a| matches!(a, Action::ReadStored { .. })));
        }
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn a_page_not_acknowledged_in_time_leaves_the_rest_for_the_next_registration() {
        let mut m = courier(4);
        m.mail_stored(imsi(2));
        let attached = attach(2, 2);
        let [Action::ReadStored { session, .. }] = m.handle(attached.clone(), 0)[..] else {
            panic!("expected a read");
        };
        let page = Some(stored_page(1..=STORED_PAGE));
        m.handle(
            Input::StoredRead {
                imsi: imsi(2),
                session,
                page,
            },
            0,
        );
        assert_eq!(m.next_wakeup(), Some(TIMEOUT));
        m.tick(TIMEOUT);
        // Late acknowledgements still remove what they acknowledge, but read no more.
        for id in 1..=STORED_PAGE {
            let out = m.handle(ack_of(id, 2), TIMEOUT + 1);
            assert_eq!(out, vec![Action::Remove(MessageId::new(id as u64).unwrap())]);
        }
        // The next registration starts over.
        assert!(matches!(
            &m.handle(attached, 5000)[..],
            [Action::ReadStored { after: 0, .. }]
        ));
    }

    #[test]
    fn an_empty_read_forgets_the_mailbox_unless_a_store_came_meanwhile() {
        let mut m = courier(4);
        m.mail_stored(imsi(2));
        let attached = attach(2, 2);
        let read_of = |out: Vec<Action>| match out[..] {
            [Action::ReadStored { session, .. }] => session,
            _ => panic!("expected a read, got {out:?}"),
        };
        // A store for the unit lands while its read is on the way: it is looked for again.
        let session = read_of(m.handle(attached.clone(), 0));
        let op = store_op(&m.handle(short_data_to(1, 2), 1));
        m.handle(
            Input::Stored {
                op,
                stored: Some(vec![(7, None)]),
            },
            2,
        );
        let empty = |session| Input::StoredRead {
            imsi: imsi(2),
            session,
            page: Some(vec![]),
        };
        m.handle(empty(session), 3);
        let session = read_of(m.handle(attached.clone(), 10));
        // This time nothing came in between: the next registration reads nothing.
        m.handle(empty(session), 11);
        assert!(m.handle(attached, 20).is_empty());
    }

    #[test]
    fn short_data_is_removed_only_on_the_acknowledgement_of_the_site_it_went_to() {
        let mut m = courier(4);
        let op = store_op(&m.handle(short_data_to(1, 2), 0));
        let out = m.handle(
            Input::Stored {
                op,
                stored: Some(vec![(7, Some(at(2, 2)))]),
            },
            1,
        );
        assert_eq!(deliveries(&out).len(), 1);
        assert!(m.handle(ack_of(7, 1), 2).is_empty(), "site 1 claims it: ignored");
        assert!(m.handle(ack_of(8, 2), 2).is_empty(), "never delivered: ignored");
        assert_eq!(
            m.handle(ack_of(7, 2), 3),
            vec![Action::Remove(MessageId::new(7).unwrap())]
        );
        assert!(m.handle(ack_of(7, 2), 4).is_empty(), "acknowledged twice");
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn an_unacknowledged_delivery_is_forgotten_after_the_ttl_and_expired_data_is_removed() {
        let mut m = courier(4);
        let op = store_op(&m.handle(short_data_to(1, 2), 0));
        m.handle(
            Input::Stored {
                op,
                stored: Some(vec![(7, Some(at(2, 2)))]),
            },
            0,
        );
        assert_eq!(m.in_flight(), 1);
        // The store is told to drop expired messages at every check, TTL or not.
        let mut expiry_checks = 0;
        let mut now = 0;
        while let Some(t) = m.next_wakeup().filter(|t| *t <= TTL) {
            now = t;
            expiry_checks += m.tick(now).iter().filter(|a| **a == Action::ExpireStored).count();
        }
        assert_eq!(now, TTL);
        assert_eq!(expiry_checks as i64, TTL / EXPIRY_CHECK);
        // The message is gone from the store by now: its delivery is forgotten, and a
        // late acknowledgement has nothing to remove.
        assert_eq!(m.in_flight(), 0);
        assert!(m.handle(ack_of(7, 2), TTL + 1).is_empty());
    }

    #[test]
    fn an_hour_of_alerts_answers_every_sender_exactly_once_and_leaves_nothing_behind() {
        let mut m = courier(4);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut answered: HashMap<u32, usize> = HashMap::new();
        let mut pending: Vec<(i64, SiteId, u32)> = Vec::new();
        let count = |out: &[Action], answered: &mut HashMap<u32, usize>| {
            for (s, f) in sends(out) {
                if s == site(1) {
                    *answered.entry(f.txn).or_default() += 1;
                }
            }
        };
        let mut now = 0;
        for txn in 1..=10_000u32 {
            now += 360; // ten thousand alerts in an hour
            for (_, s, t) in pending.extract_if(.., |(at, _, _)| *at <= now) {
                let out = m.handle(Input::Ack { site: s, txn: t }, now);
                count(&out, &mut answered);
            }
            let out = m.tick(now);
            count(&out, &mut answered);
            let out = m.handle(alert(txn, reachable(2, 2)), now);
            count(&out, &mut answered);
            if let [(to, f)] = &sends(&out)[..] {
                // Acknowledged in time, late, or never.
                match random(3) {
                    0 => pending.push((now + random(TIMEOUT as u64) as i64, *to, f.txn)),
                    1 => pending.push((now + TIMEOUT + 1 + random(1000) as i64, *to, f.txn)),
                    _ => {}
                }
            }
        }
        let out = m.tick(now + TIMEOUT);
        count(&out, &mut answered);
        assert_eq!(answered.len(), 10_000);
        assert!(answered.values().all(|n| *n == 1));
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn a_console_alert_is_answered_delivered_once_the_recipients_gateway_acknowledges() {
        let mut m = courier(4);
        // A radio request on transaction 5 and console request 5 do not get mixed up.
        let radio = m.handle(alert(5, reachable(3, 2)), 0);
        let [(_, to_radio)] = sends(&radio).try_into().unwrap();
        let request = Request::CallAlert {
            target: reachable(2, 2),
        };
        let out = m.handle(from_console(5, sender(1), request), 0);
        let [(to, f)] = sends(&out).try_into().unwrap();
        assert_eq!(
            (to, f.msg),
            (
                site(2),
                Message::CallAlert {
                    tmsi: tmsi(2),
                    caller: unit(1)
                }
            ),
            "the radio hears the dispatcher's address as the caller"
        );
        assert!(console_answers(&out).is_empty(), "not before the ACK");
        let ack_on = |txn| Input::Ack { site: site(2), txn };
        let out = m.handle(ack_on(f.txn), 10);
        assert_eq!(
            out,
            vec![Action::Answer {
                console: 5,
                reply: Reply::Delivered
            }]
        );
        let out = m.handle(ack_on(to_radio.txn), 10);
        assert_eq!(answers(&out, 5), acked(MessageType::CallAlertReq));
        assert!(console_answers(&out).is_empty());
        // Answered once.
        assert!(m.handle(ack_on(f.txn), 20).is_empty());
        assert!(m.tick(TIMEOUT).is_empty());
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn a_console_request_is_refused_with_the_cause_a_radio_would_hear_and_nothing_is_sent() {
        let mut m = courier(4);
        let inhibited = Sender::Known {
            imsi: imsi(1),
            unit: unit(1),
            inhibited: true,
            permissions: Permissions::ALL,
        };
        let other_fleet = StatusTarget::Talkgroup {
            fleet: FleetId::new(200).unwrap(),
            talkgroup: TalkgroupId::new(10).unwrap(),
            exists: true,
            affiliated: vec![(imsi(2), at(2, 2))],
        };
        let alert_to = |target| Request::CallAlert { target };
        let off_air = Addressee::Known {
            imsi: imsi(2),
            inhibited: false,
            on_air: None,
        };
        let cases = [
            (
                Sender::NotProvisioned,
                alert_to(reachable(2, 2)),
                Cause::UnknownSubscriber,
            ),
            (inhibited, alert_to(reachable(2, 2)), Cause::UnitInhibited),
            (
                with_permissions(1, Permissions::default()),
                alert_to(reachable(2, 2)),
                Cause::ServiceNotPermitted,
            ),
            (sender(1), alert_to(Addressee::Unknown), Cause::InvalidTarget),
            (sender(1), alert_to(off_air), Cause::TargetUnreachable),
            (
                sender(1),
                Request::Status {
                    code: 1,
                    target: other_fleet,
                },
                Cause::InvalidTarget,
            ),
            (
                sender(1),
                Request::ShortData {
                    data: data(b"x"),
                    target: ShortDataTarget::Unit(None),
                },
                Cause::InvalidTarget,
            ),
        ];
        for (id, (from, request, cause)) in (1..).zip(cases) {
            let out = m.handle(from_console(id, from, request), 0);
            let refused = Action::Answer {
                console: id,
                reply: Reply::Refused(cause),
            };
            assert_eq!(out, vec![refused], "only the refusal");
        }
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn a_console_status_not_acknowledged_in_time_or_not_queued_is_refused_unreachable() {
        let mut m = courier(4);
        let status = |id| {
            let request = Request::Status {
                code: 42,
                target: StatusTarget::Unit(reachable(2, 2)),
            };
            from_console(id, sender(1), request)
        };
        let out = m.handle(status(1), 100);
        assert_eq!(sends(&out).len(), 1);
        assert!(m.tick(100 + TIMEOUT - 1).is_empty());
        assert_eq!(
            m.tick(100 + TIMEOUT),
            vec![Action::Answer {
                console: 1,
                reply: Reply::Refused(Cause::TargetUnreachable)
            }]
        );
        // A frame that cannot be queued is refused at once.
        let out = m.handle(status(2), 200);
        let [(to, f)] = sends(&out).try_into().unwrap();
        let failed = Input::SendFailed { site: to, txn: f.txn };
        assert_eq!(
            m.handle(failed, 201),
            vec![Action::Answer {
                console: 2,
                reply: Reply::Refused(Cause::TargetUnreachable)
            }]
        );
        assert!(m.tick(200 + TIMEOUT).is_empty(), "answered once");
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn console_short_data_is_answered_stored_then_delivered_to_the_recipients_on_the_air() {
        let mut m = courier(4);
        let to_talkgroup = |id| {
            let request = Request::ShortData {
                data: data(b"return to base"),
                target: ShortDataTarget::Talkgroup {
                    fleet: fleet(),
                    talkgroup: TalkgroupId::new(10).unwrap(),
                    exists: true,
                    members: vec![imsi(1), imsi(2), imsi(3)],
                },
            };
            from_console(id, sender(1), request)
        };
        let out = m.handle(to_talkgroup(7), 1000);
        let [Action::Store {
            op,
            recipients,
            source,
            ..
        }] = &out[..]
        else {
            panic!("expected a store, got {out:?}");
        };
        // The dispatcher's own address is the source; it gets no copy itself.
        assert_eq!((recipients, *source), (&vec![imsi(2), imsi(3)], unit(1)));
        let stored = Some(vec![(41, Some(at(2, 2))), (42, None)]);
        let out = m.handle(Input::Stored { op: *op, stored }, 1050);
        assert_eq!(
            out[0],
            Action::Answer {
                console: 7,
                reply: Reply::Stored { recipients: 2 }
            },
            "answered first"
        );
        assert_eq!(
            deliveries(&out),
            vec![(site(2), MessageId::new(41).unwrap(), tmsi(2))]
        );
        assert!(matches!(
            &m.handle(attach(3, 1), 2000)[..],
            [Action::ReadStored { after: 0, .. }]
        ));
        // Not stored: refused busy, as a radio would be.
        let op = store_op(&m.handle(to_talkgroup(8), 3000));
        assert_eq!(
            m.handle(Input::Stored { op, stored: None }, 3010),
            vec![Action::Answer {
                console: 8,
                reply: Reply::Refused(Cause::Busy)
            }]
        );
    }

    #[test]
    fn a_console_talkgroup_status_is_answered_with_its_recipients_once_fanned_out() {
        let mut m = courier(1);
        let to_talkgroup = |id, affiliated| {
            let request = Request::Status {
                code: 7,
                target: StatusTarget::Talkgroup {
                    fleet: fleet(),
                    talkgroup: TalkgroupId::new(10).unwrap(),
                    exists: true,
                    affiliated,
                },
            };
            from_console(id, sender(1), request)
        };
        // The dispatcher's unit is on the air too: it is not sent its own status.
        let affiliated = vec![(imsi(1), at(1, 1)), (imsi(2), at(2, 2)), (imsi(3), at(3, 2))];
        let out = m.handle(to_talkgroup(3, affiliated), 0);
        let [Action::FanOut { op, frames, then }] = &out[..] else {
            panic!("expected a fan-out, got {out:?}");
        };
        let heard: Vec<(SiteId, Tmsi)> = (frames.iter())
            .filter_map(|(s, f)| match f.msg {
                Message::StatusDelivery { tmsi, .. } => Some((*s, tmsi)),
                _ => None,
            })
            .collect();
        assert_eq!(heard, vec![(site(2), tmsi(2)), (site(2), tmsi(3))]);
        assert_eq!(*then, None, "no frame for a console");
        // Beyond the fan-outs in flight: busy.
        assert_eq!(
            m.handle(to_talkgroup(4, vec![]), 1),
            vec![Action::Answer {
                console: 4,
                reply: Reply::Refused(Cause::Busy)
            }]
        );
        assert_eq!(
            m.handle(Input::FannedOut { op: *op }, 5),
            vec![Action::Answer {
                console: 3,
                reply: Reply::SentToTalkgroup { recipients: 2 }
            }]
        );
        assert_eq!(m.in_flight(), 0);
    }
}
