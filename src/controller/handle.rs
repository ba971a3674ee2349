//! [`ControllerHandle`]: the one way into a running controller for everything outside
//! the link sessions (operator API, CLI, tests, the standby logic): typed commands,
//! typed queries, the event stream and the metrics. Cheap to clone.
//!
//! A command is validated here, written to the HLR with its audit entry (naming the
//! actor) where it changes state, and acted on at once: the handle applies the HLR
//! change to the running controller itself rather than waiting for the periodic
//! follow of the audit log (which still brings changes made by other processes).
//! Messages sent from a console (call alert, status, short data) change no HLR state
//! and are not audited: each is told as an [`EventKind::Message`] event naming the actor.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::Authority;
use crate::core::trunking::{CallView, QueueEntry, SlotView};
use crate::events::{EventKind, Lagged, Subscription};
use crate::hlr::Permissions;
use crate::metrics::{Backlog, Scrape};
use crate::params::{self, ParamError};
use crate::protocol::{CallId, Cause, FleetId, Imsi, ShortData, SiteId, TalkgroupId, Target, Tmsi, Unit};
use crate::shell::messaging::{ConsoleMessage, Reply};
use crate::store::{rules, StoreError};

use super::alarms::{Alarm, AlarmError, AlarmQuery};
use super::commands::{CommandKind, CommandState, TrackedCommand};
use super::Node;

/// What an operator asks the controller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Inhibit (stun) a subscriber: its calls end, it is refused service, and `INHIBIT`
    /// goes to its radio if it is on the air (PROTOCOL.md §5.4).
    Inhibit {
        /// The subscriber.
        imsi: Imsi,
    },
    /// Enable (revive) an inhibited subscriber: `ENABLE` goes to its last known site.
    Enable {
        /// The subscriber.
        imsi: Imsi,
    },
    /// Change what a subscriber is authorised for; each part only when given.
    Authorize {
        /// The subscriber.
        imsi: Imsi,
        /// Its priority level, 0..=15.
        priority: Option<u8>,
        /// Its permissions (PROTOCOL.md §5.6).
        permissions: Option<Permissions>,
    },
    /// End a call in progress: every site of the call hears `CALL_END` cause `0x5F`
    /// (ended by operator).
    EndCall {
        /// The call.
        call: CallId,
    },
    /// Take a traffic slot, or a whole carrier (`slot` `None`), out of service: a call on
    /// it moves to a free slot or ends (`0x5A`), and it is granted no more.
    SlotOutOfService {
        /// The site.
        site: SiteId,
        /// The carrier.
        carrier: u8,
        /// The slot; `None`: the whole carrier.
        slot: Option<u8>,
    },
    /// Put back what [`Command::SlotOutOfService`] took out.
    SlotInService {
        /// The site.
        site: SiteId,
        /// The carrier.
        carrier: u8,
        /// The slot; `None`: the whole carrier.
        slot: Option<u8>,
    },
    /// Change a system parameter (see [`crate::params`]); in force for the next request.
    SetParameter {
        /// Its name, e.g. `trunking.hang_time_ms`.
        name: String,
        /// Its value, as text.
        value: String,
    },
    /// Page a unit from a console (`CALL_ALERT`, PROTOCOL.md §5.3): [`Outcome::Delivered`]
    /// once the unit's gateway acknowledges it.
    ///
    /// A console sends from `from`, a dispatcher's unit address: a provisioned subscriber
    /// of its fleet that is not on the air. It is checked as a radio's request is, except
    /// for registration: provisioned (else `0x40` unknown subscriber), not inhibited
    /// (`0x41`), with the permission of PROTOCOL.md §5.6 (`private` for a call alert,
    /// `data` for status and short data; `0x31`), then the target. A refusal is
    /// [`CommandError::Refused`] with the cause a radio would hear.
    ///
    /// Not written to the audit log (the HLR's change log, which every controller
    /// follows): it changes no HLR state, and radios' messages are not audited either.
    /// Its outcome is published as an [`EventKind::Message`] naming the actor, and logged.
    CallAlert {
        /// The dispatcher's unit address (the caller the radio shows).
        from: Unit,
        /// The unit to page.
        to: Unit,
    },
    /// Send a status message from a console to a unit ([`Outcome::Delivered`] once its
    /// gateway acknowledges) or to a talkgroup of `from`'s fleet
    /// ([`Outcome::SentToTalkgroup`] once it is queued for every affiliated unit on the
    /// air). Checked, answered and told as [`Command::CallAlert`].
    Status {
        /// The dispatcher's unit address (the source the radios show).
        from: Unit,
        /// A unit or a talkgroup.
        target: Target,
        /// The status code.
        code: u16,
    },
    /// Send short data from a console to a unit or a talkgroup of `from`'s fleet:
    /// [`Outcome::Stored`] once stored durably; recipients on the air receive it now, the
    /// others when they next register. Checked, answered and told as
    /// [`Command::CallAlert`].
    ShortData {
        /// The dispatcher's unit address (the source the radios show).
        from: Unit,
        /// A unit or a talkgroup.
        target: Target,
        /// The payload.
        data: ShortData,
    },
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for inhibit and enable, the radio's answer comes later as an
    /// [`EventKind::RadioCommand`] event.
    Done,
    /// The parameter now has this value.
    Parameter {
        /// Its name.
        name: String,
        /// Its value.
        value: String,
    },
    /// The call alert or status reached the unit: its gateway acknowledged it.
    Delivered,
    /// The status was queued for every unit on the air affiliated to the talkgroup
    /// (but the sender's own unit), `recipients` of them; they do not acknowledge it.
    SentToTalkgroup {
        /// How many units it was sent to.
        recipients: usize,
    },
    /// The short data is stored durably for `recipients` subscribers (every one
    /// permitted on a talkgroup but the sender, or the one unit) and will reach each of
    /// them when it is, or next comes, on the air, within `messaging.short_data_ttl_ms`.
    Stored {
        /// How many subscribers it is stored for.
        recipients: usize,
    },
}

/// Why a command was not carried out. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It is not valid as given.
    #[error("{0}")]
    Invalid(String),
    /// It would break a uniqueness or reference rule of the HLR.
    #[error("{0}")]
    Conflict(String),
    /// The HLR could not be written; try again.
    #[error("HLR unavailable: {0}")]
    Unavailable(StoreError),
    /// A message from a console was refused with the cause a radio's `DENY` would carry
    /// (PROTOCOL.md §5.3, §6): nothing is stored. A call alert or status refused
    /// `target unreachable` after the delivery timeout may still have reached the radio
    /// unacknowledged.
    #[error("refused: {0}")]
    Refused(Cause),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => CommandError::NotFound(m),
            StoreError::Invalid(m) => CommandError::Invalid(m),
            StoreError::Conflict(m) => CommandError::Conflict(m),
            other => CommandError::Unavailable(other),
        }
    }
}

impl From<ParamError> for CommandError {
    fn from(e: ParamError) -> Self {
        CommandError::Invalid(e.to_string())
    }
}

/// What an operator asks to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Units on the air, by IMSI, a page at a time, optionally only those at a site, of
    /// a fleet, or affiliated to a talkgroup.
    Units(UnitFilter),
    /// A site's slots.
    Slots {
        /// The site.
        site: SiteId,
    },
    /// Every call in progress.
    Calls,
    /// Each site's busy queue (one site's with `site`).
    Queues {
        /// Only this site.
        site: Option<SiteId>,
    },
    /// Every provisioned site with its link's state.
    Links,
    /// The alarms that need an operator's attention (not yet acknowledged, or not yet
    /// cleared), by id, brought up to the conditions now; history is
    /// [`ControllerHandle::alarms`].
    Alarms,
    /// The system parameters in force.
    Parameters,
}

/// Which units [`Query::Units`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitFilter {
    /// Only those registered at this site.
    pub site: Option<SiteId>,
    /// Only this fleet's.
    pub fleet: Option<FleetId>,
    /// Only those affiliated to this talkgroup (of `fleet`, which it needs).
    pub talkgroup: Option<TalkgroupId>,
    /// Start after this IMSI (the last of the previous page).
    pub after: Option<Imsi>,
    /// At most this many, 1..=10000.
    pub limit: usize,
}

/// A unit on the air.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitOnAir {
    /// Its IMSI.
    pub imsi: Imsi,
    /// Its dispatch address.
    pub unit: Option<Unit>,
    /// Its TMSI.
    pub tmsi: Tmsi,
    /// Where it is registered.
    pub site: SiteId,
    /// Its talkgroups, the primary first.
    pub talkgroups: Vec<TalkgroupId>,
    /// When it was last heard from, Unix ms.
    pub last_activity_ms: i64,
}

/// A call in progress, with Unix times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveCall {
    /// The call as the trunking core holds it (its times monotonic).
    pub view: CallView,
    /// When it was asked for, Unix ms.
    pub requested_at_ms: i64,
    /// When it was granted, Unix ms.
    pub granted_at_ms: i64,
}

/// A request waiting in a busy queue, with its Unix time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedCall {
    /// The request as the busy queue holds it (its time monotonic).
    pub entry: QueueEntry,
    /// When it was asked for, Unix ms.
    pub requested_at_ms: i64,
}

/// A provisioned site and its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The site.
    pub site: SiteId,
    /// Its name.
    pub name: String,
    /// Whether its gateway's link is up.
    pub connected: bool,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Units on the air.
    Units(Vec<UnitOnAir>),
    /// A site's slots.
    Slots(Vec<SlotView>),
    /// Calls in progress.
    Calls(Vec<ActiveCall>),
    /// Busy queues, by site.
    Queues(Vec<(SiteId, Vec<QueuedCall>)>),
    /// Sites and their links.
    Links(Vec<LinkState>),
    /// The alarms that need attention, by id.
    Alarms(Vec<Alarm>),
    /// System parameters: (name, value).
    Parameters(Vec<(String, String)>),
}

/// Why a query has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It is not valid as given.
    #[error("{0}")]
    Invalid(String),
}

/// The state a listener starts from: everything up to event `seq` is in it (events
/// after `seq` may be in it too; applying them again changes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The last event before it was taken.
    pub seq: u64,
    /// Every unit on the air.
    pub units: Vec<UnitOnAir>,
    /// Every call in progress.
    pub calls: Vec<ActiveCall>,
    /// Every site's slots.
    pub slots: Vec<(SiteId, Vec<SlotView>)>,
    /// Every site's busy queue.
    pub queues: Vec<(SiteId, Vec<QueuedCall>)>,
    /// Every site's link.
    pub links: Vec<LinkState>,
    /// The alarms that need attention, by id.
    pub alarms: Vec<Alarm>,
}

/// The handle of a running controller.
#[derive(Clone)]
pub struct ControllerHandle {
    pub(super) node: Arc<Node>,
}

impl ControllerHandle {
    pub(super) fn new(node: Arc<Node>) -> Self {
        ControllerHandle { node }
    }

    /// Carries out `command` for `actor` (who is named in the audit log).
    pub async fn command(&self, actor: &str, command: Command) -> Result<Outcome, CommandError> {
        let n = &self.node;
        let actor = actor.trim();
        if actor.is_empty() {
            return Err(CommandError::Invalid("actor must be named".into()));
        }
        match command {
            Command::Inhibit { imsi } | Command::Enable { imsi } => {
                let inhibit = matches!(command, Command::Inhibit { .. });
                n.store.set_inhibited(actor, imsi, inhibit).await?;
                // Told before it is acted on, so the radio command's outcome follows it.
                self.subscriber_changed(imsi, actor, if inhibit { "inhibited" } else { "enabled" });
                n.follow_hlr().await;
                Ok(Outcome::Done)
            }
            Command::Authorize {
                imsi,
                priority,
                permissions,
            } => {
                if priority.is_none() && permissions.is_none() {
                    return Err(CommandError::Invalid(
                        "give a priority, permissions or both".into(),
                    ));
                }
                n.store
                    .set_authorization(actor, imsi, priority, permissions)
                    .await?;
                n.follow_hlr().await;
                let mut change = Vec::new();
                if let Some(p) = priority {
                    change.push(format!("priority={p}"));
                }
                if let Some(p) = permissions {
                    change.push(format!("permissions={p}"));
                }
                self.subscriber_changed(imsi, actor, &change.join(" "));
                Ok(Outcome::Done)
            }
            Command::EndCall { call } => {
                if !n.calls.end_by_operator(call) {
                    return Err(CommandError::NotFound(format!("call {call} is not in progress")));
                }
                Ok(Outcome::Done)
            }
            Command::SlotOutOfService { site, carrier, slot }
            | Command::SlotInService { site, carrier, slot } => {
                let faulty = matches!(command, Command::SlotOutOfService { .. });
                let slot = slot.unwrap_or(rules::WHOLE_CARRIER);
                n.store.set_slot_fault(actor, site, carrier, slot, faulty).await?;
                n.follow_hlr().await;
                Ok(Outcome::Done)
            }
            Command::SetParameter { name, value } => {
                let current = n.config();
                let new = params::set(&current, &name, &value)?;
                // As the database will hold it (e.g. "0500" → "500").
                let value = params::get(&new, &name).unwrap_or(value);
                n.store.set_parameter(actor, &name, &value).await?;
                n.apply_config(new);
                let event = EventKind::ParameterChanged {
                    name: name.clone(),
                    value: value.clone(),
                    actor: actor.to_string(),
                };
                n.events.publish(event);
                Ok(Outcome::Parameter { name, value })
            }
            Command::CallAlert { from, to } => {
                self.message(actor, from, ConsoleMessage::CallAlert { to }).await
            }
            Command::Status { from, target, code } => {
                let message = ConsoleMessage::Status { to: target, code };
                self.message(actor, from, message).await
            }
            Command::ShortData { from, target, data } => {
                let message = ConsoleMessage::ShortData { to: target, data };
                self.message(actor, from, message).await
            }
        }
    }

    /// Sends `message` from a console and waits for its answer.
    async fn message(
        &self,
        actor: &str,
        from: Unit,
        message: ConsoleMessage,
    ) -> Result<Outcome, CommandError> {
        match self.node.messaging.from_console(actor, from, message).await {
            Reply::Delivered => Ok(Outcome::Delivered),
            Reply::SentToTalkgroup { recipients } => Ok(Outcome::SentToTalkgroup { recipients }),
            Reply::Stored { recipients } => Ok(Outcome::Stored { recipients }),
            Reply::Refused(cause) => Err(CommandError::Refused(cause)),
        }
    }

    fn subscriber_changed(&self, imsi: Imsi, actor: &str, change: &str) {
        let Some(sub) = self.node.hlr.subscriber(&imsi) else {
            return;
        };
        let event = EventKind::SubscriberChanged {
            imsi,
            unit: sub.unit,
            actor: actor.to_string(),
            change: change.to_string(),
        };
        self.node.events.publish(event);
    }

    /// Answers `query` from the controller's memory (never the database).
    pub fn query(&self, query: Query) -> Result<Answer, QueryError> {
        let n = &self.node;
        Ok(match query {
            Query::Units(filter) => Answer::Units(self.units(&filter)?),
            Query::Slots { site } => Answer::Slots(
                n.calls
                    .slot_map(site)
                    .ok_or_else(|| QueryError::NotFound(format!("site {site} does not exist")))?,
            ),
            Query::Calls => Answer::Calls(self.calls()),
            Query::Queues { site } => {
                let sites = match site {
                    Some(s) if n.hlr.site(s).is_none() => {
                        return Err(QueryError::NotFound(format!("site {s} does not exist")));
                    }
                    Some(s) => vec![s],
                    None => n.hlr.sites().into_iter().map(|s| s.id).collect(),
                };
                Answer::Queues(sites.into_iter().map(|s| (s, self.queue(s))).collect())
            }
            Query::Links => Answer::Links(self.links()),
            Query::Alarms => Answer::Alarms(self.alarms_now()),
            Query::Parameters => Answer::Parameters(
                params::all(&n.config())
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
        })
    }

    fn units(&self, f: &UnitFilter) -> Result<Vec<UnitOnAir>, QueryError> {
        if !(1..=10_000).contains(&f.limit) {
            return Err(QueryError::Invalid("limit must be within 1..=10000".into()));
        }
        if f.talkgroup.is_some() && f.fleet.is_none() {
            return Err(QueryError::Invalid("a talkgroup needs its fleet".into()));
        }
        let page = self.node.vlr.page(f.after, f.limit, |_, u| {
            f.site.is_none_or(|s| u.site == s)
                && f.fleet.is_none_or(|fl| u.fleet == fl)
                && f.talkgroup.is_none_or(|tg| u.affiliation.all().any(|t| t == tg))
        });
        Ok(self.unit_rows(page))
    }

    /// Units of the VLR as operators see them.
    fn unit_rows(&self, page: Vec<(Imsi, crate::vlr::VlrUnit)>) -> Vec<UnitOnAir> {
        let n = &self.node;
        page.into_iter()
            .map(|(imsi, u)| UnitOnAir {
                imsi,
                unit: n.hlr.subscriber(&imsi).map(|s| s.unit),
                tmsi: u.tmsi,
                site: u.site,
                talkgroups: u.affiliation.all().collect(),
                last_activity_ms: n.clock.unix_of(u.last_activity_ms),
            })
            .collect()
    }

    fn calls(&self) -> Vec<ActiveCall> {
        let clock = self.node.clock;
        self.node
            .calls
            .calls()
            .into_iter()
            .map(|view| ActiveCall {
                requested_at_ms: clock.unix_of(view.requested_ms),
                granted_at_ms: clock.unix_of(view.granted_ms),
                view,
            })
            .collect()
    }

    fn queue(&self, site: SiteId) -> Vec<QueuedCall> {
        let clock = self.node.clock;
        self.node
            .calls
            .queue(site)
            .into_iter()
            .map(|entry| QueuedCall {
                requested_at_ms: clock.unix_of(entry.requested_ms),
                entry,
            })
            .collect()
    }

    fn links(&self) -> Vec<LinkState> {
        let n = &self.node;
        let mut sites = n.hlr.sites();
        sites.sort_by_key(|s| s.id);
        sites
            .into_iter()
            .map(|s| LinkState {
                site: s.id,
                connected: n.links.is_connected(s.id),
                name: s.name,
            })
            .collect()
    }

    fn alarms_now(&self) -> Vec<Alarm> {
        self.node.reconcile_alarms();
        self.node.alarms.unfinished()
    }

    /// Alarms newest first, a page at a time: those that need attention (from memory),
    /// or with [`AlarmQuery::finished`] every one (from the database, with what this
    /// controller has not written yet).
    pub async fn alarms(&self, q: &AlarmQuery) -> Result<Vec<Alarm>, AlarmError> {
        let n = &self.node;
        let wanted =
            |a: &Alarm| q.before.is_none_or(|b| a.id < b) && a.fleet.is_none_or(|f| q.fleets.allows(f));
        let mut page: BTreeMap<u64, Alarm> = BTreeMap::new();
        if q.finished {
            page.extend(self.reads().alarms(q).await?.into_iter().map(|a| (a.id, a)));
            // What is newer here than in the database.
            page.extend(n.alarms.pending().into_iter().filter(|(_, a)| wanted(a)));
        } else {
            n.reconcile_alarms();
            page.extend(
                n.alarms
                    .unfinished()
                    .into_iter()
                    .filter(wanted)
                    .map(|a| (a.id, a)),
            );
        }
        Ok(page.into_values().rev().take(q.limit).collect())
    }

    /// Alarm `id`: from memory, else from the database.
    pub async fn alarm(&self, id: u64) -> Result<Alarm, AlarmError> {
        if let Some(a) = self.node.alarms.get(id) {
            return Ok(a);
        }
        self.reads().alarm(id).await
    }

    /// Acknowledges alarm `id` for `actor` (named in its audit entry and as who
    /// acknowledged it): written to the database at once, then told on the event stream.
    /// An alarm acknowledged already is refused ([`AlarmError::AlreadyAcknowledged`]),
    /// naming by whom.
    pub async fn acknowledge_alarm(&self, actor: &str, id: u64) -> Result<Alarm, AlarmError> {
        self.node.alarms.acknowledge(&self.node.store, actor, id).await
    }

    /// Everything `GET /metrics` shows, read now: the counters and latency histograms
    /// kept on the frame path, and the gauges read from memory (connected sites, units
    /// on the air, calls in progress, each provisioned site's busy queue, the
    /// write-behind backlog). Cheap enough for a scrape every second.
    pub fn metrics(&self) -> Scrape {
        let n = &self.node;
        let links = self.links();
        let (locations, audit_entries) = n.writer.backlog();
        Scrape {
            connected_sites: links.iter().filter(|l| l.connected).count(),
            registered_units: n.vlr.len(),
            active_calls: n.calls.calls().len(),
            queue_depth: links
                .iter()
                .map(|l| (l.site, n.calls.queue(l.site).len()))
                .collect(),
            backlog: Backlog {
                call_records: n.calls.unwritten_records().0,
                locations,
                audit_entries,
            },
            counted: n.metrics.snapshot(),
            ha: self.ha_lease().map(|(epoch, age)| crate::metrics::HaGauges {
                active: true,
                epoch,
                lease_age_ms: Some(age),
            }),
        }
    }

    /// Listens from now on: the state now, and the events after it.
    pub fn events(&self) -> (Snapshot, Subscription) {
        let n = &self.node;
        // Subscribed first, so nothing between the two is missed.
        let sub = n.events.subscribe();
        let sites: Vec<SiteId> = self.links().iter().map(|l| l.site).collect();
        let units = self.unit_rows(n.vlr.page(None, usize::MAX, |_, _| true));
        let snapshot = Snapshot {
            seq: sub.after(),
            units,
            calls: self.calls(),
            slots: sites
                .iter()
                .map(|s| (*s, n.calls.slot_map(*s).unwrap_or_default()))
                .collect(),
            queues: sites.iter().map(|s| (*s, self.queue(*s))).collect(),
            links: self.links(),
            alarms: self.alarms_now(),
        };
        (snapshot, sub)
    }

    /// Listens from the event after `after` (the last one a listener saw), as long as
    /// the controller still holds every event since; `Err`: take a new snapshot with
    /// [`ControllerHandle::events`].
    pub fn resume(&self, after: u64) -> Result<Subscription, Lagged> {
        self.node.events.resume(after)
    }

    /// The dispatch address of a provisioned subscriber (from the HLR's cache in
    /// memory): what the event stream names a unit by, and filters it by fleet with.
    pub fn subscriber_unit(&self, imsi: &Imsi) -> Option<Unit> {
        self.node.hlr.subscriber(imsi).map(|s| s.unit)
    }

    /// The Unix time (ms) of a time on the controller's monotonic scale (the times
    /// inside [`CallView`], [`QueueEntry`] and call records).
    pub fn unix_of(&self, mono_ms: i64) -> i64 {
        self.node.clock.unix_of(mono_ms)
    }

    /// The operator API's logins and tokens.
    pub fn authority(&self) -> Arc<Authority> {
        self.node.auth.clone()
    }

    /// Sends `kind` to the radio of `imsi` and returns it to follow by id (see
    /// [`TrackedCommand`]). Inhibit and enable are written to the HLR first (with their
    /// audit entry naming `actor`); a call alert is sent from `from`, a dispatcher's unit
    /// address, as [`Command::CallAlert`]; a radio check goes to the unit's site if it is
    /// registered, and has failed at once if not (PROTOCOL.md §5.4).
    pub async fn radio_command(
        &self,
        actor: &str,
        kind: CommandKind,
        imsi: Imsi,
        from: Option<Unit>,
    ) -> Result<TrackedCommand, CommandError> {
        let Some(sub) = self.node.hlr.subscriber(&imsi) else {
            return Err(CommandError::NotFound(format!(
                "subscriber {imsi} does not exist"
            )));
        };
        let command = match kind {
            CommandKind::Inhibit => Some(Command::Inhibit { imsi }),
            CommandKind::Enable => Some(Command::Enable { imsi }),
            CommandKind::Check => None,
            CommandKind::Alert => Some(Command::CallAlert {
                from: from.ok_or_else(|| {
                    CommandError::Invalid("a call alert needs the console's unit (from)".into())
                })?,
                to: sub.unit,
            }),
        };
        let log = &self.node.commands;
        let tracked = log
            .open(kind, imsi, actor)
            .map_err(|e| CommandError::Invalid(format!("the OS random generator failed: {e}")))?;
        let Some(command) = command else {
            // A radio check: sent now if the unit is registered, answered by its outcome
            // event; else failed at once.
            if self.node.remote.check(imsi, self.node.clock.mono_ms()) {
                return Ok(tracked);
            }
            let reason = "the unit is not registered: nothing sent".to_string();
            let failed = log.settle(&tracked.id, CommandState::Failed { reason });
            return Ok(failed.unwrap_or(tracked));
        };
        if kind == CommandKind::Alert {
            // Answered when the radio's gateway acknowledges, or refused at the timeout.
            let (handle, actor, id) = (self.clone(), actor.to_string(), tracked.id.clone());
            tokio::spawn(async move {
                let state = match handle.command(&actor, command).await {
                    Ok(_) => CommandState::Acknowledged,
                    Err(CommandError::Refused(Cause::TargetUnreachable)) => CommandState::TimedOut,
                    Err(e) => CommandState::Failed {
                        reason: e.to_string(),
                    },
                };
                handle.node.commands.settle(&id, state);
            });
            return Ok(tracked);
        }
        if let Err(e) = self.command(actor, command).await {
            log.settle(
                &tracked.id,
                CommandState::Failed {
                    reason: e.to_string(),
                },
            );
            return Err(e);
        }
        Ok(log.get(&tracked.id).unwrap_or(tracked))
    }

    /// In an HA group, the epoch this node is active for and the ms since it last renewed
    /// its lease; `None` without HA.
    pub fn ha_lease(&self) -> Option<(i64, i64)> {
        self.node.fence.as_ref().map(|f| (f.epoch(), f.lease_age_ms()))
    }

    /// A command opened by [`ControllerHandle::radio_command`], while it is kept.
    pub fn tracked_command(&self, id: &str) -> Option<TrackedCommand> {
        self.node.commands.get(id)
    }

    /// The dispatch address of a provisioned subscriber.
    pub fn unit_of(&self, imsi: Imsi) -> Option<Unit> {
        self.node.hlr.subscriber(&imsi).map(|s| s.unit)
    }
}
