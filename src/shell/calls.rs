//! The call services around the trunking state machine: checks each call request
//! against the VLR and the HLR cache (registered, enabled, permitted, affiliated,
//! target reachable), hands it to [`Trunking`], carries out its actions (frames to
//! gateways, call records), and drives its timers. Runs inside the controller.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::TrunkingSection;
use crate::core::trunking::{
    Action, CallEvent, CallRecord, CallRequest, CallView, Input, Party, QueueEntry, RequestKind, SlotView,
    Trunking, TrunkingConfig,
};
use crate::events::{EventBus, EventKind};
use crate::hlr::{HlrCache, Subscriber};
use crate::link::Links;
use crate::metrics::Metrics;
use crate::protocol::{
    CallId, CallScope, CallType, Carrier, Cause, Frame, Message, MessageType, ResourceState, SiteId, Slot,
    SlotSelector, Target, Tmsi, Unit,
};
use crate::shell::alarm::Alarm;
use crate::store::{CallRecordRow, Store};
use crate::vlr::{VlrUnit, VlrView};

/// The call services.
pub struct CallService {
    core: Mutex<Trunking>,
    hlr: Arc<HlrCache>,
    vlr: VlrView,
    links: Links,
    selected_area: Vec<SiteId>,
    /// Wakes the timer task for an earlier deadline.
    alarm: Alarm,
    /// Operator slot faults already applied to the machine.
    operator_faults: Mutex<HashSet<(SiteId, u8, u8)>>,
    records: mpsc::UnboundedSender<CallRecord>,
    events: Arc<EventBus>,
    clock: Clock,
    /// Woken when the machine runs low on call ids.
    ids_low: Notify,
    /// Set once the controller is stopping: new requests are refused "shutting down".
    stopping: AtomicBool,
    /// Records handed to the writer and not yet written.
    unwritten: AtomicUsize,
    /// At this many unwritten records new (non-emergency) requests are refused "busy".
    max_unwritten: usize,
    /// Where grants and preemptions are counted.
    metrics: Arc<Metrics>,
}

/// Call ids reserved from the database at a time; another block is fetched when fewer
/// than half a block are left, so calls never wait on the database for an id.
pub const CALL_ID_BLOCK: u64 = 65_536;

impl CallService {
    /// A service over the given registries, with the `[trunking]` settings, on
    /// `clock`; call records go to `records`, events to `events`.
    pub fn new(
        cfg: &TrunkingSection,
        hlr: Arc<HlrCache>,
        vlr: VlrView,
        links: Links,
        records: mpsc::UnboundedSender<CallRecord>,
        events: Arc<EventBus>,
        clock: Clock,
    ) -> Self {
        let selected_area = cfg.selected_area.iter().filter_map(|s| SiteId::new(*s)).collect();
        let svc = CallService {
            core: Mutex::new(Trunking::new(cfg.core())),
            hlr,
            vlr,
            links,
            selected_area,
            alarm: Alarm::default(),
            operator_faults: Mutex::new(HashSet::new()),
            records,
            events,
            clock,
            ids_low: Notify::new(),
            stopping: AtomicBool::new(false),
            unwritten: AtomicUsize::new(0),
            max_unwritten: cfg.max_unwritten_records,
            metrics: Arc::default(),
        };
        svc.sync_sites();
        svc
    }

    /// Counts grants and preemptions in `metrics` (in a [`Metrics`] of its own otherwise).
    pub fn counting_in(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Trunking> {
        // A panic while holding the lock would be a bug; keep serving with the state as is.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds sites the HLR has and the trunking machine does not know yet, and removes
    /// those the HLR no longer has (closing their links).
    pub fn sync_sites(&self) {
        {
            let mut core = self.core();
            let sites = self.hlr.sites();
            for s in &sites {
                if !core.has_site(s.id) {
                    core.add_site(s.id, s.carriers, s.slots_per_carrier);
                }
            }
            for id in core.site_ids() {
                if !sites.iter().any(|s| s.id == id) {
                    let actions = core.remove_site(id, self.clock.mono_ms());
                    self.dispatch(actions);
                    self.links.close_removed(id);
                }
            }
        }
        // Slots operators took out of service or put back since the last look.
        let wanted: HashSet<(SiteId, u8, u8)> = self.hlr.slot_faults().into_iter().collect();
        let (new, gone): (Vec<_>, Vec<_>) = {
            let applied = self.operator_faults.lock().unwrap_or_else(|e| e.into_inner());
            (
                wanted.difference(&applied).copied().collect(),
                applied.difference(&wanted).copied().collect(),
            )
        };
        for (faults, state) in [(new, ResourceState::Faulty), (gone, ResourceState::InService)] {
            for (site, carrier, slot) in faults {
                let Some(carrier) = Carrier::new(carrier) else {
                    continue;
                };
                let slot = match slot {
                    255 => SlotSelector::WholeCarrier,
                    s => match Slot::new(s) {
                        Some(s) => SlotSelector::Slot(s),
                        None => continue,
                    },
                };
                self.run(Input::SlotStatus {
                    site,
                    carrier,
                    slot,
                    state,
                });
            }
        }
        *self.operator_faults.lock().unwrap_or_else(|e| e.into_inner()) = wanted;
    }

    /// Handles a call-family frame from `site`; `None` for any other message.
    pub fn handle(&self, site: SiteId, frame: &Frame) -> Option<Vec<Frame>> {
        let txn = frame.txn;
        let request = matches!(
            frame.msg,
            Message::GroupCallReq { .. } | Message::PrivateCallReq { .. } | Message::EmergencyCallReq { .. }
        );
        let emergency = matches!(frame.msg, Message::EmergencyCallReq { .. });
        let refuse = if !request {
            None
        } else if self.stopping.load(Ordering::SeqCst) {
            Some(Cause::ShuttingDown)
        } else if !emergency && self.unwritten.load(Ordering::Relaxed) >= self.max_unwritten {
            // The database is not keeping up with the call records: no new call until
            // it does, so that no record is ever dropped (emergencies still go).
            Some(Cause::Busy)
        } else {
            None
        };
        if let Some(cause) = refuse {
            let deny = Frame::deny(txn, frame.msg.message_type(), cause);
            return Some(vec![deny.with_emergency(emergency)]);
        }
        let input = match &frame.msg {
            Message::GroupCallReq {
                tmsi,
                talkgroup,
                scope,
            } => self.group_request(site, txn, *tmsi, *talkgroup, Some(*scope)),
            Message::EmergencyCallReq { tmsi, talkgroup } => {
                self.group_request(site, txn, *tmsi, *talkgroup, None)
            }
            Message::PrivateCallReq { tmsi, target } => self.private_request(site, txn, *tmsi, *target),
            Message::CallCancel { tmsi, request_txn } => Ok(Input::Cancel {
                site,
                txn,
                tmsi: *tmsi,
                request_txn: *request_txn,
            }),
            Message::PttPress { call, tmsi } => self.caller(site, *tmsi).map(|(_, _, sub)| Input::PttPress {
                site,
                txn,
                call: *call,
                party: party(*tmsi, &sub, site),
            }),
            Message::PttRelease { call, tmsi } => Ok(Input::PttRelease {
                site,
                txn,
                call: *call,
                tmsi: *tmsi,
            }),
            Message::CallEnd { call, .. } => Ok(Input::End { site, call: *call }),
            Message::SiteStatus { carrier, slot, state } => Ok(Input::SlotStatus {
                site,
                carrier: *carrier,
                slot: *slot,
                state: *state,
            }),
            _ => return None,
        };
        let mut replies = Vec::new();
        if let Message::SiteStatus { .. } = frame.msg {
            replies.push(Frame::new(
                txn,
                Message::Ack {
                    acked: MessageType::SiteStatus,
                },
            ));
        }
        match input {
            Ok(input) => {
                self.run(input);
            }
            Err(cause) => {
                let request = frame.msg.message_type();
                // Refusals of an emergency request, or of PTT on an emergency call,
                // carry the flag (PROTOCOL.md §2.1).
                let emergency = match frame.msg {
                    Message::EmergencyCallReq { .. } => true,
                    Message::PttPress { call, .. } => self.core().is_emergency_call(call),
                    _ => false,
                };
                replies.push(Frame::deny(txn, request, cause).with_emergency(emergency));
            }
        }
        Some(replies)
    }

    /// An operator ends `call` (`CALL_END` 0x5F to its sites); `false`: no such call.
    pub fn end_by_operator(&self, call: CallId) -> bool {
        if !self.core().has_call(call) {
            return false;
        }
        self.run(Input::OperatorEnd(call));
        true
    }

    /// New trunking settings, in force for the next request.
    pub fn set_config(&self, cfg: TrunkingConfig) {
        self.core().set_config(cfg);
    }

    /// Every slot of `site` (`None`: no such site).
    pub fn slot_map(&self, site: SiteId) -> Option<Vec<SlotView>> {
        self.core().slot_map(site)
    }

    /// Every call in progress.
    pub fn calls(&self) -> Vec<CallView> {
        self.core().calls()
    }

    /// The requests waiting at `site`, in serving order.
    pub fn queue(&self, site: SiteId) -> Vec<QueueEntry> {
        self.core().queue(site)
    }

    /// Call records not written yet, and the number at which requests are refused.
    pub fn unwritten_records(&self) -> (usize, usize) {
        (self.unwritten.load(Ordering::Relaxed), self.max_unwritten)
    }

    /// The site's link went down: its calls and requests are dealt with.
    pub fn link_down(&self, site: SiteId) {
        self.run(Input::LinkDown(site));
    }

    /// A unit left (deregistered, expired, or re-registered under a new TMSI).
    pub fn unit_gone(&self, tmsi: Tmsi) {
        self.run(Input::UnitGone(tmsi));
    }

    /// An operator inhibited the unit: its calls end with "unit inhibited".
    pub fn unit_inhibited(&self, tmsi: Tmsi) {
        self.run(Input::UnitInhibited(tmsi));
    }

    /// The unit now answers to `new` (location update).
    pub fn tmsi_changed(&self, old: Tmsi, new: Tmsi) {
        self.run(Input::TmsiChanged { old, new });
    }

    /// Controller shutdown: from now on new requests are refused "shutting down"; every
    /// call ends and every waiting request is refused with that cause. Called while the
    /// links are still up, so that each gateway hears it before `LINK_CLOSE`, and again
    /// once they are closed for anything that slipped in.
    pub fn end_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut core = self.core();
        let actions = core.end_all(Cause::ShuttingDown, self.clock.mono_ms());
        self.dispatch(actions);
    }

    /// Runs the machine's timers until `stop` turns true.
    pub async fn run_timers(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let tick = |now| {
            let mut core = self.core();
            let actions = core.tick(now);
            self.dispatch(actions);
            std::future::ready(())
        };
        let alarm = &self.alarm;
        alarm
            .run(
                &self.core,
                Trunking::next_wakeup,
                || self.clock.mono_ms(),
                tick,
                stop,
            )
            .await;
    }

    /// Carries out actions: frames are queued on their site's link (callers hold the
    /// machine's lock, which keeps each link's frames in order); records are written
    /// behind.
    fn dispatch(&self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(site, frame) => {
                    if let Err(e) = self.links.send(site, frame) {
                        debug!(error = %e, "frame for a site not delivered");
                    }
                }
                Action::Event(e) => {
                    match &e {
                        CallEvent::Ended(r) => {
                            self.unwritten.fetch_add(1, Ordering::Relaxed);
                            if self.records.send(r.clone()).is_err() {
                                warn!("call record writer stopped; record dropped");
                            }
                        }
                        CallEvent::Granted { call_type, .. } => self.metrics.granted(*call_type),
                        CallEvent::Preempted { .. } => self.metrics.preempted(),
                        _ => {}
                    }
                    self.events.publish(EventKind::Call(e));
                }
            }
        }
    }

    /// The calls in progress, as journal rows (see [`write_records`]).
    fn open_call_rows(&self) -> Vec<CallRecordRow> {
        let open = self
            .core()
            .open_calls(self.clock.mono_ms(), Cause::ControllerRestart);
        open.iter().map(|r| record_row(r, &self.clock)).collect()
    }

    /// Gives the machine call ids reserved from the database.
    pub fn add_call_ids(&self, ids: std::ops::Range<u64>) {
        self.core().add_call_ids(ids);
    }

    /// Keeps the machine supplied with call ids until `stop` turns true: whenever it runs
    /// low, reserves another block from the database (retrying while it is unavailable).
    pub async fn refill_call_ids(self: Arc<Self>, store: Store, mut stop: watch::Receiver<bool>) {
        loop {
            if self.core().call_ids_left() >= CALL_ID_BLOCK / 2 {
                tokio::select! {
                    _ = self.ids_low.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            match store.reserve_call_ids(CALL_ID_BLOCK).await {
                Ok(ids) => self.add_call_ids(ids),
                Err(e) => {
                    warn!(error = %e, left = self.core().call_ids_left(), "reserving call ids failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    /// Feeds one input to the machine; wakes the timer task if the machine's next
    /// deadline is now earlier than the one it sleeps for.
    ///
    /// Its frames are queued on the sites' links while the machine is still locked, so
    /// each gateway receives the machine's output in the order it was produced.
    fn run(&self, input: Input) {
        let mut core = self.core();
        let actions = core.handle(input, self.clock.mono_ms());
        self.alarm.rearm(core.next_wakeup());
        if core.call_ids_left() < CALL_ID_BLOCK / 2 {
            self.ids_low.notify_one();
        }
        self.dispatch(actions);
    }

    /// The registered, enabled unit holding `tmsi` at `site`.
    fn caller(
        &self,
        site: SiteId,
        tmsi: Tmsi,
    ) -> Result<(crate::protocol::Imsi, VlrUnit, Arc<Subscriber>), Cause> {
        let imsi = self.vlr.imsi_of(tmsi).ok_or(Cause::NotRegistered)?;
        let unit = self
            .vlr
            .get(&imsi)
            .filter(|u| u.site == site && u.tmsi == tmsi)
            .ok_or(Cause::NotRegistered)?;
        let sub = self.hlr.subscriber(&imsi).ok_or(Cause::UnknownSubscriber)?;
        if sub.inhibited {
            return Err(Cause::UnitInhibited);
        }
        Ok((imsi, unit, sub))
    }

    /// A group call (`scope` given) or an emergency call (`scope` `None`: wide area).
    fn group_request(
        &self,
        site: SiteId,
        txn: u32,
        tmsi: Tmsi,
        talkgroup: crate::protocol::TalkgroupId,
        scope: Option<CallScope>,
    ) -> Result<Input, Cause> {
        let (_, unit, sub) = self.caller(site, tmsi)?;
        let emergency = scope.is_none();
        let request = if emergency {
            MessageType::EmergencyCallReq
        } else {
            MessageType::GroupCallReq
        };
        if !sub.permissions.allows(request) {
            return Err(Cause::ServiceNotPermitted);
        }
        if !self.hlr.talkgroup_exists(sub.unit.fleet, talkgroup) {
            return Err(Cause::InvalidTarget);
        }
        if !sub.talkgroups.contains(&talkgroup) {
            return Err(Cause::TalkgroupNotPermitted);
        }
        if !emergency && !unit.affiliation.all().any(|t| t == talkgroup) {
            return Err(Cause::NotAffiliated);
        }
        let fleet = sub.unit.fleet;
        let mut sites = match scope {
            Some(CallScope::Local) => vec![],
            Some(CallScope::SelectedArea) => self.selected_area.clone(),
            Some(CallScope::WideArea) | None => self.vlr.talkgroup_sites(fleet, talkgroup),
        };
        sites.retain(|s| *s != site && self.links.is_connected(*s));
        Ok(Input::Request(CallRequest {
            txn,
            caller: party(tmsi, &sub, site),
            priority: sub.priority,
            kind: RequestKind::Group {
                fleet,
                talkgroup,
                sites,
                emergency,
            },
        }))
    }

    fn private_request(&self, site: SiteId, txn: u32, tmsi: Tmsi, target: Unit) -> Result<Input, Cause> {
        let (_, _, sub) = self.caller(site, tmsi)?;
        if !sub.permissions.allows(MessageType::PrivateCallReq) {
            return Err(Cause::ServiceNotPermitted);
        }
        let target_imsi = self.hlr.imsi_for_unit(&target).ok_or(Cause::InvalidTarget)?;
        let target_sub = self.hlr.subscriber(&target_imsi).ok_or(Cause::InvalidTarget)?;
        if target_sub.inhibited {
            return Err(Cause::TargetUnreachable);
        }
        if !target_sub.permissions.allows(MessageType::PrivateCallReq) {
            return Err(Cause::ServiceNotPermitted);
        }
        let there = self.vlr.get(&target_imsi).ok_or(Cause::TargetUnreachable)?;
        if !self.links.is_connected(there.site) {
            return Err(Cause::TargetUnreachable);
        }
        Ok(Input::Request(CallRequest {
            txn,
            caller: party(tmsi, &sub, site),
            priority: sub.priority,
            kind: RequestKind::Private {
                target: Party {
                    tmsi: there.tmsi,
                    unit: target,
                    site: there.site,
                },
            },
        }))
    }
}

fn party(tmsi: Tmsi, sub: &Subscriber, site: SiteId) -> Party {
    Party {
        tmsi,
        unit: sub.unit,
        site,
    }
}

/// A record as stored: times on `clock`'s monotonic scale turned into Unix ms.
fn record_row(r: &CallRecord, clock: &Clock) -> CallRecordRow {
    let offset = clock.unix_of(0);
    let (target_kind, target_fleet, target_id) = match r.target {
        Target::Unit(u) => ("unit", u.fleet.get(), u.member.get()),
        Target::Talkgroup { fleet, talkgroup } => ("talkgroup", fleet.get(), talkgroup.get()),
    };
    CallRecordRow {
        call_id: r.call.map_or(0, |c| i64::from(c.get())),
        call_type: match r.call_type {
            CallType::Group => "group",
            CallType::Private => "private",
            CallType::Emergency => "emergency",
        }
        .into(),
        caller_fleet: i64::from(r.caller.fleet.get()),
        caller_member: i64::from(r.caller.member.get()),
        target_kind: target_kind.into(),
        target_fleet: i64::from(target_fleet),
        target_id: i64::from(target_id),
        sites: r
            .sites
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
        requested_at: r.requested_ms + offset,
        granted_at: r.granted_ms.map(|g| g + offset),
        ended_at: r.ended_ms + offset,
        end_cause: i64::from(r.end_cause.code()),
        preempted: r.preempted,
        emergency: r.emergency,
    }
}

/// Writes records behind, one batch per `flush` interval, until `stop` turns true (or
/// every sender is dropped); then writes what was sent before and returns. On a
/// database error the batch is kept and retried.
///
/// Each write also keeps the journal of calls in progress (`open_calls`) in step, in
/// the same transaction: a call granted since the last write gets its row, a call that
/// ended loses it as its record is written, and the journal's mark moves to now. After
/// a crash, [`Store::recover_open_calls`] turns what the journal still holds into
/// records. What a crash can lose is what one flush interval gathered.
pub async fn write_records(
    store: Store,
    health: Arc<crate::store::health::DbHealth>,
    calls: Arc<CallService>,
    mut rx: mpsc::UnboundedReceiver<CallRecord>,
    flush: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: Vec<CallRecordRow> = Vec::new();
    // Call ids with a journal row written.
    let mut journaled: HashSet<i64> = HashSet::new();
    let mut stopping = false;
    let mut failures = 0u32;
    loop {
        if !stopping {
            // Sleep through one flush interval, then take everything that arrived: a
            // record costs no wake-up of its own.
            tokio::select! {
                _ = tokio::time::sleep(flush) => {}
                _ = stop.wait_for(|s| *s) => stopping = true,
            }
        }
        // The calls in progress first, then the records: a call missing from the
        // snapshot ended before it, so its record is already in the channel.
        let open = calls.open_call_rows();
        loop {
            if pending.len() % 256 == 255 {
                tokio::task::yield_now().await; // a long batch does not hold up the links
            }
            match rx.try_recv() {
                Ok(r) => pending.push(record_row(&r, &calls.clock)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    stopping = true;
                    break;
                }
            }
        }
        let ended: HashSet<i64> = pending.iter().map(|r| r.call_id).filter(|id| *id != 0).collect();
        let still_open: HashSet<i64> = open
            .iter()
            .map(|r| r.call_id)
            .filter(|id| !ended.contains(id))
            .collect();
        let opened: Vec<CallRecordRow> = open
            .into_iter()
            .filter(|r| still_open.contains(&r.call_id) && !journaled.contains(&r.call_id))
            .collect();
        let closed: Vec<i64> = journaled.difference(&still_open).copied().collect();
        let written = pending.len();
        let result = store
            .write_call_journal(&pending, &opened, &closed, Some(calls.clock.unix_ms()))
            .await;
        match health.report("writing call records", result) {
            Some(()) => {
                pending.clear();
                journaled = still_open;
                failures = 0;
                calls.unwritten.fetch_sub(written, Ordering::Relaxed);
            }
            None => {
                // Kept and retried; the outage is logged once by `health`.
                failures += 1;
                if stopping && failures >= 50 {
                    tracing::error!(
                        records = pending.len(),
                        "call records could not be written at shutdown"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if stopping {
            return;
        }
    }
}
