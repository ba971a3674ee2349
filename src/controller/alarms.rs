//! The alarm keeper: what needs an operator's attention, as alarms that stay until an
//! operator has seen them, through a restart of the controller too.
//!
//! # Kinds, subjects and conditions
//!
//! | kind | subject | raised when | its condition is gone when |
//! |------|---------|-------------|----------------------------|
//! | `site_link_lost` | `site:<id>` | its gateway's link goes down; a site that has not linked since start (or since it was added) within `alarms.link_grace_ms` | its gateway links (or the site is removed) |
//! | `slot_out_of_service` | `slot:<site>/<carrier>/<slot>` | a traffic slot goes out of service (an operator's or a fault; a whole carrier is each of its slots) | it is back in service |
//! | `queue_full` | `site:<id>` | a request finds the site's busy queue at its cap | the queue is below its cap |
//! | `emergency` | `unit:<imsi>` | the unit asks for an emergency call (granted, queued, or even refused) | it has no emergency call in progress or waiting |
//! | `clone_suspected` | `unit:<imsi>` | the registrar suspects a clone of the unit | at once: a moment, not a lasting condition |
//! | `database_unavailable` | `database` | the database fails an operation | it answers again |
//! | `records_backlog` | `records` | half of `trunking.max_unwritten_records` call records wait to be written | fewer than a quarter wait |
//! | `takeover` | `controller` | this node of an HA group became active after another (an epoch above 1) | at once: a moment |
//!
//! # Life cycle
//!
//! An alarm is raised; the controller clears it once its condition is gone, and an
//! operator acknowledges it, in either order. It needs attention until it is both; then
//! it is finished, and history. Raised again while cleared but not yet acknowledged, it
//! is reopened (same id, `occurrences` + 1), so that a flapping link is one alarm; raised
//! again while still open, nothing changes. Nobody clears an alarm by hand: every
//! condition is one the controller observes, so it clears it itself, at the moment the
//! condition goes (an operator who has seen it acknowledges it, which is what finishes
//! it).
//!
//! # How it runs
//!
//! In memory, off the radio path: nothing the radio-facing code does waits for it. The
//! keeper listens to the event stream and raises at once what an event tells of (a link
//! going down, an emergency asked for, a full queue, a slot out of service, a clone:
//! edges that a look at the state could miss), and looks at the conditions in memory
//! after such events, every [`RECONCILE_EVERY`] and at every read of the alarms, raising
//! what is wrong and clearing what is no longer. Every change is published at once as an
//! [`EventKind::Alarm`] and written to the database behind, by one task that retries
//! until the database takes it; ids come from blocks reserved from the database, so
//! alarms are raised, numbered and shown while the database is away (that one is an
//! alarm too), and written once it is back. An operator's acknowledgement is the
//! exception: it is written at once with its audit entry, and refused (`503`) while the
//! database is away.
//!
//! # Restart
//!
//! At start the alarms that still need attention are loaded from the database, and the
//! first look clears those whose condition is gone: calls and busy queues do not survive
//! a restart, a slot an operator took out of service does. A site that had lost its link
//! keeps its alarm open until its gateway links again; a site that had its link raises
//! none until `alarms.link_grace_ms` has passed without its gateway linking. A controller
//! that stops raises and clears nothing more from the moment it is told to stop: links
//! closing and calls ending at shutdown are not conditions to alarm on.
//!
//! One keeper per database is assumed (the active controller of an active-standby pair):
//! two controllers running on one database each keep the alarms of what they see, and
//! the second to raise an open alarm of the same kind and subject is not written.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::core::slots::SlotUse;
use crate::core::trunking::CallEvent;
use crate::events::{EventBus, EventKind};
use crate::hlr::HlrCache;
use crate::protocol::{CallId, CallType, FleetId, Imsi, SiteId, Target, Unit};
use crate::store::health::DbHealth;
use crate::store::{AlarmRow, Store, StoreError};

use super::node::Node;
use super::stopped;

/// How often the keeper looks at the conditions when no event made it look.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Alarm ids reserved from the database at a time; another block is reserved when
/// fewer than half are left.
const ID_BLOCK: u64 = 1024;
/// How long the writer waits before trying the database again.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// Attempts to write what is left when the controller stops.
const FINAL_ATTEMPTS: u32 = 5;

/// What an alarm is about (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmKind {
    /// A site's gateway is not linked.
    SiteLinkLost,
    /// A traffic slot is out of service.
    SlotOutOfService,
    /// A site's busy queue is at its cap: new requests there are refused.
    QueueFull,
    /// A unit asked for an emergency call.
    Emergency,
    /// The registrar suspects a clone of a unit.
    CloneSuspected,
    /// The database is not answering.
    DatabaseUnavailable,
    /// Call records are not written as fast as calls end; at the cap, new requests are
    /// refused "busy".
    RecordsBacklog,
    /// An HA node took over as the active controller.
    Takeover,
}

impl AlarmKind {
    /// Every kind.
    pub const ALL: [AlarmKind; 8] = [
        AlarmKind::SiteLinkLost,
        AlarmKind::SlotOutOfService,
        AlarmKind::QueueFull,
        AlarmKind::Emergency,
        AlarmKind::CloneSuspected,
        AlarmKind::DatabaseUnavailable,
        AlarmKind::RecordsBacklog,
        AlarmKind::Takeover,
    ];

    /// As the API and the database name it, e.g. `site_link_lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::SiteLinkLost => "site_link_lost",
            AlarmKind::SlotOutOfService => "slot_out_of_service",
            AlarmKind::QueueFull => "queue_full",
            AlarmKind::Emergency => "emergency",
            AlarmKind::CloneSuspected => "clone_suspected",
            AlarmKind::DatabaseUnavailable => "database_unavailable",
            AlarmKind::RecordsBacklog => "records_backlog",
            AlarmKind::Takeover => "takeover",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Raised for a moment, not a lasting condition: cleared as it is raised.
    fn momentary(self) -> bool {
        matches!(self, AlarmKind::CloneSuspected | AlarmKind::Takeover)
    }
}

/// What an alarm is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `site:<id>`.
    Site(SiteId),
    /// `slot:<site>/<carrier>/<slot>`.
    Slot {
        /// The site.
        site: SiteId,
        /// The carrier.
        carrier: u8,
        /// The slot.
        slot: u8,
    },
    /// `unit:<imsi>`.
    Unit(Imsi),
    /// `database`.
    Database,
    /// `records`: the call records written behind.
    Records,
    /// `controller`: the controller itself (its HA role).
    Controller,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Site(s) => write!(f, "site:{s}"),
            Subject::Slot { site, carrier, slot } => write!(f, "slot:{site}/{carrier}/{slot}"),
            Subject::Unit(imsi) => write!(f, "unit:{imsi}"),
            Subject::Database => f.write_str("database"),
            Subject::Records => f.write_str("records"),
            Subject::Controller => f.write_str("controller"),
        }
    }
}

impl Subject {
    /// The subject written `s` (as [`Subject`]'s `Display` writes it).
    pub fn parse(s: &str) -> Option<Subject> {
        let site = |v: &str| v.parse::<u16>().ok().and_then(SiteId::new);
        match s.split_once(':') {
            None if s == "database" => Some(Subject::Database),
            None if s == "records" => Some(Subject::Records),
            None if s == "controller" => Some(Subject::Controller),
            Some(("site", v)) => site(v).map(Subject::Site),
            Some(("slot", v)) => {
                let mut parts = v.split('/');
                let (s, c, sl) = (parts.next()?, parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                Some(Subject::Slot {
                    site: site(s)?,
                    carrier: c.parse().ok()?,
                    slot: sl.parse().ok()?,
                })
            }
            Some(("unit", v)) => Imsi::parse(v).ok().map(Subject::Unit),
            _ => None,
        }
    }
}

/// Where an alarm stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmState {
    /// Its condition lasts; nobody has acknowledged it.
    Raised,
    /// Its condition lasts; an operator has acknowledged it.
    Acknowledged,
    /// Its condition is gone; nobody has acknowledged it yet: it still needs attention.
    Cleared,
    /// Acknowledged and cleared: history.
    Finished,
}

impl AlarmState {
    /// `raised`, `acknowledged`, `cleared` or `finished`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Raised => "raised",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Cleared => "cleared",
            AlarmState::Finished => "finished",
        }
    }
}

/// An alarm. Times are Unix ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    /// Unique among every controller on the database.
    pub id: u64,
    /// What it is about.
    pub kind: AlarmKind,
    /// Of what.
    pub subject: Subject,
    /// The fleet of a unit's alarm (only operators of that fleet see it); `None`:
    /// infrastructure, every operator's.
    pub fleet: Option<FleetId>,
    /// What the controller saw, for people.
    pub detail: String,
    /// When first raised.
    pub raised_at_ms: i64,
    /// When last raised (reopened).
    pub last_raised_at_ms: i64,
    /// How many times it was raised (reopened while cleared and unacknowledged).
    pub occurrences: u32,
    /// When an operator acknowledged it.
    pub acknowledged_at_ms: Option<i64>,
    /// Who: `api:<operator>@<address>`.
    pub acknowledged_by: Option<String>,
    /// When its condition was gone.
    pub cleared_at_ms: Option<i64>,
}

impl Alarm {
    /// Where it stands.
    pub fn state(&self) -> AlarmState {
        match (self.acknowledged_at_ms.is_some(), self.cleared_at_ms.is_some()) {
            (false, false) => AlarmState::Raised,
            (true, false) => AlarmState::Acknowledged,
            (false, true) => AlarmState::Cleared,
            (true, true) => AlarmState::Finished,
        }
    }

    /// Whether its condition lasts (not cleared).
    pub fn is_open(&self) -> bool {
        self.cleared_at_ms.is_none()
    }

    fn key(&self) -> (AlarmKind, Subject) {
        (self.kind, self.subject)
    }

    /// As the database holds it.
    fn row(&self) -> AlarmRow {
        AlarmRow {
            id: self.id as i64,
            kind: self.kind.as_str().to_string(),
            subject: self.subject.to_string(),
            fleet: self.fleet.map(|f| i64::from(f.get())),
            detail: self.detail.clone(),
            raised_at: self.raised_at_ms,
            last_raised_at: self.last_raised_at_ms,
            occurrences: i64::from(self.occurrences),
            acknowledged_at: self.acknowledged_at_ms,
            acknowledged_by: self.acknowledged_by.clone(),
            cleared_at: self.cleared_at_ms,
        }
    }

    /// From the database; `Err` names what it does not understand.
    pub(super) fn from_row(r: AlarmRow) -> Result<Alarm, String> {
        let bad = |what: &str| format!("alarm {}: {what}", r.id);
        Ok(Alarm {
            id: u64::try_from(r.id).map_err(|_| bad("id"))?,
            kind: AlarmKind::parse(&r.kind).ok_or_else(|| bad("kind"))?,
            subject: Subject::parse(&r.subject).ok_or_else(|| bad("subject"))?,
            fleet: match r.fleet {
                None => None,
                Some(f) => Some(
                    u16::try_from(f)
                        .ok()
                        .and_then(FleetId::new)
                        .ok_or_else(|| bad("fleet"))?,
                ),
            },
            detail: r.detail,
            raised_at_ms: r.raised_at,
            last_raised_at_ms: r.last_raised_at,
            occurrences: u32::try_from(r.occurrences).map_err(|_| bad("occurrences"))?,
            acknowledged_at_ms: r.acknowledged_at,
            acknowledged_by: r.acknowledged_by,
            cleared_at_ms: r.cleared_at,
        })
    }
}

/// What happened to an alarm (told as [`EventKind::Alarm`] with the alarm as it is now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmChange {
    /// Raised, or raised again (reopened).
    Raised,
    /// An operator acknowledged it.
    Acknowledged,
    /// Its condition is gone.
    Cleared,
}

impl AlarmChange {
    /// `raised`, `acknowledged` or `cleared`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmChange::Raised => "raised",
            AlarmChange::Acknowledged => "acknowledged",
            AlarmChange::Cleared => "cleared",
        }
    }
}

/// Why an alarm could not be read or acknowledged. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// No such alarm.
    #[error("{0}")]
    NotFound(String),
    /// It was acknowledged already (the message names by whom).
    #[error("{0}")]
    AlreadyAcknowledged(String),
    /// The database could not be read or written; try again.
    #[error("database unavailable: {0}")]
    Unavailable(StoreError),
}

/// Which alarms [`super::ControllerHandle::alarms`] lists: newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmQuery {
    /// Finished ones too (from the database); else only those that need attention.
    pub finished: bool,
    /// Only ids below this one (the last of the previous page).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: usize,
    /// Infrastructure alarms and the units' alarms of these fleets.
    pub fleets: crate::auth::Fleets,
}

/// A condition to raise an alarm for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Raise {
    kind: AlarmKind,
    subject: Subject,
    fleet: Option<FleetId>,
    detail: String,
}

impl Raise {
    fn of(kind: AlarmKind, subject: Subject, detail: String) -> Raise {
        Raise {
            kind,
            subject,
            fleet: None,
            detail,
        }
    }
}

/// The conditions in memory that alarms are kept from, read at one moment.
#[derive(Clone, Debug, Default)]
pub(super) struct Conditions {
    /// Every provisioned site and whether its gateway is linked.
    pub(super) sites: Vec<(SiteId, bool)>,
    /// Traffic slots out of service: (site, carrier, slot).
    pub(super) slots_out: Vec<(SiteId, u8, u8)>,
    /// Sites whose busy queue is at its cap, with the cap.
    pub(super) full_queues: Vec<(SiteId, usize)>,
    /// Units with an emergency call in progress or waiting.
    pub(super) emergencies: Vec<Raise>,
    /// Operations failed while the database is unavailable.
    pub(super) db_failures: Option<u64>,
    /// Call records waiting to be written, and the cap.
    pub(super) records: (usize, usize),
}

/// A provisioned site as the keeper has seen it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// When the keeper first saw it, monotonic ms.
    since_ms: i64,
    /// Whether its gateway has linked since.
    linked: bool,
}

/// The alarms that need attention, and what is still to be written.
#[derive(Default)]
struct Book {
    /// Every alarm not finished, by id.
    unfinished: BTreeMap<u64, Alarm>,
    /// The unfinished alarm of each kind and subject.
    latest: HashMap<(AlarmKind, Subject), u64>,
    /// Alarms as they are now whose change is not written yet.
    dirty: BTreeMap<u64, Alarm>,
    /// Ids reserved and not used yet.
    ids: VecDeque<Range<u64>>,
    sites: HashMap<SiteId, Seen>,
}

type Changes = Vec<(AlarmChange, Alarm)>;

impl Book {
    fn new(alarms: Vec<Alarm>, ids: Range<u64>) -> Book {
        let mut book = Book::default();
        book.ids.push_back(ids);
        for a in alarms {
            book.latest.insert(a.key(), a.id);
            book.unfinished.insert(a.id, a);
        }
        book
    }

    fn ids_left(&self) -> u64 {
        self.ids.iter().map(|r| r.end - r.start).sum()
    }

    fn next_id(&mut self) -> Option<u64> {
        loop {
            let range = self.ids.front_mut()?;
            if let Some(id) = range.next() {
                return Some(id);
            }
            self.ids.pop_front();
        }
    }

    fn is_open(&self, kind: AlarmKind, subject: Subject) -> bool {
        self.latest
            .get(&(kind, subject))
            .and_then(|id| self.unfinished.get(id))
            .is_some_and(Alarm::is_open)
    }

    /// Raises `r` at `now` (Unix ms): a new alarm, the reopened one if cleared and not
    /// acknowledged, or nothing if one is open.
    fn raise(&mut self, r: Raise, now: i64) -> Option<(AlarmChange, Alarm)> {
        let cleared = r.kind.momentary().then_some(now);
        let latest = self.latest.get(&(r.kind, r.subject)).copied();
        let alarm = match latest.and_then(|id| self.unfinished.get_mut(&id)) {
            Some(a) if a.is_open() => return None,
            // Cleared and not acknowledged (a finished alarm is not kept here).
            Some(a) => {
                a.cleared_at_ms = cleared;
                a.occurrences = a.occurrences.saturating_add(1);
                a.last_raised_at_ms = now;
                a.detail = r.detail;
                a.clone()
            }
            None => {
                let Some(id) = self.next_id() else {
                    error!(kind = r.kind.as_str(), subject = %r.subject, "no alarm id left (the database is away): alarm not raised");
                    return None;
                };
                let a = Alarm {
                    id,
                    kind: r.kind,
                    subject: r.subject,
                    fleet: r.fleet,
                    detail: r.detail,
                    raised_at_ms: now,
                    last_raised_at_ms: now,
                    occurrences: 1,
                    acknowledged_at_ms: None,
                    acknowledged_by: None,
                    cleared_at_ms: cleared,
                };
                self.latest.insert(a.key(), id);
                self.unfinished.insert(id, a.clone());
                a
            }
        };
        self.dirty.insert(alarm.id, alarm.clone());
        Some((AlarmChange::Raised, alarm))
    }

    /// Clears open alarm `id` at `now`.
    fn clear(&mut self, id: u64, now: i64) -> Option<(AlarmChange, Alarm)> {
        let a = self.unfinished.get_mut(&id).filter(|a| a.is_open())?;
        a.cleared_at_ms = Some(now);
        let a = a.clone();
        self.settle(&a);
        Some((AlarmChange::Cleared, a))
    }

    /// Notes that `by` acknowledged alarm `id` at `at` (written already).
    fn acknowledged(&mut self, id: u64, by: &str, at: i64) -> Option<(AlarmChange, Alarm)> {
        let a = self
            .unfinished
            .get_mut(&id)
            .filter(|a| a.acknowledged_at_ms.is_none())?;
        a.acknowledged_at_ms = Some(at);
        a.acknowledged_by = Some(by.to_string());
        let a = a.clone();
        self.settle(&a);
        Some((AlarmChange::Acknowledged, a))
    }

    /// Marks `a` to be written, and forgets it once it is finished.
    fn settle(&mut self, a: &Alarm) {
        self.dirty.insert(a.id, a.clone());
        if a.state() == AlarmState::Finished {
            self.unfinished.remove(&a.id);
            if self.latest.get(&a.key()) == Some(&a.id) {
                self.latest.remove(&a.key());
            }
        }
    }

    /// Raises every condition of `present` and clears every open alarm (but momentary
    /// ones) whose condition is not in it.
    fn reconcile(&mut self, present: Vec<Raise>, now: i64) -> Changes {
        let keys: HashSet<(AlarmKind, Subject)> = present.iter().map(|r| (r.kind, r.subject)).collect();
        let mut changes: Changes = present.into_iter().filter_map(|r| self.raise(r, now)).collect();
        let gone: Vec<u64> = self
            .unfinished
            .values()
            .filter(|a| a.is_open() && !a.kind.momentary() && !keys.contains(&a.key()))
            .map(|a| a.id)
            .collect();
        changes.extend(gone.into_iter().filter_map(|id| self.clear(id, now)));
        changes
    }

    /// Notes that `site`'s gateway has linked (its link may be down again already).
    fn linked(&mut self, site: SiteId, mono_now: i64) {
        self.sites
            .entry(site)
            .or_insert(Seen {
                since_ms: mono_now,
                linked: true,
            })
            .linked = true;
    }

    /// The conditions of `c` that are wrong at `mono_now`, an open alarm's condition
    /// lasting as long as it is not quite over (a site not yet linked again, records
    /// still above a quarter of the cap).
    fn present(&mut self, c: Conditions, mono_now: i64, grace_ms: i64) -> Vec<Raise> {
        let mut out = Vec::new();
        let provisioned: HashSet<SiteId> = c.sites.iter().map(|(s, _)| *s).collect();
        self.sites.retain(|s, _| provisioned.contains(s));
        for (site, connected) in c.sites {
            let subject = Subject::Site(site);
            let open = self.is_open(AlarmKind::SiteLinkLost, subject);
            let seen = self.sites.entry(site).or_insert(Seen {
                since_ms: mono_now,
                linked: false,
            });
            if connected {
                seen.linked = true;
            } else if seen.linked || open || mono_now - seen.since_ms >= grace_ms {
                let detail = format!("site {site}'s gateway is not linked");
                out.push(Raise::of(AlarmKind::SiteLinkLost, subject, detail));
            }
        }
        for (site, carrier, slot) in c.slots_out {
            let detail = format!("site {site} carrier {carrier} slot {slot} is out of service");
            let subject = Subject::Slot { site, carrier, slot };
            out.push(Raise::of(AlarmKind::SlotOutOfService, subject, detail));
        }
        for (site, cap) in c.full_queues {
            let detail = format!("site {site}'s busy queue is at its cap ({cap})");
            out.push(Raise::of(AlarmKind::QueueFull, Subject::Site(site), detail));
        }
        out.extend(c.emergencies);
        if let Some(failed) = c.db_failures {
            let detail = format!("the database is not answering ({failed} operations failed)");
            out.push(Raise::of(
                AlarmKind::DatabaseUnavailable,
                Subject::Database,
                detail,
            ));
        }
        let (unwritten, cap) = c.records;
        let open = self.is_open(AlarmKind::RecordsBacklog, Subject::Records);
        if unwritten > 0 && (unwritten * 2 >= cap || (open && unwritten * 4 >= cap)) {
            let detail = format!("{unwritten} call records wait to be written (cap {cap})");
            out.push(Raise::of(AlarmKind::RecordsBacklog, Subject::Records, detail));
        }
        out
    }
}

/// `fleet/member`.
fn unit_text(u: &Unit) -> String {
    format!("{}/{}", u.fleet, u.member)
}

/// `unit fleet/member` or `talkgroup fleet/talkgroup`.
fn target_text(t: &Target) -> String {
    match t {
        Target::Unit(u) => format!("unit {}", unit_text(u)),
        Target::Talkgroup { fleet, talkgroup } => format!("talkgroup {fleet}/{talkgroup}"),
    }
}

/// An emergency call's alarm detail.
fn emergency_call(call: CallId, caller: &Unit, target: &Target) -> String {
    format!(
        "emergency call {call} from {} to {}",
        unit_text(caller),
        target_text(target)
    )
}

/// A waiting emergency request's alarm detail.
fn emergency_request(caller: &Unit, site: SiteId) -> String {
    format!(
        "emergency request from {} waits at site {site}",
        unit_text(caller)
    )
}

/// The alarms of a running controller (see the module's documentation).
pub(super) struct AlarmKeeper {
    book: Mutex<Book>,
    events: Arc<EventBus>,
    hlr: Arc<HlrCache>,
    clock: Clock,
    grace_ms: i64,
    /// The controller's stop signal: once set, nothing more is raised or cleared.
    stop: watch::Receiver<bool>,
    /// Wakes the writer.
    wake: Notify,
}

impl AlarmKeeper {
    /// Loads the alarms that need attention from `store` and reserves a first block of
    /// ids.
    pub(super) async fn load(
        store: &Store,
        events: Arc<EventBus>,
        hlr: Arc<HlrCache>,
        clock: Clock,
        link_grace_ms: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<AlarmKeeper, StoreError> {
        let mut alarms = Vec::new();
        for row in store.unfinished_alarms().await? {
            match Alarm::from_row(row) {
                Ok(a) => alarms.push(a),
                Err(e) => warn!(error = %e, "alarm in the database not understood; left there"),
            }
        }
        if !alarms.is_empty() {
            info!(alarms = alarms.len(), "alarms that need attention loaded");
        }
        let ids = store.reserve_alarm_ids(ID_BLOCK).await?;
        Ok(AlarmKeeper {
            book: Mutex::new(Book::new(alarms, ids)),
            events,
            hlr,
            clock,
            grace_ms: i64::try_from(link_grace_ms).unwrap_or(i64::MAX),
            stop,
            wake: Notify::new(),
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Publishes `changes` (called with the book locked, so that events follow the
    /// changes' order) and wakes the writer.
    fn publish(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        for (change, alarm) in changes {
            self.events.publish(EventKind::Alarm { change, alarm });
        }
        self.wake.notify_one();
    }

    /// Looks at the conditions `read` returns (read with the book locked, so that two
    /// looks never apply out of order) and raises and clears accordingly.
    pub(super) fn reconcile(&self, read: impl FnOnce() -> Conditions) {
        if self.stopping() {
            return;
        }
        let mut book = self.book();
        let present = book.present(read(), self.clock.mono_ms(), self.grace_ms);
        let changes = book.reconcile(present, self.clock.unix_ms());
        self.publish(changes);
    }

    /// This node became the active node of an HA group at `epoch` (above 1: after
    /// another node).
    pub(super) fn took_over(&self, node: &str, epoch: i64) {
        if epoch > 1 {
            let detail = format!("node {node} took over as the active controller (epoch {epoch})");
            self.raise(Raise::of(AlarmKind::Takeover, Subject::Controller, detail));
        }
    }

    fn raise(&self, r: Raise) {
        if self.stopping() {
            return;
        }
        let mut book = self.book();
        let changes = book.raise(r, self.clock.unix_ms()).into_iter().collect();
        self.publish(changes);
    }

    /// A unit's alarm of `kind`, by its dispatch address.
    fn unit_raise(&self, kind: AlarmKind, unit: &Unit, detail: String) -> Option<Raise> {
        let imsi = self.hlr.imsi_for_unit(unit)?;
        Some(Raise {
            kind,
            subject: Subject::Unit(imsi),
            fleet: Some(unit.fleet),
            detail,
        })
    }

    /// Raises at once what an event tells of; whether the conditions need a look after
    /// it. The keeper hands it only the events [`heeded`] picks out: keep the two in step.
    fn heard(&self, kind: &EventKind) -> bool {
        let raise = match kind {
            EventKind::LinkUp { site } => {
                self.book().linked(*site, self.clock.mono_ms());
                None
            }
            EventKind::LinkDown { site } => {
                self.book().linked(*site, self.clock.mono_ms());
                // The link of a site removed from the HLR is closed, not lost.
                self.hlr.site(*site).map(|_| {
                    let detail = format!("site {site}'s gateway link went down");
                    Raise::of(AlarmKind::SiteLinkLost, Subject::Site(*site), detail)
                })
            }
            EventKind::CloneSuspected { imsi, detail } => Some(Raise {
                kind: AlarmKind::CloneSuspected,
                subject: Subject::Unit(*imsi),
                fleet: self.hlr.subscriber(imsi).map(|s| s.unit.fleet),
                detail: detail.clone(),
            }),
            EventKind::Call(CallEvent::Emergency { site, caller, target }) => {
                let detail = format!(
                    "emergency call asked for by {} to {} at site {site}",
                    unit_text(caller),
                    target_text(target)
                );
                self.unit_raise(AlarmKind::Emergency, caller, detail)
            }
            EventKind::Call(CallEvent::Granted {
                call,
                call_type: CallType::Emergency,
                caller,
                target,
                ..
            }) => {
                let detail = emergency_call(*call, caller, target);
                self.unit_raise(AlarmKind::Emergency, caller, detail)
            }
            EventKind::Call(CallEvent::Queued {
                site,
                caller,
                emergency: true,
                ..
            }) => {
                let detail = emergency_request(caller, *site);
                self.unit_raise(AlarmKind::Emergency, caller, detail)
            }
            EventKind::Call(CallEvent::QueueFull { site }) => {
                let detail = format!("a request found site {site}'s busy queue at its cap");
                Some(Raise::of(AlarmKind::QueueFull, Subject::Site(*site), detail))
            }
            EventKind::Call(CallEvent::SlotChanged {
                site,
                carrier,
                slot,
                in_service,
            }) => (!in_service).then(|| {
                let (carrier, slot) = (carrier.get(), slot.get());
                let detail = format!("site {site} carrier {carrier} slot {slot} went out of service");
                let subject = Subject::Slot {
                    site: *site,
                    carrier,
                    slot,
                };
                Raise::of(AlarmKind::SlotOutOfService, subject, detail)
            }),
            EventKind::Call(CallEvent::QueueLeft { .. }) => None,
            EventKind::Call(CallEvent::Ended(r)) if r.emergency => None,
            _ => return false,
        };
        if let Some(r) = raise {
            self.raise(r);
        }
        true
    }

    /// Every alarm that needs attention, by id.
    pub(super) fn unfinished(&self) -> Vec<Alarm> {
        self.book().unfinished.values().cloned().collect()
    }

    /// Alarm `id` if this controller holds it (needing attention, or finished and not
    /// written yet).
    pub(super) fn get(&self, id: u64) -> Option<Alarm> {
        let book = self.book();
        book.unfinished.get(&id).or_else(|| book.dirty.get(&id)).cloned()
    }

    /// What this controller holds that the database may not show yet: every alarm that
    /// needs attention and every change not written yet, by id.
    pub(super) fn pending(&self) -> BTreeMap<u64, Alarm> {
        let book = self.book();
        let mut all = book.dirty.clone();
        all.extend(book.unfinished.iter().map(|(id, a)| (*id, a.clone())));
        all
    }

    /// Acknowledges alarm `id` for `actor`: written at once with its audit entry, then
    /// told.
    pub(super) async fn acknowledge(&self, store: &Store, actor: &str, id: u64) -> Result<Alarm, AlarmError> {
        let alarm = match self.get(id) {
            Some(a) => a,
            None => match store.alarm(i64::try_from(id).unwrap_or(-1)).await {
                Ok(Some(row)) => Alarm::from_row(row).map_err(AlarmError::NotFound)?,
                Ok(None) => return Err(AlarmError::NotFound(format!("alarm {id} does not exist"))),
                Err(e) => return Err(AlarmError::Unavailable(e)),
            },
        };
        if let Some(by) = &alarm.acknowledged_by {
            return Err(AlarmError::AlreadyAcknowledged(format!(
                "alarm {id} was already acknowledged by {by}"
            )));
        }
        let at = self.clock.unix_ms();
        match store.acknowledge_alarm(actor, &alarm.row(), at).await {
            Ok(()) => {}
            Err(StoreError::Conflict(m)) => return Err(AlarmError::AlreadyAcknowledged(m)),
            Err(StoreError::NotFound(m)) => return Err(AlarmError::NotFound(m)),
            Err(e) => return Err(AlarmError::Unavailable(e)),
        }
        let mut book = self.book();
        let change = book.acknowledged(id, actor, at).unwrap_or_else(|| {
            // Not this controller's: acknowledged in the database only.
            let mut a = alarm;
            a.acknowledged_at_ms = Some(at);
            a.acknowledged_by = Some(actor.to_string());
            (AlarmChange::Acknowledged, a)
        });
        let acknowledged = change.1.clone();
        self.publish(vec![change]);
        Ok(acknowledged)
    }

    /// Writes the changes behind, as they come, until the controller stops; then what
    /// is left.
    pub(super) async fn write_behind(self: Arc<Self>, store: Store, health: Arc<DbHealth>) {
        let mut stop = self.stop.clone();
        loop {
            let written = self.write(&store, &health).await;
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = self.wake.notified(), if written => {}
                _ = tokio::time::sleep(WRITE_RETRY), if !written => {}
                _ = stopped(&mut stop) => {}
            }
        }
        for _ in 0..FINAL_ATTEMPTS {
            if self.write(&store, &health).await {
                return;
            }
            tokio::time::sleep(WRITE_RETRY).await;
        }
        let unwritten = self.book().dirty.len();
        error!(
            alarms = unwritten,
            "alarm changes could not be written before stopping"
        );
    }

    /// Reserves ids when few are left, and writes every change not written yet; whether
    /// all went well.
    async fn write(&self, store: &Store, health: &DbHealth) -> bool {
        if self.book().ids_left() < ID_BLOCK / 2 {
            match health.report("reserving alarm ids", store.reserve_alarm_ids(ID_BLOCK).await) {
                Some(ids) => self.book().ids.push_back(ids),
                None => return false,
            }
        }
        let batch: Vec<Alarm> = self.book().dirty.values().cloned().collect();
        if batch.is_empty() {
            return true;
        }
        let rows: Vec<AlarmRow> = batch.iter().map(Alarm::row).collect();
        let Some(refused) = health.report("writing alarms", store.save_alarms(&rows).await) else {
            return false;
        };
        for id in refused {
            warn!(id, "alarm not written: the database holds another open alarm of its kind and subject (another controller's)");
        }
        let mut book = self.book();
        for a in batch {
            // Unless it changed again meanwhile.
            if book.dirty.get(&a.id) == Some(&a) {
                book.dirty.remove(&a.id);
            }
        }
        true
    }
}

impl Node {
    /// The conditions alarms are kept from, read from memory now.
    fn alarm_conditions(&self) -> Conditions {
        let mut sites: Vec<SiteId> = self.hlr.sites().into_iter().map(|s| s.id).collect();
        sites.sort();
        let cap = self.config().trunking.queue_depth;
        let mut c = Conditions {
            db_failures: self.health.outage(),
            records: self.calls.unwritten_records(),
            ..Conditions::default()
        };
        for site in sites {
            c.sites.push((site, self.links.is_connected(site)));
            for s in self.calls.slot_map(site).unwrap_or_default() {
                if s.state == SlotUse::OutOfService {
                    c.slots_out.push((site, s.carrier, s.slot));
                }
            }
            let queue = self.calls.queue(site);
            if queue.len() >= cap {
                c.full_queues.push((site, cap));
            }
            for e in queue.iter().filter(|e| e.call_type == CallType::Emergency) {
                let detail = emergency_request(&e.caller, site);
                c.emergencies
                    .extend(self.alarms.unit_raise(AlarmKind::Emergency, &e.caller, detail));
            }
        }
        for call in self.calls.calls() {
            if call.call_type == CallType::Emergency {
                let detail = emergency_call(call.call, &call.caller, &call.target);
                c.emergencies
                    .extend(self.alarms.unit_raise(AlarmKind::Emergency, &call.caller, detail));
            }
        }
        c
    }

    /// Brings the alarms up to the conditions now.
    pub(super) fn reconcile_alarms(&self) {
        self.alarms.reconcile(|| self.alarm_conditions());
    }
}

/// Keeps the alarms of `node` until `stop`: a look at start, then what the events tell
/// (with a look after those that may change a condition), and a look every
/// [`RECONCILE_EVERY`]. The events it hears are picked out as they are published
/// ([`heeded`]), so that the keeper is not woken for the others (most of them).
pub(super) async fn keep(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    node.events.observe(move |kind| {
        if heeded(kind) {
            let _ = tx.send(kind.clone());
        }
    });
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut look = false;
        tokio::select! {
            _ = tick.tick() => look = true,
            Some(kind) = heard.recv() => {
                // Everything ready, then one look.
                look |= node.alarms.heard(&kind);
                while let Ok(kind) = heard.try_recv() {
                    look |= node.alarms.heard(&kind);
                }
            }
            _ = stopped(&mut stop) => return,
        }
        if look {
            node.reconcile_alarms();
        }
    }
}

/// Whether [`AlarmKeeper::heard`] acts on events of `kind` (kept in step with it).
fn heeded(kind: &EventKind) -> bool {
    if let EventKind::Call(CallEvent::Ended(r)) = kind {
        return r.emergency;
    }
    matches!(
        kind,
        EventKind::LinkUp { .. }
            | EventKind::LinkDown { .. }
            | EventKind::CloneSuspected { .. }
            | EventKind::Call(
                CallEvent::Emergency { .. }
                    | CallEvent::Granted {
                        call_type: CallType::Emergency,
                        ..
                    }
                    | CallEvent::Queued { emergency: true, .. }
                    | CallEvent::QueueFull { .. }
                    | CallEvent::SlotChanged { .. }
                    | CallEvent::QueueLeft { .. }
            )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(n: u16) -> SiteId {
        SiteId::new(n).unwrap()
    }

    fn lost(n: u16) -> Raise {
        Raise::of(
            AlarmKind::SiteLinkLost,
            Subject::Site(site(n)),
            format!("site {n}"),
        )
    }

    fn book() -> Book {
        Book::new(Vec::new(), 1..100)
    }

    #[test]
    fn the_keeper_heeds_links_and_emergencies_and_not_the_everyday_events() {
        use crate::core::registration::UnitEvent;
        let imsi = Imsi::parse("001010000000042").unwrap();
        let tmsi = crate::protocol::Tmsi::new(7).unwrap();
        assert!(heeded(&EventKind::LinkDown { site: site(1) }));
        assert!(heeded(&EventKind::Call(CallEvent::QueueFull { site: site(1) })));
        let registered = UnitEvent::Registered {
            imsi,
            tmsi,
            site: site(1),
        };
        assert!(!heeded(&EventKind::Unit(registered)));
    }

    #[test]
    fn subjects_and_kinds_read_back_as_written() {
        let imsi = Imsi::parse("001010000000042").unwrap();
        for s in [
            Subject::Site(site(7)),
            Subject::Slot {
                site: site(7),
                carrier: 1,
                slot: 2,
            },
            Subject::Unit(imsi),
            Subject::Database,
            Subject::Records,
            Subject::Controller,
        ] {
            assert_eq!(Subject::parse(&s.to_string()), Some(s), "{s}");
        }
        assert_eq!(
            Subject::Slot {
                site: site(7),
                carrier: 1,
                slot: 2
            }
            .to_string(),
            "slot:7/1/2"
        );
        for bad in ["site:0", "slot:7/1", "slot:7/1/2/3", "unit:12", "nothing", "site"] {
            assert_eq!(Subject::parse(bad), None, "{bad}");
        }
        for k in AlarmKind::ALL {
            assert_eq!(AlarmKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn an_alarm_needs_attention_until_acknowledged_and_cleared_in_either_order() {
        let mut b = book();
        let (change, a) = b.raise(lost(1), 10).unwrap();
        assert_eq!(
            (change, a.id, a.state()),
            (AlarmChange::Raised, 1, AlarmState::Raised)
        );
        assert_eq!(b.raise(lost(1), 11), None, "one open alarm per kind and subject");
        let (_, a) = b.acknowledged(1, "api:ada@127.0.0.1", 12).unwrap();
        assert_eq!(a.state(), AlarmState::Acknowledged);
        assert_eq!(b.acknowledged(1, "api:bob@127.0.0.1", 13), None);
        let (_, a) = b.clear(1, 14).unwrap();
        assert_eq!(a.state(), AlarmState::Finished);
        assert!(b.unfinished.is_empty(), "finished: history");
        assert_eq!(b.dirty[&1], a, "still to be written");

        // Cleared first, then acknowledged.
        let (_, a) = b.raise(lost(1), 20).unwrap();
        assert_eq!(a.id, 2, "a finished alarm is not raised again: a new one is");
        let (_, a) = b.clear(2, 21).unwrap();
        assert_eq!(a.state(), AlarmState::Cleared);
        assert_eq!(b.unfinished.len(), 1, "cleared, still needs attention");
        let (_, a) = b.acknowledged(2, "api:ada@127.0.0.1", 22).unwrap();
        assert_eq!(a.state(), AlarmState::Finished);
        assert!(b.unfinished.is_empty());
    }

    #[test]
    fn raised_again_while_cleared_and_unacknowledged_it_is_reopened() {
        let mut b = book();
        b.raise(lost(1), 10).unwrap();
        b.clear(1, 11).unwrap();
        let (change, a) = b.raise(lost(1), 12).unwrap();
        assert_eq!(change, AlarmChange::Raised);
        assert_eq!(
            (
                a.id,
                a.occurrences,
                a.raised_at_ms,
                a.last_raised_at_ms,
                a.state()
            ),
            (1, 2, 10, 12, AlarmState::Raised)
        );
        assert_eq!(b.unfinished.len(), 1);
    }

    #[test]
    fn a_clone_is_a_moment_cleared_as_it_is_raised_and_left_alone_by_the_looks() {
        let mut b = book();
        let imsi = Imsi::parse("001010000000001").unwrap();
        let clone = Raise::of(
            AlarmKind::CloneSuspected,
            Subject::Unit(imsi),
            "sites 1 and 2".into(),
        );
        let (_, a) = b.raise(clone.clone(), 10).unwrap();
        assert_eq!(a.state(), AlarmState::Cleared);
        assert_eq!(b.reconcile(Vec::new(), 11), Vec::new());
        let (_, a) = b.raise(clone, 12).unwrap();
        assert_eq!((a.id, a.occurrences, a.state()), (1, 2, AlarmState::Cleared));
    }

    #[test]
    fn a_look_raises_what_is_wrong_and_clears_what_is_no_longer() {
        let mut b = book();
        let changes = b.reconcile(vec![lost(1), lost(2)], 10);
        assert_eq!(changes.len(), 2);
        let changes = b.reconcile(vec![lost(2)], 11);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].0, changes[0].1.subject),
            (AlarmChange::Cleared, Subject::Site(site(1)))
        );
        assert_eq!(b.reconcile(vec![lost(2)], 12), Vec::new());
    }

    fn sites(v: &[(u16, bool)]) -> Conditions {
        Conditions {
            sites: v.iter().map(|(s, c)| (site(*s), *c)).collect(),
            ..Conditions::default()
        }
    }

    #[test]
    fn a_site_that_never_linked_is_alarmed_only_after_the_grace_but_one_open_before_stays() {
        let mut b = Book::new(
            vec![Alarm {
                id: 5,
                kind: AlarmKind::SiteLinkLost,
                subject: Subject::Site(site(2)),
                fleet: None,
                detail: String::new(),
                raised_at_ms: 1,
                last_raised_at_ms: 1,
                occurrences: 1,
                acknowledged_at_ms: None,
                acknowledged_by: None,
                cleared_at_ms: None,
            }],
            10..20,
        );
        // At start: site 1 (fine before the restart) waits; site 2's alarm stays open.
        let present = b.present(sites(&[(1, false), (2, false)]), 0, 1000);
        assert_eq!(
            present,
            vec![Raise::of(
                AlarmKind::SiteLinkLost,
                Subject::Site(site(2)),
                "site 2's gateway is not linked".into()
            )]
        );
        assert_eq!(b.reconcile(present, 0), Vec::new());
        // Site 2 links: cleared. Site 1 never does: raised after the grace.
        let present = b.present(sites(&[(1, false), (2, true)]), 999, 1000);
        let changes = b.reconcile(present, 999);
        assert_eq!(
            (changes.len(), changes[0].0, changes[0].1.id),
            (1, AlarmChange::Cleared, 5)
        );
        let present = b.present(sites(&[(1, false), (2, true)]), 1000, 1000);
        let changes = b.reconcile(present, 1000);
        assert_eq!(
            (changes.len(), changes[0].1.id, changes[0].1.subject),
            (1, 10, Subject::Site(site(1)))
        );
        // A site once linked is alarmed at once when it is not.
        let present = b.present(sites(&[(1, false), (2, false)]), 1001, 1000);
        assert_eq!(present.len(), 2);
    }

    #[test]
    fn a_records_backlog_is_raised_at_half_the_cap_and_cleared_below_a_quarter() {
        let mut b = book();
        let records = |n| Conditions {
            records: (n, 100),
            ..Conditions::default()
        };
        let p = b.present(records(49), 0, 0);
        assert!(p.is_empty());
        let p = b.present(records(50), 0, 0);
        b.reconcile(p, 0);
        let p = b.present(records(25), 0, 0);
        assert_eq!(b.reconcile(p, 1), Vec::new(), "still above a quarter");
        let p = b.present(records(24), 0, 0);
        assert_eq!(b.reconcile(p, 2)[0].0, AlarmChange::Cleared);
    }

    #[test]
    fn ids_come_from_the_reserved_blocks_and_run_out() {
        let mut b = Book::new(Vec::new(), 1..3);
        b.ids.push_back(7..8);
        assert_eq!(b.ids_left(), 3);
        let ids: Vec<u64> = (1..=4)
            .filter_map(|n| b.raise(lost(n), 0))
            .map(|(_, a)| a.id)
            .collect();
        assert_eq!(ids, vec![1, 2, 7]);
        assert_eq!(b.ids_left(), 0);
    }

    #[test]
    fn alarms_read_back_from_their_rows() {
        let mut b = book();
        let (_, a) = b.raise(lost(3), 10).unwrap();
        let (_, a2) = b.acknowledged(a.id, "api:ada@127.0.0.1", 11).unwrap();
        assert_eq!(Alarm::from_row(a2.row()), Ok(a2));
        let mut row = a.row();
        row.kind = "nonsense".into();
        assert!(Alarm::from_row(row).is_err());
    }
}
