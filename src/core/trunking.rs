//! The trunking state machine: calls over the TDMA slots of each site, the priority
//! busy queue and emergency preemption. Sans-IO: every input carries the current time
//! (ms) and returns the actions to carry out; [`Trunking::next_wakeup`] says when to call
//! [`Trunking::tick`]. No clock, no tokio, no database inside.
//!
//! Each site's slots live in a [`SlotTable`] (`core/slots.rs`) and its busy queue in a
//! [`BusyQueue`] (`core/queue.rs`); this file decides what happens to calls and says so
//! (frames and [`CallEvent`]s).
//!
//! Invariants (checked by the property tests): no slot is granted twice; every granted
//! slot is freed exactly once; the control slot (carrier 0, slot 0) and faulty slots are
//! never granted; each site queue is ordered by class (emergency first, then priority)
//! then arrival; no slot stays free while a request for that site waits.
//!
//! The call service (`crate::shell::calls`) checks registration, permissions and
//! affiliation before it hands a request to this machine.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Range;

pub use super::queue::QueueEntry;
use super::queue::{BusyQueue, QueueKey, QueuedRequest, Waiting};
pub use super::slots::{SlotPolicy, SlotUse, SlotView};
use super::slots::{SlotTable, StatusEffect};
use crate::protocol::{
    CallId, CallType, Carrier, Cause, FleetId, Frame, Message, MessageType, QueuePosition, ResourceState,
    SiteGrant, SiteId, Slot, SlotSelector, TalkgroupId, Target, Tmsi, Unit, CONTROLLER_TXN_BASE,
    MAX_GRANT_SITES,
};

/// What an emergency does when its site has no free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmergencyPolicy {
    /// Wait at the head of the queue.
    QueueHead,
    /// End the lowest-priority non-emergency call at that site and take its slot.
    Preempt,
}

/// When a call's slots are given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrunkingMode {
    /// At the end of every transmission (PTT release).
    Transmission,
    /// After a hang time (`hang_time_ms`) without a transmission.
    Message,
    /// After a short hang time (`quasi_hang_time_ms`).
    QuasiTransmission,
}

/// The trunking settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkingConfig {
    /// Slot choice.
    pub slot_policy: SlotPolicy,
    /// Emergency behaviour.
    pub emergency: EmergencyPolicy,
    /// Trunking mode.
    pub mode: TrunkingMode,
    /// Message trunking hang time, ms.
    pub hang_time_ms: i64,
    /// Quasi-transmission trunking hang time, ms.
    pub quasi_hang_time_ms: i64,
    /// Longest call, ms.
    pub max_call_ms: i64,
    /// Most requests waiting per site.
    pub queue_depth: usize,
    /// A request waiting longer is denied "busy", ms; `None` waits forever.
    pub queue_timeout_ms: Option<i64>,
}

/// A call in progress, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallView {
    /// The call.
    pub call: CallId,
    /// Kind of call.
    pub call_type: CallType,
    /// Who asked.
    pub caller: Unit,
    /// Whom.
    pub target: Target,
    /// Where it holds a slot: (site, carrier, slot).
    pub slots: Vec<(SiteId, u8, u8)>,
    /// Who holds the floor (`None`: in hang time).
    pub talker: Option<Unit>,
    /// Its priority level.
    pub priority: u8,
    /// When it was asked for, monotonic ms.
    pub requested_ms: i64,
    /// When it was granted, monotonic ms.
    pub granted_ms: i64,
}

/// Highest priority level a subscriber may have; emergencies rank above it.
pub const MAX_PRIORITY: u8 = 15;
const EMERGENCY_CLASS: u8 = MAX_PRIORITY + 1;

/// A unit taking part in a call, as the service layer resolved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Party {
    /// Its TMSI now.
    pub tmsi: Tmsi,
    /// Its dispatch address.
    pub unit: Unit,
    /// The site it is registered at.
    pub site: SiteId,
}

/// What is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A talkgroup call at `sites` (the caller's site first).
    Group {
        /// The fleet.
        fleet: FleetId,
        /// The talkgroup.
        talkgroup: TalkgroupId,
        /// The sites the call must reach, the caller's first.
        sites: Vec<SiteId>,
        /// Whether it is an emergency call.
        emergency: bool,
    },
    /// A unit-to-unit call.
    Private {
        /// The called unit.
        target: Party,
    },
}

/// A call request that the service layer has validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRequest {
    /// Transaction id of the request on the caller's site link.
    pub txn: u32,
    /// The caller.
    pub caller: Party,
    /// The caller's priority level, 0..=15.
    pub priority: u8,
    /// What is asked for.
    pub kind: RequestKind,
}

impl CallRequest {
    fn emergency(&self) -> bool {
        matches!(self.kind, RequestKind::Group { emergency: true, .. })
    }
    fn class(&self) -> u8 {
        if self.emergency() {
            EMERGENCY_CLASS
        } else {
            self.priority.min(MAX_PRIORITY)
        }
    }
    fn request_type(&self) -> MessageType {
        match self.kind {
            RequestKind::Group { emergency: true, .. } => MessageType::EmergencyCallReq,
            RequestKind::Group { .. } => MessageType::GroupCallReq,
            RequestKind::Private { .. } => MessageType::PrivateCallReq,
        }
    }
    fn call_type(&self) -> CallType {
        match self.kind {
            RequestKind::Group { emergency: true, .. } => CallType::Emergency,
            RequestKind::Group { .. } => CallType::Group,
            RequestKind::Private { .. } => CallType::Private,
        }
    }
    fn target(&self) -> Target {
        match &self.kind {
            RequestKind::Group { fleet, talkgroup, .. } => Target::Talkgroup {
                fleet: *fleet,
                talkgroup: *talkgroup,
            },
            RequestKind::Private { target } => Target::Unit(target.unit),
        }
    }
    fn sites(&self) -> Vec<SiteId> {
        let mut v = match &self.kind {
            RequestKind::Group { sites, .. } => sites.clone(),
            RequestKind::Private { target } => vec![target.site],
        };
        v.sort();
        v.dedup();
        v.retain(|s| *s != self.caller.site);
        v.insert(0, self.caller.site);
        // A grant lists at most MAX_GRANT_SITES sites (PROTOCOL.md §5.3).
        v.truncate(MAX_GRANT_SITES);
        v
    }
}

impl QueuedRequest for CallRequest {
    fn caller(&self) -> Unit {
        self.caller.unit
    }
    fn txn(&self) -> u32 {
        self.txn
    }
    // The inherent methods above, which the call logic uses too.
    fn call_type(&self) -> CallType {
        CallRequest::call_type(self)
    }
    fn target(&self) -> Target {
        CallRequest::target(self)
    }
}

/// One call's accounting record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The call (`None` for a request never granted: it had no call).
    pub call: Option<CallId>,
    /// Kind of call.
    pub call_type: CallType,
    /// Who asked.
    pub caller: Unit,
    /// Whom.
    pub target: Target,
    /// Sites the call held a slot at.
    pub sites: Vec<SiteId>,
    /// When requested, monotonic ms.
    pub requested_ms: i64,
    /// When granted (`None`: never).
    pub granted_ms: Option<i64>,
    /// When it ended (or was refused).
    pub ended_ms: i64,
    /// Why.
    pub end_cause: Cause,
    /// Whether it was preempted by an emergency.
    pub preempted: bool,
    /// Whether it was an emergency call.
    pub emergency: bool,
}

/// What the I/O side must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `frame` to the gateway of `site`.
    Send(SiteId, Frame),
    /// Tell operators what happened; [`CallEvent::Ended`] is also the call record to
    /// write (behind, batched).
    Event(CallEvent),
}

/// Something that happened in the machine, in the order it happened. Every request
/// ends in exactly one [`CallEvent::Ended`] (its call record), granted or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// A call started: it holds a slot at each of its sites.
    Granted {
        /// The call.
        call: CallId,
        /// Kind of call.
        call_type: CallType,
        /// Who asked.
        caller: Unit,
        /// Whom.
        target: Target,
        /// The slot it holds at each site: (site, carrier, slot), by site.
        slots: Vec<(SiteId, u8, u8)>,
    },
    /// A request waits in `site`'s busy queue.
    Queued {
        /// The caller's site.
        site: SiteId,
        /// The caller.
        caller: Unit,
        /// The request's transaction on that site's link.
        txn: u32,
        /// Its position, 1 = next to be served.
        position: usize,
        /// Whether it is an emergency request.
        emergency: bool,
    },
    /// A waiting request's position changed (its gateway is told `QUEUE_UPDATE`).
    QueueMoved {
        /// The site.
        site: SiteId,
        /// The caller.
        caller: Unit,
        /// The request's transaction.
        txn: u32,
        /// Its new position.
        position: usize,
    },
    /// A waiting request left the queue: served, refused, cancelled or lost; a
    /// [`CallEvent::Granted`] or its [`CallEvent::Ended`] says which.
    QueueLeft {
        /// The site.
        site: SiteId,
        /// The caller.
        caller: Unit,
        /// The request's transaction.
        txn: u32,
    },
    /// A request found `site`'s queue at its cap (`queue_depth`).
    QueueFull {
        /// The site.
        site: SiteId,
    },
    /// An emergency call was asked for (before it is granted or queued).
    Emergency {
        /// The caller's site.
        site: SiteId,
        /// The caller.
        caller: Unit,
        /// The talkgroup.
        target: Target,
    },
    /// `call` was ended to free a slot at `site` for an emergency.
    Preempted {
        /// The ended call.
        call: CallId,
        /// Where its slot was taken.
        site: SiteId,
    },
    /// A call ended, or a request was refused without a call: its record.
    Ended(CallRecord),
    /// A traffic slot went out of service or came back.
    SlotChanged {
        /// The site.
        site: SiteId,
        /// The carrier.
        carrier: Carrier,
        /// The slot.
        slot: Slot,
        /// `true`: back in service.
        in_service: bool,
    },
    /// Who holds `call`'s floor changed: `talker` pressed PTT, or (`None`) the talker
    /// let go or was lost and the call is in hang time.
    Talker {
        /// The call.
        call: CallId,
        /// Who talks now; `None` in hang time.
        talker: Option<Unit>,
    },
}

/// Input from gateways and the service layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A validated call request from `caller.site`.
    Request(CallRequest),
    /// The unit withdraws its queued request `request_txn`.
    Cancel {
        /// Site of the cancel.
        site: SiteId,
        /// Transaction of the cancel itself.
        txn: u32,
        /// The unit.
        tmsi: Tmsi,
        /// The request to withdraw.
        request_txn: u32,
    },
    /// A party presses PTT.
    PttPress {
        /// Site of the unit.
        site: SiteId,
        /// Transaction of the press.
        txn: u32,
        /// The call.
        call: CallId,
        /// The unit.
        party: Party,
    },
    /// A party releases PTT.
    PttRelease {
        /// Site of the unit.
        site: SiteId,
        /// Transaction of the release.
        txn: u32,
        /// The call.
        call: CallId,
        /// The unit.
        tmsi: Tmsi,
    },
    /// The gateway of a party's site ends the call (`CALL_END` from the gateway): only
    /// the caller's site, or a private call's target site, may.
    End {
        /// The site that ends it.
        site: SiteId,
        /// The call.
        call: CallId,
    },
    /// A slot or carrier failed or came back.
    SlotStatus {
        /// The site.
        site: SiteId,
        /// The carrier.
        carrier: Carrier,
        /// Which slots.
        slot: SlotSelector,
        /// New state.
        state: ResourceState,
    },
    /// The site's link went down.
    LinkDown(SiteId),
    /// The unit left (deregistered, expired, powered on again under a new TMSI).
    UnitGone(Tmsi),
    /// An operator inhibited the unit: its calls end and its requests go, with cause
    /// "unit inhibited".
    UnitInhibited(Tmsi),
    /// An operator ends the call (cause "ended by operator").
    OperatorEnd(CallId),
    /// The unit stays on the air under a new TMSI (location update): its calls and
    /// requests follow it.
    TmsiChanged {
        /// The TMSI that stopped working.
        old: Tmsi,
        /// The unit's TMSI now.
        new: Tmsi,
    },
}

/// One site: its slots and its busy queue.
struct SiteRes {
    slots: SlotTable,
    queue: BusyQueue<CallRequest>,
}

struct Call {
    id: CallId,
    req: CallRequest,
    slots: BTreeMap<SiteId, (Carrier, Slot)>,
    talker: Option<Party>,
    requested_ms: i64,
    granted_ms: i64,
    /// Bumped whenever the hang timer is re-armed; stale timers are ignored.
    hang_gen: u64,
}

impl Call {
    /// The slot it holds at each site, by site, as operators see them.
    fn slot_list(&self) -> Vec<(SiteId, u8, u8)> {
        self.slots
            .iter()
            .map(|(s, (carrier, slot))| (*s, carrier.get(), slot.get()))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Hang { call: CallId, gen: u64 },
    MaxDuration { call: CallId },
    QueueTimeout { site: SiteId, class: u8, seq: u64 },
}

/// The trunking state machine.
pub struct Trunking {
    cfg: TrunkingConfig,
    sites: BTreeMap<SiteId, SiteRes>,
    calls: HashMap<CallId, Call>,
    /// Units in a call as caller, talker or private target.
    busy: HashMap<Tmsi, CallId>,
    /// Active group calls by talkgroup.
    by_talkgroup: HashMap<(FleetId, TalkgroupId), CallId>,
    /// Due time → timer. Max-duration timers are removed when their call ends; hang and
    /// queue timers are checked for staleness when they fire.
    timers: BTreeSet<(i64, Timer)>,
    /// Call ids not used yet, in blocks (see [`Trunking::add_call_ids`]).
    call_ids: VecDeque<Range<u64>>,
    next_seq: u64,
    next_txn: u32,
    /// Sites whose freed slots must be offered to their queues before returning.
    deferred_serve: Vec<SiteId>,
    /// Set by [`Trunking::end_all`]: every later request is refused "shutting down".
    stopping: bool,
}

impl Trunking {
    /// A machine with no sites.
    pub fn new(cfg: TrunkingConfig) -> Self {
        Trunking {
            cfg,
            sites: BTreeMap::new(),
            calls: HashMap::new(),
            busy: HashMap::new(),
            by_talkgroup: HashMap::new(),
            timers: BTreeSet::new(),
            call_ids: VecDeque::new(),
            next_seq: 0,
            next_txn: CONTROLLER_TXN_BASE | 0x4000_0000,
            deferred_serve: Vec::new(),
            stopping: false,
        }
    }

    /// Adds (or resizes, when idle) a site: `carriers` × `slots_per_carrier` slots, of
    /// which carrier 0 slot 0 is the control channel.
    pub fn add_site(&mut self, id: SiteId, carriers: u8, slots_per_carrier: u8) {
        self.sites.insert(
            id,
            SiteRes {
                slots: SlotTable::new(carriers, slots_per_carrier),
                queue: BusyQueue::new(),
            },
        );
    }

    /// Removes a site an operator took away: what its link going down would do (its
    /// queue goes, calls with a party there end, other calls leave it), then the site.
    pub fn remove_site(&mut self, id: SiteId, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        self.link_down(id, now, &mut out);
        self.sites.remove(&id);
        self.serve_deferred(now, &mut out);
        out
    }

    /// The sites the machine knows, in id order.
    pub fn site_ids(&self) -> Vec<SiteId> {
        self.sites.keys().copied().collect()
    }

    /// Whether the site is known.
    pub fn has_site(&self, id: SiteId) -> bool {
        self.sites.contains_key(&id)
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Requests waiting at `site`.
    pub fn queue_len(&self, site: SiteId) -> usize {
        self.sites.get(&site).map_or(0, |s| s.queue.len())
    }

    /// The classes of the requests waiting at `site`, in serving order (16 = emergency,
    /// else the priority level).
    pub fn queue_classes(&self, site: SiteId) -> Vec<u8> {
        self.sites
            .get(&site)
            .map_or_else(Vec::new, |s| s.queue.classes().collect())
    }

    /// Free (grantable) slots at `site`.
    pub fn free_slots(&self, site: SiteId) -> usize {
        self.sites.get(&site).map_or(0, |s| s.slots.free())
    }

    /// Every call in progress as the record it would get if it ended now (`now`, with
    /// `cause`): for the journal of calls in progress.
    pub fn open_calls(&self, now: i64, cause: Cause) -> Vec<CallRecord> {
        self.calls
            .values()
            .map(|c| CallRecord {
                call: Some(c.id),
                call_type: c.req.call_type(),
                caller: c.req.caller.unit,
                target: c.req.target(),
                sites: c.slots.keys().copied().collect(),
                requested_ms: c.requested_ms,
                granted_ms: Some(c.granted_ms),
                ended_ms: now,
                end_cause: cause,
                preempted: false,
                emergency: c.req.emergency(),
            })
            .collect()
    }

    /// Replaces the settings; in force for the next request and timer (calls running
    /// keep the hang and maximum-duration timers they have).
    pub fn set_config(&mut self, cfg: TrunkingConfig) {
        self.cfg = cfg;
    }

    /// The settings in force.
    pub fn config(&self) -> &TrunkingConfig {
        &self.cfg
    }

    /// Whether `call` is in progress.
    pub fn has_call(&self, call: CallId) -> bool {
        self.calls.contains_key(&call)
    }

    /// Every slot of `site`, carrier by carrier (`None`: no such site).
    pub fn slot_map(&self, site: SiteId) -> Option<Vec<SlotView>> {
        self.sites.get(&site).map(|s| s.slots.view())
    }

    /// Every call in progress, by id.
    pub fn calls(&self) -> Vec<CallView> {
        let mut v: Vec<CallView> = self
            .calls
            .values()
            .map(|c| CallView {
                call: c.id,
                call_type: c.req.call_type(),
                caller: c.req.caller.unit,
                target: c.req.target(),
                slots: c.slot_list(),
                talker: c.talker.map(|t| t.unit),
                priority: c.req.priority,
                requested_ms: c.requested_ms,
                granted_ms: c.granted_ms,
            })
            .collect();
        v.sort_by_key(|c| c.call);
        v
    }

    /// The requests waiting at `site`, in serving order (calls waiting to join the site
    /// are not listed: they hold no position).
    pub fn queue(&self, site: SiteId) -> Vec<QueueEntry> {
        self.sites.get(&site).map_or_else(Vec::new, |s| s.queue.view())
    }

    /// Whether `call` is a running emergency call.
    pub fn is_emergency_call(&self, call: CallId) -> bool {
        self.calls.get(&call).is_some_and(|c| c.req.emergency())
    }

    /// The call a unit is busy in.
    pub fn call_of(&self, tmsi: Tmsi) -> Option<CallId> {
        self.busy.get(&tmsi).copied()
    }

    /// When [`Trunking::tick`] must next be called, monotonic ms.
    pub fn next_wakeup(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Handles one input at time `now`.
    pub fn handle(&mut self, input: Input, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Request(req) => self.request(req, now, &mut out),
            Input::Cancel {
                site,
                txn,
                tmsi,
                request_txn,
            } => self.cancel(site, txn, tmsi, request_txn, now, &mut out),
            Input::PttPress {
                site,
                txn,
                call,
                party,
            } => self.ptt_press(site, txn, call, party, &mut out),
            Input::PttRelease {
                site,
                txn,
                call,
                tmsi,
            } => self.ptt_release(site, txn, call, tmsi, now, &mut out),
            Input::End { site, call } => {
                if self.calls.get(&call).is_some_and(|c| party_site(c, site)) {
                    self.end_call(call, Cause::Normal, false, now, &mut out);
                }
            }
            Input::SlotStatus {
                site,
                carrier,
                slot,
                state,
            } => self.slot_status(site, carrier, slot, state, now, &mut out),
            Input::LinkDown(site) => self.link_down(site, now, &mut out),
            Input::UnitGone(tmsi) => self.unit_gone(tmsi, Cause::PartyDeregistered, now, &mut out),
            Input::UnitInhibited(tmsi) => self.unit_gone(tmsi, Cause::UnitInhibited, now, &mut out),
            Input::OperatorEnd(call) => self.end_call(call, Cause::OperatorEnded, false, now, &mut out),
            Input::TmsiChanged { old, new } => self.tmsi_changed(old, new),
        }
        self.serve_deferred(now, &mut out);
        out
    }

    /// Runs every timer due at `now`.
    pub fn tick(&mut self, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(&(t, timer)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Hang { call, gen } => {
                    if self
                        .calls
                        .get(&call)
                        .is_some_and(|c| c.hang_gen == gen && c.talker.is_none())
                    {
                        self.end_call(call, Cause::HangTimeExpired, false, now, &mut out);
                    }
                }
                Timer::MaxDuration { call } => {
                    if self.calls.contains_key(&call) {
                        self.end_call(call, Cause::MaxDuration, false, now, &mut out);
                    }
                }
                Timer::QueueTimeout { site, class, seq } => {
                    let removed = self
                        .sites
                        .get_mut(&site)
                        .and_then(|s| s.queue.remove(QueueKey::new(class, seq)));
                    if let Some(Waiting::New { req, requested_ms }) = removed {
                        left_queue(&mut out, site, &req);
                        self.refuse(&req, Cause::Busy, requested_ms, now, &mut out);
                        self.send_positions(site, &mut out);
                    }
                }
            }
        }
        self.serve_deferred(now, &mut out);
        out
    }

    fn serve_deferred(&mut self, now: i64, out: &mut Vec<Action>) {
        while let Some(site) = self.deferred_serve.pop() {
            self.serve(site, now, out);
        }
    }

    fn txn(&mut self) -> u32 {
        let t = self.next_txn;
        self.next_txn = if t == u32::MAX {
            CONTROLLER_TXN_BASE | 0x4000_0000
        } else {
            t + 1
        };
        t
    }

    /// Hands the machine call ids to use: numbers of the shared call counter
    /// (`Store::reserve_call_ids`), each mapped onto the wire's 32-bit space by
    /// [`wire_call_id`]. Blocks are used in the order given.
    pub fn add_call_ids(&mut self, ids: Range<u64>) {
        if !ids.is_empty() {
            self.call_ids.push_back(ids);
        }
    }

    /// How many call ids the machine has left; at none, new calls are refused "busy".
    pub fn call_ids_left(&self) -> u64 {
        self.call_ids.iter().map(|r| r.end - r.start).sum()
    }

    /// The next unused call id, skipping any still held by a running call (after the
    /// 32-bit space wrapped); `None` when the machine has run out.
    fn new_call_id(&mut self) -> Option<CallId> {
        loop {
            let block = self.call_ids.front_mut()?;
            let n = block.start;
            block.start += 1;
            if block.is_empty() {
                self.call_ids.pop_front();
            }
            match wire_call_id(n) {
                Some(id) if !self.calls.contains_key(&id) => return Some(id),
                _ => continue,
            }
        }
    }

    fn request(&mut self, req: CallRequest, now: i64, out: &mut Vec<Action>) {
        if req.emergency() {
            out.push(Action::Event(CallEvent::Emergency {
                site: req.caller.site,
                caller: req.caller.unit,
                target: req.target(),
            }));
        }
        self.admit(req, now, now, out, false);
    }

    /// Decides a request: refuse, join or take over a running talkgroup call, start,
    /// preempt, or queue. A request served from the queue (`from_queue`) is decided
    /// again the same way, since the situation may have changed while it waited.
    fn admit(
        &mut self,
        req: CallRequest,
        requested_ms: i64,
        now: i64,
        out: &mut Vec<Action>,
        from_queue: bool,
    ) {
        let site = req.caller.site;
        if self.stopping {
            return self.refuse(&req, Cause::ShuttingDown, requested_ms, now, out);
        }
        if !self.sites.contains_key(&site) {
            return self.refuse(&req, Cause::InvalidTarget, requested_ms, now, out);
        }
        if self.busy.contains_key(&req.caller.tmsi) && !req.emergency() {
            return self.refuse(&req, Cause::Busy, requested_ms, now, out);
        }
        if let RequestKind::Private { target } = &req.kind {
            if self.busy.contains_key(&target.tmsi) {
                return self.refuse(&req, Cause::TargetBusy, requested_ms, now, out);
            }
        }
        if let Some(caller_call) = self.busy.get(&req.caller.tmsi).copied() {
            // An emergency from a unit in another call leaves that call first, and its
            // other waiting requests go (ending the call serves the queue, which must
            // not start another call of this unit).
            self.drop_queued_of(req.caller.tmsi, Cause::Cancelled, now, out);
            if self
                .calls
                .get(&caller_call)
                .is_some_and(|c| party_tmsi(c, req.caller.tmsi))
            {
                self.end_call(caller_call, Cause::Normal, false, now, out);
            }
            self.busy.remove(&req.caller.tmsi);
        }
        if let RequestKind::Group {
            fleet,
            talkgroup,
            emergency,
            ..
        } = &req.kind
        {
            if let Some(existing) = self.by_talkgroup.get(&(*fleet, *talkgroup)).copied() {
                let existing_emergency = self.calls.get(&existing).is_some_and(|c| c.req.emergency());
                if *emergency && !existing_emergency {
                    return self.take_over(existing, req, now, out);
                }
                return self.join_existing(existing, req, requested_ms, now, out, from_queue);
            }
        }
        if let RequestKind::Private { target } = &req.kind {
            // Both ends need a slot; the target's site is not queued for.
            if target.site != site && self.free_slots(target.site) == 0 {
                return self.refuse(&req, Cause::Busy, requested_ms, now, out);
            }
        }
        if self.free_slots(site) > 0 {
            return self.start_call(req, requested_ms, now, None, out);
        }
        if req.emergency()
            && self.cfg.emergency == EmergencyPolicy::Preempt
            && self.preempt_at(site, now, out)
        {
            return self.start_call(req, requested_ms, now, None, out);
        }
        if from_queue {
            // Cannot happen (a request is served only when its site has a free slot),
            // but never loop: refuse rather than queue again.
            return self.refuse(&req, Cause::Busy, requested_ms, now, out);
        }
        self.enqueue(req, requested_ms, now, out);
    }

    /// An emergency takes over the talkgroup's running call: that call ends with
    /// "emergency takeover" and its slots go straight to the emergency.
    fn take_over(&mut self, existing: CallId, req: CallRequest, now: i64, out: &mut Vec<Action>) {
        let slots = self
            .calls
            .get(&existing)
            .map(|c| c.slots.clone())
            .unwrap_or_default();
        self.end_call_keep_slots(existing, Cause::EmergencyTakeover, now, out);
        let site = req.caller.site;
        if slots.contains_key(&site)
            || self.free_slots(site) > 0
            || (self.cfg.emergency == EmergencyPolicy::Preempt && self.preempt_at(site, now, out))
        {
            return self.start_call(req, now, now, Some(slots), out);
        }
        for (s, cs) in slots {
            self.release_slot(s, cs);
            self.serve(s, now, out);
        }
        self.enqueue(req, now, now, out);
    }

    /// A request for a talkgroup whose call is running joins that call: the caller's
    /// site is added (if a slot is free) and the caller gets the call's grant.
    fn join_existing(
        &mut self,
        id: CallId,
        req: CallRequest,
        requested_ms: i64,
        now: i64,
        out: &mut Vec<Action>,
        from_queue: bool,
    ) {
        let site = req.caller.site;
        let has_site = self.calls.get(&id).is_some_and(|c| c.slots.contains_key(&site));
        if !has_site {
            if self
                .calls
                .get(&id)
                .is_some_and(|c| c.slots.len() >= MAX_GRANT_SITES)
            {
                return self.refuse(&req, Cause::Busy, requested_ms, now, out);
            }
            if self.free_slots(site) == 0
                && !(req.emergency()
                    && self.cfg.emergency == EmergencyPolicy::Preempt
                    && self.preempt_at(site, now, out))
            {
                if from_queue {
                    return self.refuse(&req, Cause::Busy, requested_ms, now, out);
                }
                return self.enqueue(req, requested_ms, now, out);
            }
            // Preemption may have ended the very call being joined.
            if !self.calls.contains_key(&id) {
                return self.admit(req, requested_ms, now, out, from_queue);
            }
            let Some(cs) = self.allocate(site, id) else {
                return self.refuse(&req, Cause::Busy, requested_ms, now, out);
            };
            if let Some(c) = self.calls.get_mut(&id) {
                c.slots.insert(site, cs);
            }
        }
        let Some(c) = self.calls.get(&id) else { return };
        out.push(Action::Send(site, grant_frame(c, req.txn)));
    }

    /// Ends the lowest-priority non-emergency call holding a slot at `site`; `true` if
    /// a slot was freed.
    fn preempt_at(&mut self, site: SiteId, now: i64, out: &mut Vec<Action>) -> bool {
        let victim = self
            .calls
            .values()
            .filter(|c| !c.req.emergency() && c.slots.contains_key(&site))
            .min_by_key(|c| (c.req.priority, Reverse(c.granted_ms), Reverse(c.id)))
            .map(|c| c.id);
        match victim {
            Some(v) => {
                // Its slots at other sites go to their queues once the emergency is set up.
                if let Some(c) = self.calls.get(&v) {
                    self.deferred_serve.extend(c.slots.keys().filter(|s| **s != site));
                }
                out.push(Action::Event(CallEvent::Preempted { call: v, site }));
                self.end_call_inner(v, Cause::Preempted, true, now, out, false);
                true
            }
            None => false,
        }
    }

    fn enqueue(&mut self, req: CallRequest, requested_ms: i64, now: i64, out: &mut Vec<Action>) {
        let site = req.caller.site;
        let depth = self.cfg.queue_depth;
        let class = req.class();
        let Some(s) = self.sites.get_mut(&site) else {
            return self.refuse(&req, Cause::InvalidTarget, requested_ms, now, out);
        };
        if s.queue.len() >= depth {
            out.push(Action::Event(CallEvent::QueueFull { site }));
            // A full queue still takes an emergency: it displaces the newest lowest entry.
            match s.queue.last() {
                Some(k) if class == EMERGENCY_CLASS && class > k.class() => {
                    if let Some(Waiting::New {
                        req: bumped,
                        requested_ms: r,
                    }) = s.queue.remove(k)
                    {
                        left_queue(out, site, &bumped);
                        self.refuse(&bumped, Cause::QueueFull, r, now, out);
                    }
                }
                _ => return self.refuse(&req, Cause::QueueFull, requested_ms, now, out),
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let (txn, emergency, caller) = (req.txn, req.emergency(), req.caller.unit);
        let Some(s) = self.sites.get_mut(&site) else {
            return self.refuse(&req, Cause::InvalidTarget, requested_ms, now, out);
        };
        // Positions count requests only: a call waiting to join a site is not told.
        let position = s
            .queue
            .insert_request(QueueKey::new(class, seq), req, requested_ms);
        if let Some(t) = self.cfg.queue_timeout_ms {
            self.timers
                .insert((now + t, Timer::QueueTimeout { site, class, seq }));
        }
        let queued = Message::Queued {
            position: qpos(position),
        };
        send(out, site, txn, emergency, queued);
        out.push(Action::Event(CallEvent::Queued {
            site,
            caller,
            txn,
            position,
            emergency,
        }));
        // Those behind it moved down one.
        self.send_positions(site, out);
    }

    /// Tells every waiting request at `site` whose position changed (up or down) since
    /// its gateway last heard it its new position (`QUEUE_UPDATE`).
    fn send_positions(&mut self, site: SiteId, out: &mut Vec<Action>) {
        let Some(s) = self.sites.get_mut(&site) else {
            return;
        };
        s.queue.moved(|req, position| {
            let update = Message::QueueUpdate {
                position: qpos(position),
            };
            send(out, site, req.txn, req.emergency(), update);
            out.push(Action::Event(CallEvent::QueueMoved {
                site,
                caller: req.caller.unit,
                txn: req.txn,
                position,
            }));
        });
    }

    fn refuse(
        &mut self,
        req: &CallRequest,
        cause: Cause,
        requested_ms: i64,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        let deny = Frame::deny(req.txn, req.request_type(), cause).with_emergency(req.emergency());
        out.push(Action::Send(req.caller.site, deny));
        self.record_unserved(req, cause, requested_ms, now, out);
    }

    /// The record of a request that never got a slot.
    fn record_unserved(
        &mut self,
        req: &CallRequest,
        cause: Cause,
        requested_ms: i64,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Event(CallEvent::Ended(CallRecord {
            call: None,
            call_type: req.call_type(),
            caller: req.caller.unit,
            target: req.target(),
            sites: vec![],
            requested_ms,
            granted_ms: None,
            ended_ms: now,
            end_cause: cause,
            preempted: false,
            emergency: req.emergency(),
        })));
    }

    /// Starts a call: a slot at the caller's site (given or free), slots at the other
    /// sites where free, waiting entries where not.
    fn start_call(
        &mut self,
        req: CallRequest,
        requested_ms: i64,
        now: i64,
        reuse: Option<BTreeMap<SiteId, (Carrier, Slot)>>,
        out: &mut Vec<Action>,
    ) {
        let reuse = reuse.unwrap_or_default();
        let Some(id) = self.new_call_id() else {
            // Out of call ids (the counter in the database could not be reached for a
            // long while): refuse, and give back the slots of a taken-over call.
            for (site, cs) in reuse {
                self.release_slot(site, cs);
                self.deferred_serve.push(site);
            }
            return self.refuse(&req, Cause::Busy, requested_ms, now, out);
        };
        let mut slots = BTreeMap::new();
        for site in req.sites() {
            if let Some(&cs) = reuse.get(&site) {
                if let Some(s) = self.sites.get_mut(&site) {
                    s.slots.assign(cs, id);
                }
                slots.insert(site, cs);
            } else if let Some(cs) = self.allocate(site, id) {
                slots.insert(site, cs);
            } else if site != req.caller.site && self.sites.contains_key(&site) {
                let seq = self.next_seq;
                self.next_seq += 1;
                let class = req.class();
                if let Some(s) = self.sites.get_mut(&site) {
                    s.queue.insert_join(QueueKey::new(class, seq), id);
                }
            }
        }
        // Slots of the taken-over call at sites this call does not reach are freed, and
        // handed to waiting requests once this call is fully set up.
        let mut to_serve = Vec::new();
        for (site, cs) in reuse {
            if !slots.contains_key(&site) {
                self.release_slot(site, cs);
                to_serve.push(site);
            }
        }
        debug_assert!(
            slots.contains_key(&req.caller.site),
            "caller site must have a slot"
        );
        self.busy.insert(req.caller.tmsi, id);
        if let RequestKind::Private { target } = &req.kind {
            self.busy.insert(target.tmsi, id);
        }
        if let RequestKind::Group { fleet, talkgroup, .. } = &req.kind {
            self.by_talkgroup.insert((*fleet, *talkgroup), id);
        }
        let call = Call {
            id,
            talker: Some(req.caller),
            req,
            slots,
            requested_ms,
            granted_ms: now,
            hang_gen: 0,
        };
        self.timers
            .insert((now + self.cfg.max_call_ms, Timer::MaxDuration { call: id }));
        let grant = grant_message(&call);
        let sites: Vec<SiteId> = call.slots.keys().copied().collect();
        let (caller_site, txn) = (call.req.caller.site, call.req.txn);
        let emergency = call.req.emergency();
        let granted = CallEvent::Granted {
            call: id,
            call_type: call.req.call_type(),
            caller: call.req.caller.unit,
            target: call.req.target(),
            slots: call.slot_list(),
        };
        self.calls.insert(id, call);
        for site in sites {
            let t = if site == caller_site { txn } else { self.txn() };
            send(out, site, t, emergency, grant.clone());
        }
        out.push(Action::Event(granted));
        for site in to_serve {
            self.serve(site, now, out);
        }
    }

    fn allocate(&mut self, site: SiteId, call: CallId) -> Option<(Carrier, Slot)> {
        let policy = self.cfg.slot_policy;
        self.sites.get_mut(&site)?.slots.allocate(policy, call)
    }

    /// Gives the slot `cs` at `site` back (see [`SlotTable::release`]).
    fn release_slot(&mut self, site: SiteId, cs: (Carrier, Slot)) {
        if let Some(s) = self.sites.get_mut(&site) {
            s.slots.release(cs);
        }
    }

    /// Gives free slots at `site` to waiting entries, best first (work conservation).
    fn serve(&mut self, site: SiteId, now: i64, out: &mut Vec<Action>) {
        let mut served_any = false;
        loop {
            if self.free_slots(site) == 0 {
                break;
            }
            let Some(s) = self.sites.get_mut(&site) else { break };
            let Some(w) = s.queue.pop_first() else { break };
            served_any = true;
            match w {
                Waiting::New { req, requested_ms } => {
                    left_queue(out, site, &req);
                    self.admit(req, requested_ms, now, out, true)
                }
                Waiting::Join(call) => {
                    if self.calls.get(&call).is_none_or(|c| c.slots.contains_key(&site)) {
                        continue;
                    }
                    if let Some(cs) = self.allocate(site, call) {
                        self.grant_at(call, site, cs, out);
                    }
                }
            }
        }
        if served_any {
            self.send_positions(site, out);
        }
    }

    fn end_call(&mut self, id: CallId, cause: Cause, preempted: bool, now: i64, out: &mut Vec<Action>) {
        self.end_call_inner(id, cause, preempted, now, out, true);
    }

    /// Ends a call whose slots go straight to the emergency taking it over.
    fn end_call_keep_slots(&mut self, id: CallId, cause: Cause, now: i64, out: &mut Vec<Action>) {
        self.end_call_inner(id, cause, false, now, out, false);
    }

    fn end_call_inner(
        &mut self,
        id: CallId,
        cause: Cause,
        preempted: bool,
        now: i64,
        out: &mut Vec<Action>,
        serve: bool,
    ) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.timers.remove(&(
            call.granted_ms + self.cfg.max_call_ms,
            Timer::MaxDuration { call: id },
        ));
        for (site, cs) in &call.slots {
            self.release_slot(*site, *cs);
        }
        for s in self.sites.values_mut() {
            s.queue.remove_joins(id);
        }
        // Only a call's parties are ever marked busy in it (checked by the invariants).
        let mut parties = vec![call.req.caller.tmsi];
        if let RequestKind::Private { target } = &call.req.kind {
            parties.push(target.tmsi);
        }
        for tmsi in parties {
            if self.busy.get(&tmsi) == Some(&id) {
                self.busy.remove(&tmsi);
            }
        }
        debug_assert!(
            self.busy.values().all(|c| *c != id),
            "a unit other than a party was busy in call {id}"
        );
        if let RequestKind::Group { fleet, talkgroup, .. } = &call.req.kind {
            if self.by_talkgroup.get(&(*fleet, *talkgroup)) == Some(&id) {
                self.by_talkgroup.remove(&(*fleet, *talkgroup));
            }
        }
        let msg = if preempted {
            Message::Preempted { call: id, cause }
        } else {
            Message::CallEnd { call: id, cause }
        };
        for site in call.slots.keys() {
            let txn = self.txn();
            send(out, *site, txn, call.req.emergency(), msg.clone());
        }
        out.push(Action::Event(CallEvent::Ended(CallRecord {
            call: Some(id),
            call_type: call.req.call_type(),
            caller: call.req.caller.unit,
            target: call.req.target(),
            sites: call.slots.keys().copied().collect(),
            requested_ms: call.requested_ms,
            granted_ms: Some(call.granted_ms),
            ended_ms: now,
            end_cause: cause,
            preempted,
            emergency: call.req.emergency(),
        })));
        if serve {
            for site in call.slots.keys() {
                self.serve(*site, now, out);
            }
        }
    }

    fn cancel(
        &mut self,
        site: SiteId,
        txn: u32,
        tmsi: Tmsi,
        request_txn: u32,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        let removed = self.sites.get_mut(&site).and_then(|s| {
            s.queue
                .remove_request(|req| req.txn == request_txn && req.caller.tmsi == tmsi)
        });
        match removed {
            Some((req, requested_ms)) => {
                let ack = Message::Ack {
                    acked: MessageType::CallCancel,
                };
                send(out, site, txn, req.emergency(), ack);
                left_queue(out, site, &req);
                self.refuse(&req, Cause::Cancelled, requested_ms, now, out);
                self.send_positions(site, out);
            }
            None => {
                let deny = Frame::deny(txn, MessageType::CallCancel, Cause::InvalidTarget);
                out.push(Action::Send(site, deny));
            }
        }
    }

    fn ptt_press(&mut self, site: SiteId, txn: u32, id: CallId, party: Party, out: &mut Vec<Action>) {
        // Only a unit at a site of the call may talk on it; on a private call, only its
        // two parties.
        let allowed = |c: &Call| {
            c.slots.contains_key(&site)
                && (!matches!(c.req.kind, RequestKind::Private { .. }) || party_tmsi(c, party.tmsi))
        };
        let Some(call) = self.calls.get_mut(&id).filter(|c| allowed(c)) else {
            let deny = Frame::deny(txn, MessageType::PttPress, Cause::InvalidTarget);
            return out.push(Action::Send(
                site,
                deny.with_emergency(self.is_emergency_call(id)),
            ));
        };
        let emergency = call.req.emergency();
        if call.talker.is_some_and(|t| t.tmsi != party.tmsi) {
            // Someone else holds the floor (PROTOCOL.md §5.3, floor control).
            let deny = Frame::deny(txn, MessageType::PttPress, Cause::FloorTaken);
            return out.push(Action::Send(site, deny.with_emergency(emergency)));
        }
        let changed = call.talker.is_none();
        call.talker = Some(party);
        call.hang_gen += 1;
        if changed {
            out.push(Action::Event(CallEvent::Talker {
                call: id,
                talker: Some(party.unit),
            }));
        }
        let msg = Message::PttGrant {
            call: id,
            talker: party.unit,
        };
        let sites: Vec<SiteId> = call.slots.keys().copied().collect();
        for s in sites {
            let t = if s == site { txn } else { self.txn() };
            send(out, s, t, emergency, msg.clone());
        }
    }

    fn ptt_release(
        &mut self,
        site: SiteId,
        txn: u32,
        id: CallId,
        tmsi: Tmsi,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        let ack = Message::Ack {
            acked: MessageType::PttRelease,
        };
        send(out, site, txn, self.is_emergency_call(id), ack);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.talker.map(|t| t.tmsi) != Some(tmsi) {
            return;
        }
        call.talker = None;
        call.hang_gen += 1;
        let gen = call.hang_gen;
        out.push(Action::Event(CallEvent::Talker {
            call: id,
            talker: None,
        }));
        match self.cfg.mode {
            TrunkingMode::Transmission => self.end_call(id, Cause::Normal, false, now, out),
            TrunkingMode::Message => {
                self.timers
                    .insert((now + self.cfg.hang_time_ms, Timer::Hang { call: id, gen }));
            }
            TrunkingMode::QuasiTransmission => {
                self.timers
                    .insert((now + self.cfg.quasi_hang_time_ms, Timer::Hang { call: id, gen }));
            }
        }
    }

    fn slot_status(
        &mut self,
        site: SiteId,
        carrier: Carrier,
        sel: SlotSelector,
        state: ResourceState,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.sites.get_mut(&site) else {
            return;
        };
        let mut hit_calls = Vec::new();
        let known = s.slots.set_status(carrier, sel, state, |effect| match effect {
            StatusEffect::CallHit(call) => hit_calls.push(call),
            StatusEffect::Service { slot, in_service } => out.push(Action::Event(CallEvent::SlotChanged {
                site,
                carrier,
                slot,
                in_service,
            })),
        });
        if !known {
            return;
        }
        for call in hit_calls {
            self.move_call(site, call, now, out);
        }
        if state == ResourceState::InService {
            self.serve(site, now, out);
        }
    }

    /// Gives call `id` the slot `cs` at `site` (newly, or instead of a failed one) and
    /// sends the call's grant there on a transaction of the controller's.
    fn grant_at(&mut self, id: CallId, site: SiteId, cs: (Carrier, Slot), out: &mut Vec<Action>) {
        let txn = self.txn();
        let Some(c) = self.calls.get_mut(&id) else {
            // No such call (cannot happen: callers look it up first): the slot stays free.
            return self.release_slot(site, cs);
        };
        c.slots.insert(site, cs);
        out.push(Action::Send(site, grant_frame(c, txn)));
    }

    /// The call's slot at `site` failed: move it to a free slot there, or end it.
    fn move_call(&mut self, site: SiteId, id: CallId, now: i64, out: &mut Vec<Action>) {
        let Some(old) = self.calls.get(&id).and_then(|c| c.slots.get(&site).copied()) else {
            return;
        };
        match self.allocate(site, id) {
            Some(cs) => {
                if let Some(s) = self.sites.get_mut(&site) {
                    s.slots.retire(old);
                }
                self.grant_at(id, site, cs, out);
            }
            None => self.end_call(id, Cause::SlotFaulty, false, now, out),
        }
    }

    fn link_down(&mut self, site: SiteId, now: i64, out: &mut Vec<Action>) {
        // Requests from that site can no longer be answered, and calls waiting to join
        // it cannot be told: its queue goes.
        let gone: Vec<(CallRequest, i64)> = match self.sites.get_mut(&site) {
            Some(s) => s.queue.take_requests().collect(),
            None => vec![],
        };
        for (req, requested_ms) in gone {
            left_queue(out, site, &req);
            self.record_unserved(&req, Cause::PartyLinkLost, requested_ms, now, out);
        }
        let affected: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| c.slots.contains_key(&site))
            .map(|c| c.id)
            .collect();
        // First release the site from calls that merely reach it, then end the calls
        // with a party there (ending one serves queues, and its grants must not list the
        // lost site's slots).
        let mut to_end = Vec::new();
        for id in affected {
            // Releasing a lost talker may already have ended the call.
            let Some(c) = self.calls.get(&id) else { continue };
            let party_there = c.req.caller.site == site
                || matches!(&c.req.kind, RequestKind::Private { target } if target.site == site);
            if party_there {
                to_end.push(id);
            } else if let Some(cs) = self.calls.get_mut(&id).and_then(|c| c.slots.remove(&site)) {
                self.release_slot(site, cs);
            }
        }
        // Talkers there can no longer release PTT.
        self.talker_gone(|t| t.site == site, Cause::PartyLinkLost, now, out);
        for id in to_end {
            self.end_call(id, Cause::PartyLinkLost, false, now, out);
        }
    }

    /// Ends every call and refuses every waiting request with `cause` (controller
    /// shutdown), so that each leaves its record.
    pub fn end_all(&mut self, cause: Cause, now: i64) -> Vec<Action> {
        self.stopping = true;
        let mut out = Vec::new();
        let calls: Vec<CallId> = self.calls.keys().copied().collect();
        for id in calls {
            self.end_call_inner(id, cause, false, now, &mut out, false);
        }
        let sites: Vec<SiteId> = self.sites.keys().copied().collect();
        for site in sites {
            let Some(s) = self.sites.get_mut(&site) else {
                continue;
            };
            for (req, requested_ms) in s.queue.take_requests() {
                left_queue(&mut out, site, &req);
                self.refuse(&req, cause, requested_ms, now, &mut out);
            }
        }
        out
    }

    /// The talker of calls matching `gone` can no longer release PTT: release it for them.
    fn talker_gone(&mut self, gone: impl Fn(&Party) -> bool, cause: Cause, now: i64, out: &mut Vec<Action>) {
        let talking: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| c.talker.is_some_and(|t| gone(&t)))
            .map(|c| c.id)
            .collect();
        for id in talking {
            let hang = match self.cfg.mode {
                TrunkingMode::Transmission => {
                    self.end_call(id, cause, false, now, out);
                    continue;
                }
                TrunkingMode::Message => self.cfg.hang_time_ms,
                TrunkingMode::QuasiTransmission => self.cfg.quasi_hang_time_ms,
            };
            if let Some(c) = self.calls.get_mut(&id) {
                c.talker = None;
                c.hang_gen += 1;
                let gen = c.hang_gen;
                self.timers.insert((now + hang, Timer::Hang { call: id, gen }));
                out.push(Action::Event(CallEvent::Talker {
                    call: id,
                    talker: None,
                }));
            }
        }
    }

    /// Refuses every waiting request of the unit with `cause`.
    fn drop_queued_of(&mut self, tmsi: Tmsi, cause: Cause, now: i64, out: &mut Vec<Action>) {
        let sites: Vec<SiteId> = self.sites.keys().copied().collect();
        for site in sites {
            let Some(s) = self.sites.get_mut(&site) else {
                continue;
            };
            let removed = s.queue.remove_requests(|req| req.caller.tmsi == tmsi);
            for (req, requested_ms) in &removed {
                left_queue(out, site, req);
                self.refuse(req, cause, *requested_ms, now, out);
            }
            if !removed.is_empty() {
                self.send_positions(site, out);
            }
        }
    }

    fn tmsi_changed(&mut self, old: Tmsi, new: Tmsi) {
        if let Some(c) = self.busy.remove(&old) {
            self.busy.insert(new, c);
        }
        let renew = |p: &mut Party| {
            if p.tmsi == old {
                p.tmsi = new;
            }
        };
        for c in self.calls.values_mut() {
            renew(&mut c.req.caller);
            if let RequestKind::Private { target } = &mut c.req.kind {
                renew(target);
            }
            if let Some(t) = &mut c.talker {
                renew(t);
            }
        }
        for s in self.sites.values_mut() {
            for req in s.queue.requests_mut() {
                renew(&mut req.caller);
                if let RequestKind::Private { target } = &mut req.kind {
                    renew(target);
                }
            }
        }
    }

    /// The unit can take part no more (`cause`: it left, or was inhibited): it loses the
    /// floor, its calls end and its waiting requests go.
    fn unit_gone(&mut self, tmsi: Tmsi, cause: Cause, now: i64, out: &mut Vec<Action>) {
        self.talker_gone(|t| t.tmsi == tmsi, cause, now, out);
        if let Some(id) = self.busy.get(&tmsi).copied() {
            if self.calls.get(&id).is_some_and(|c| party_tmsi(c, tmsi)) {
                self.end_call(id, cause, false, now, out);
            } else {
                self.busy.remove(&tmsi);
            }
        }
        let sites: Vec<SiteId> = self.sites.keys().copied().collect();
        for site in sites {
            let Some(s) = self.sites.get_mut(&site) else {
                continue;
            };
            let removed = s.queue.remove_requests(|req| req.caller.tmsi == tmsi);
            for (req, requested_ms) in &removed {
                left_queue(out, site, req);
                if cause == Cause::UnitInhibited {
                    // Still on the air until its gateway stuns it: told, and recorded.
                    self.refuse(req, cause, *requested_ms, now, out);
                } else {
                    self.record_unserved(req, cause, *requested_ms, now, out);
                }
            }
            if !removed.is_empty() {
                self.send_positions(site, out);
            }
        }
    }

    /// Checks the invariants; for tests. Returns a description of the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held: HashMap<CallId, usize> = HashMap::new();
        for (site, s) in &self.sites {
            if s.slots.uses().next() != Some(SlotUse::Control) {
                return Err(format!("site {site}: control slot granted"));
            }
            for st in s.slots.uses() {
                if let SlotUse::Busy(c) = st {
                    *held.entry(c).or_default() += 1;
                    if !self.calls.contains_key(&c) {
                        return Err(format!("site {site}: slot held by ended call {c}"));
                    }
                }
            }
            if let Some((req, told, at)) = s.queue.first_untold() {
                return Err(format!(
                    "site {site}: request {} last told position {told}, is at {at}",
                    req.txn
                ));
            }
            let free = s.slots.free();
            if free > 0 && !s.queue.is_empty() {
                return Err(format!(
                    "site {site}: {free} free slots while {} wait",
                    s.queue.len()
                ));
            }
        }
        for c in self.calls.values() {
            for (site, (car, sl)) in &c.slots {
                let state = self.sites.get(site).and_then(|s| s.slots.state((*car, *sl)));
                if state != Some(SlotUse::Busy(c.id)) {
                    return Err(format!("call {} thinks it holds {site}/{car}/{sl}", c.id));
                }
            }
            if held.get(&c.id).copied().unwrap_or(0) != c.slots.len() {
                return Err(format!("call {} slot count mismatch", c.id));
            }
            if let RequestKind::Group { fleet, talkgroup, .. } = &c.req.kind {
                if self.by_talkgroup.get(&(*fleet, *talkgroup)) != Some(&c.id) {
                    return Err(format!(
                        "call {} on talkgroup {talkgroup} is not the talkgroup's call",
                        c.id
                    ));
                }
            }
            if self.busy.get(&c.req.caller.tmsi) != Some(&c.id) {
                return Err(format!("caller of call {} not marked busy in it", c.id));
            }
        }
        for (tmsi, id) in &self.busy {
            if !self.calls.get(id).is_some_and(|c| party_tmsi(c, *tmsi)) {
                return Err(format!(
                    "unit {tmsi} marked busy in call {id} it is not a party of"
                ));
            }
        }
        for ((_, tg), id) in &self.by_talkgroup {
            if !self.calls.contains_key(id) {
                return Err(format!("talkgroup {tg} points at ended call {id}"));
            }
        }
        Ok(())
    }
}

/// Tells that `req` left `site`'s queue.
fn left_queue(out: &mut Vec<Action>, site: SiteId, req: &CallRequest) {
    out.push(Action::Event(CallEvent::QueueLeft {
        site,
        caller: req.caller.unit,
        txn: req.txn,
    }));
}

/// Queues `msg` for `site` on transaction `txn`, with the EMERGENCY flag when it belongs
/// to an emergency call or request (`PROTOCOL.md §2.1`).
fn send(out: &mut Vec<Action>, site: SiteId, txn: u32, emergency: bool, msg: Message) {
    out.push(Action::Send(site, Frame { txn, emergency, msg }));
}

/// Whether `tmsi` is the call's caller or private target.
fn party_tmsi(c: &Call, tmsi: Tmsi) -> bool {
    c.req.caller.tmsi == tmsi || matches!(&c.req.kind, RequestKind::Private { target } if target.tmsi == tmsi)
}

fn party_site(c: &Call, site: SiteId) -> bool {
    c.req.caller.site == site || matches!(&c.req.kind, RequestKind::Private { target } if target.site == site)
}

/// The call's grant on transaction `txn`.
fn grant_frame(c: &Call, txn: u32) -> Frame {
    Frame {
        txn,
        emergency: c.req.emergency(),
        msg: grant_message(c),
    }
}

fn grant_message(c: &Call) -> Message {
    Message::ChannelGrant {
        call: c.id,
        call_type: c.req.call_type(),
        caller: c.req.caller.unit,
        target: c.req.target(),
        sites: c
            .slots
            .iter()
            .map(|(site, (carrier, slot))| SiteGrant {
                site: *site,
                carrier: *carrier,
                slot: *slot,
            })
            .collect(),
    }
}

/// The wire call id of number `n` (1, 2, …) of the shared call counter: 1..=0xFFFF_FFFF,
/// starting again at 1 after 4,294,967,295 calls (`PROTOCOL.md §4`, call id).
pub fn wire_call_id(n: u64) -> Option<CallId> {
    CallId::new((n.saturating_sub(1) % u64::from(u32::MAX)) as u32 + 1)
}

fn qpos(p: usize) -> QueuePosition {
    QueuePosition::new(p.clamp(1, usize::from(u16::MAX)) as u16).expect("clamped into range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MemberId;

    fn machine(policy: SlotPolicy) -> Trunking {
        let mut m = Trunking::new(TrunkingConfig {
            slot_policy: policy,
            emergency: EmergencyPolicy::Preempt,
            mode: TrunkingMode::Transmission,
            hang_time_ms: 0,
            quasi_hang_time_ms: 0,
            max_call_ms: 60_000,
            queue_depth: 4,
            queue_timeout_ms: None,
        });
        m.add_site(SiteId::new(1).unwrap(), 2, 6);
        m.add_call_ids(1..u64::MAX);
        m
    }

    #[test]
    fn after_end_all_every_request_is_refused_shutting_down() {
        let mut m = machine(SlotPolicy::Pack);
        m.handle(request(1), 0);
        let ended = m.end_all(Cause::ShuttingDown, 1);
        assert!(ended.iter().any(|a| matches!(
            a,
            Action::Send(
                _,
                Frame {
                    msg: Message::CallEnd {
                        cause: Cause::ShuttingDown,
                        ..
                    },
                    ..
                }
            )
        )));
        let out = m.handle(request(2), 2);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Send(
                _,
                Frame {
                    msg: Message::Deny {
                        cause: Cause::ShuttingDown,
                        ..
                    },
                    ..
                }
            )
        )));
        assert_eq!(m.active_calls(), 0);
    }

    #[test]
    fn call_ids_wrap_into_the_32_bit_space_and_skip_running_calls() {
        let wire = |n| wire_call_id(n).map(CallId::get);
        assert_eq!(wire(1), Some(1));
        assert_eq!(wire(u64::from(u32::MAX)), Some(u32::MAX));
        assert_eq!(wire(u64::from(u32::MAX) + 1), Some(1));
        let mut m = machine(SlotPolicy::Pack);
        m.call_ids.clear();
        m.add_call_ids(5..6);
        m.add_call_ids(u64::from(u32::MAX) + 5..u64::from(u32::MAX) + 7);
        let granted = carriers_granted(&mut m, 1);
        assert_eq!(granted.len(), 1);
        // Number 2^32+4 maps onto id 5, still in use: skipped for 6.
        assert_eq!(m.new_call_id().map(|c| c.get()), Some(6));
        assert_eq!(m.new_call_id(), None);
        // Out of ids: a request is refused busy, not granted.
        let out = m.handle(request(2), 0);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Send(
                _,
                Frame {
                    msg: Message::Deny {
                        cause: Cause::Busy,
                        ..
                    },
                    ..
                }
            )
        )));
    }

    fn request(n: u16) -> Input {
        let fleet = FleetId::new(1).unwrap();
        Input::Request(CallRequest {
            txn: u32::from(n),
            caller: Party {
                tmsi: Tmsi::new(u32::from(n)).unwrap(),
                unit: Unit {
                    fleet,
                    member: MemberId::new(n).unwrap(),
                },
                site: SiteId::new(1).unwrap(),
            },
            priority: 0,
            kind: RequestKind::Group {
                fleet,
                talkgroup: TalkgroupId::new(n).unwrap(),
                sites: vec![],
                emergency: false,
            },
        })
    }

    /// The talker changes of `out`, as (call, talker's member).
    fn talkers(out: &[Action]) -> Vec<(u32, Option<u16>)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Event(CallEvent::Talker { call, talker }) => {
                    Some((call.get(), talker.map(|t| t.member.get())))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_floor_changing_hands_is_an_event_and_a_press_by_the_talker_is_not() {
        let mut m = machine(SlotPolicy::Pack);
        m.cfg.mode = TrunkingMode::Message;
        m.cfg.hang_time_ms = 1_000;
        m.handle(request(1), 0);
        let call = m.calls().first().unwrap().call;
        let Input::Request(CallRequest { caller, .. }) = request(1) else {
            unreachable!()
        };
        let site = caller.site;
        let press = |txn| Input::PttPress {
            site,
            txn,
            call,
            party: caller,
        };
        // The caller holds the floor from the grant: pressing again changes nothing.
        assert_eq!(talkers(&m.handle(press(10), 1)), vec![]);
        let release = Input::PttRelease {
            site,
            txn: 11,
            call,
            tmsi: caller.tmsi,
        };
        assert_eq!(talkers(&m.handle(release, 2)), vec![(call.get(), None)]);
        assert_eq!(talkers(&m.handle(press(12), 3)), vec![(call.get(), Some(1))]);
    }

    fn carriers_granted(m: &mut Trunking, calls: u16) -> Vec<u8> {
        (1..=calls)
            .flat_map(|n| m.handle(request(n), 0))
            .filter_map(|a| match a {
                Action::Send(
                    _,
                    Frame {
                        msg: Message::ChannelGrant { sites, .. },
                        ..
                    },
                ) => Some(sites[0].carrier.get()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn least_loaded_spreads_calls_over_carriers() {
        assert_eq!(
            carriers_granted(&mut machine(SlotPolicy::LeastLoaded), 4),
            vec![0, 1, 0, 1]
        );
    }

    #[test]
    fn pack_fills_the_first_carrier_first() {
        // Carrier 0 has five traffic slots (slot 0 is the control channel).
        assert_eq!(
            carriers_granted(&mut machine(SlotPolicy::Pack), 6),
            vec![0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn the_control_slot_is_never_granted_even_when_all_else_is_busy() {
        let mut m = machine(SlotPolicy::Pack);
        let actions: Vec<Action> = (1..=12).flat_map(|n| m.handle(request(n), 0)).collect();
        let grants = actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Send(
                        _,
                        Frame {
                            msg: Message::ChannelGrant { .. },
                            ..
                        }
                    )
                )
            })
            .count();
        assert_eq!(grants, 11);
        assert_eq!(m.queue_len(SiteId::new(1).unwrap()), 1);
        m.check_invariants().unwrap();
    }
}
