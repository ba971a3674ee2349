//! The messaging services around the messaging state machine ([`Courier`]): looks up
//! what each request needs in the VLR and the HLR cache (the sender, the target unit's
//! site and TMSI, a talkgroup's units), hands it to the machine, carries out its actions
//! (frames to gateways, short data stored, read and removed in the HLR database), and
//! drives its timers. Runs inside the controller, as `crate::shell::calls` does around the
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
//! - A console sends the same three services from a dispatcher's unit address
//!   ([`Messaging::from_console`]): that address must be a provisioned subscriber, not
//!   inhibited, with the permission a radio would need (`PROTOCOL.md §5.6`), but it is
//!   not on the air, so it is not checked for registration. Its answer is what a radio
//!   would have been told ([`Reply`]), at the same moment; each answer is also published
//!   as an [`EventKind::Message`] event. Requests still waiting when the controller stops
//!   are refused "shutting down".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::clock::Clock;
use crate::config::MessagingConfig;
pub use crate::core::messaging::Reply;
pub use crate::core::messaging::STORED_PAGE;
use crate::core::messaging::{
    Action, Addressee, Courier, CourierConfig, Input, OnAir, Origin, Request, Sender, ShortDataTarget,
    StatusTarget, StoredMessage,
};
use crate::events::{EventBus, EventKind, MessageKind};
use crate::hlr::HlrCache;
use crate::link::Links;
use crate::protocol::{Cause, Frame, Imsi, Message, MessageType, ShortData, SiteId, Target, Tmsi, Unit};
use crate::shell::alarm::Alarm;
use crate::store::health::DbHealth;
use crate::store::Store;
use crate::vlr::VlrView;

/// A message a console sends from a dispatcher's unit address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleMessage {
    /// Page a unit.
    CallAlert {
        /// The unit.
        to: Unit,
    },
    /// A status message to a unit or a talkgroup.
    Status {
        /// To whom.
        to: Target,
        /// The code.
        code: u16,
    },
    /// Short data to a unit or a talkgroup (stored and forwarded).
    ShortData {
        /// To whom.
        to: Target,
        /// The payload.
        data: ShortData,
    },
}

impl ConsoleMessage {
    /// Which service it is.
    pub fn kind(&self) -> MessageKind {
        match self {
            ConsoleMessage::CallAlert { .. } => MessageKind::CallAlert,
            ConsoleMessage::Status { code, .. } => MessageKind::Status { code: *code },
            ConsoleMessage::ShortData { .. } => MessageKind::ShortData,
        }
    }

    /// To whom it goes.
    pub fn to(&self) -> Target {
        match self {
            ConsoleMessage::CallAlert { to } => Target::Unit(*to),
            ConsoleMessage::Status { to, .. } | ConsoleMessage::ShortData { to, .. } => *to,
        }
    }
}

/// A console request waiting for its answer.
struct Waiter {
    answer: oneshot::Sender<Reply>,
    /// The event its answer is published as, without the outcome.
    actor: String,
    from: Unit,
    kind: MessageKind,
    to: Target,
}

/// The console requests waiting for their answers.
#[derive(Default)]
struct Consoles {
    next: u64,
    waiting: HashMap<u64, Waiter>,
    /// Set once the timers stopped: nothing would answer a new request.
    closed: bool,
}

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
    consoles: Mutex<Consoles>,
    /// Where console messages are told.
    events: Arc<EventBus>,
    /// The controller's write-behind tracker: the work behind the answers (storing,
    /// reading, removing and expiring short data, fan-outs) runs on it, so that a
    /// stopping controller waits for it.
    behind: TaskTracker,
}

impl Messaging {
    /// The services over the given registries and store, on `clock`; console messages
    /// are told on `events`.
    pub fn new(
        hlr: Arc<HlrCache>,
        vlr: VlrView,
        links: Links,
        store: Store,
        cfg: &MessagingConfig,
        clock: Clock,
        events: Arc<EventBus>,
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
            consoles: Mutex::default(),
            events,
            behind: TaskTracker::new(),
        }
    }

    /// Runs the work behind the answers (short data in the store, fan-outs) on
    /// `behind`, the controller's write-behind tracker, rather than on a tracker of
    /// their own, so that a stopping controller waits for them.
    pub fn writing_behind_on(mut self, behind: TaskTracker) -> Self {
        self.behind = behind;
        self
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
            Message::CallAlertReq { tmsi, target } => {
                self.request(site, txn, *tmsi, self.call_alert(*target))
            }
            Message::StatusReq { tmsi, target, code } => {
                self.request(site, txn, *tmsi, self.status(*target, *code))
            }
            Message::ShortDataReq { tmsi, target, data } => {
                self.request(site, txn, *tmsi, self.short_data(*target, data.clone()))
            }
            Message::Ack {
                acked: MessageType::CallAlert | MessageType::StatusDelivery,
            } => Input::Ack { site, txn },
            Message::ShortDataAck { id } => Input::ShortDataAck { site, id: *id },
            _ => return None,
        };
        Some(self.run(input, Some((site, txn))))
    }

    /// Sends `message` from a console, as the dispatcher's unit address `from`, for
    /// `actor` (the operator, named in the event); returns once it is answered: with
    /// what a radio would have been told, at the moment it would have been. A call alert
    /// or status to a unit waits at most `messaging.delivery_timeout_ms` for the
    /// recipient's gateway.
    pub async fn from_console(self: &Arc<Self>, actor: &str, from: Unit, message: ConsoleMessage) -> Reply {
        let (answer, answered) = oneshot::channel();
        let id = {
            let mut consoles = self.consoles();
            if consoles.closed {
                return Reply::Refused(Cause::ShuttingDown);
            }
            consoles.next += 1;
            let id = consoles.next;
            let waiter = Waiter {
                answer,
                actor: actor.to_string(),
                from,
                kind: message.kind(),
                to: message.to(),
            };
            consoles.waiting.insert(id, waiter);
            id
        };
        let request = match message {
            ConsoleMessage::CallAlert { to } => self.call_alert(to),
            ConsoleMessage::Status { to, code } => self.status(to, code),
            ConsoleMessage::ShortData { to, data } => self.short_data(to, data),
        };
        let sender = match self.hlr.imsi_for_unit(&from) {
            None => Sender::NotProvisioned,
            Some(imsi) => self.provisioned(imsi),
        };
        let input = Input::Request {
            origin: Origin::Console(id),
            sender,
            request,
        };
        self.run(input, None);
        // Dropped unanswered only when the controller stops.
        answered.await.unwrap_or(Reply::Refused(Cause::ShuttingDown))
    }

    fn consoles(&self) -> std::sync::MutexGuard<'_, Consoles> {
        self.consoles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells console request `id` its reply, and every listener in an event.
    fn answer(&self, id: u64, reply: Reply) {
        let Some(w) = self.consoles().waiting.remove(&id) else {
            return;
        };
        info!(actor = %w.actor, from = ?w.from, to = ?w.to, kind = ?w.kind, ?reply, "console message answered");
        let event = EventKind::Message {
            kind: w.kind,
            from: w.from,
            to: w.to,
            actor: w.actor,
            outcome: reply,
        };
        self.events.publish(event);
        // The console may have stopped waiting.
        let _ = w.answer.send(reply);
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
        // No timer will end what consoles wait for any more: no new console request is
        // taken; those waiting are answered by what is still being written, and the
        // rest refused by `refuse_waiting` once the write-behind is drained.
        self.consoles().closed = true;
    }

    /// Refuses ("shutting down") every console request still waiting: called once the
    /// timers have stopped and the work behind the answers has been drained, so what was
    /// stored or sent has been answered as such.
    pub fn refuse_waiting(&self) {
        let waiting: Vec<u64> = {
            let mut consoles = self.consoles();
            consoles.closed = true;
            consoles.waiting.keys().copied().collect()
        };
        for id in waiting {
            self.answer(id, Reply::Refused(Cause::ShuttingDown));
        }
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
                self.behind.spawn(async move {
                    for (site, frame) in frames.into_iter().chain(then) {
                        this.send_paced(site, frame).await;
                    }
                    this.run(Input::FannedOut { op }, None);
                });
            }
            Action::Answer { console, reply } => self.answer(console, reply),
            Action::Store {
                op,
                recipients,
                source,
                data,
                expires_ms,
            } => {
                self.behind.spawn(async move {
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
                self.behind.spawn(async move {
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
                self.behind.spawn(async move {
                    let page = this.read_stored(imsi, tmsi, site, after, limit).await;
                    this.run_paced(Input::StoredRead { imsi, session, page }).await;
                });
            }
            Action::ExpireStored => {
                self.behind.spawn(async move { this.expire_stored().await });
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
            origin: Origin::Radio { site, txn },
            sender: self.sender(site, tmsi),
            request,
        }
    }

    /// A call alert to `to`, with what the registries know of it.
    fn call_alert(&self, to: Unit) -> Request {
        Request::CallAlert {
            target: self.addressee(to),
        }
    }

    /// A status to `target`, with what the registries know of it.
    fn status(&self, target: Target, code: u16) -> Request {
        let target = match target {
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
        Request::Status { code, target }
    }

    /// Short data to `target`, with what the registries know of it.
    fn short_data(&self, target: Target, data: ShortData) -> Request {
        let target = match target {
            Target::Unit(u) => ShortDataTarget::Unit(self.hlr.imsi_for_unit(&u)),
            Target::Talkgroup { fleet, talkgroup } => ShortDataTarget::Talkgroup {
                fleet,
                talkgroup,
                exists: self.hlr.talkgroup_exists(fleet, talkgroup),
                members: self.hlr.talkgroup_members(fleet, talkgroup),
            },
        };
        Request::ShortData { data, target }
    }

    /// The sender of a request from `site`, as the VLR and the HLR cache know it.
    fn sender(&self, site: SiteId, tmsi: Tmsi) -> Sender {
        let Some(imsi) = self.vlr.imsi_of(tmsi) else {
            return Sender::NotRegistered;
        };
        if self.vlr.get(&imsi).is_none_or(|u| u.site != site) {
            return Sender::NotRegistered;
        }
        self.provisioned(imsi)
    }

    /// The sender `imsi` as the HLR cache knows it.
    fn provisioned(&self, imsi: Imsi) -> Sender {
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
