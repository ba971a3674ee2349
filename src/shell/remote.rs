//! Remote inhibit, enable and radio check over the air ("stun", "revive" and "are you
//! there", `PROTOCOL.md §5.4`).
//!
//! The HLR is written first (by `trunkd subscriber inhibit` / `enable`, or any other
//! writer); the controller learns of the change by following the audit log and then:
//!
//! - **inhibit**: ends the unit's calls and requests with "unit inhibited" at once, and
//!   sends `INHIBIT` with the unit's TMSI to its site. The unit leaves the VLR when its
//!   gateway answers `INHIBIT_ACK`, or after `messaging.radio_command_attempts` sends
//!   `messaging.radio_command_timeout_ms` apart went unanswered.
//! - **enable**: sends `ENABLE` to the unit's last known site, with the TMSI it had there
//!   (a stunned radio still answers to it), retried the same way. The unit then
//!   registers again by itself.
//! - **radio check**: sends `RADIO_CHECK` to a registered unit's site, retried the same
//!   way; acknowledged when its gateway heard the radio answer. It changes nothing else.
//!
//! Every command is tracked (sent, acknowledged, unacknowledged, or not sent because the
//! unit could not be addressed), and its outcome is written to the audit log.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::MessagingConfig;
use crate::core::registration::{Event, Registrar};
use crate::events::{EventBus, EventKind, RadioCommand, RadioOutcome};
use crate::link::Links;
use crate::protocol::{Frame, Imsi, Message, SiteId, Tmsi, CONTROLLER_TXN_BASE};
use crate::shell::calls::CallService;
use crate::store::Store;

/// An audit entry for the controller's audit writer: (action, object, detail).
pub type AuditEntry = (String, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Inhibit,
    Enable,
    Check,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Inhibit => "inhibit",
            Kind::Enable => "enable",
            Kind::Check => "check",
        }
    }

    fn message(self, tmsi: Tmsi) -> Message {
        match self {
            Kind::Inhibit => Message::Inhibit { tmsi },
            Kind::Enable => Message::Enable { tmsi },
            Kind::Check => Message::RadioCheck { tmsi },
        }
    }

    fn event(self) -> RadioCommand {
        match self {
            Kind::Inhibit => RadioCommand::Inhibit,
            Kind::Enable => RadioCommand::Enable,
            Kind::Check => RadioCommand::Check,
        }
    }
}

/// A command sent and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct Pending {
    imsi: Imsi,
    tmsi: Tmsi,
    kind: Kind,
    /// Sends so far.
    sent: u32,
    deadline_ms: i64,
}

/// The radio commands in flight.
pub struct RemoteControl {
    /// Who is on the air; an inhibited unit leaves through it.
    registrar: Arc<Registrar>,
    links: Links,
    store: Store,
    calls: Arc<CallService>,
    audit: mpsc::Sender<AuditEntry>,
    events: Arc<EventBus>,
    timeout_ms: i64,
    attempts: u32,
    /// (site, controller transaction) → the command sent there.
    pending: DashMap<(SiteId, u32), Pending>,
    next_txn: AtomicU32,
}

impl RemoteControl {
    /// Commands over the given registries; outcomes go to `audit`.
    pub fn new(
        registrar: Arc<Registrar>,
        links: Links,
        store: Store,
        calls: Arc<CallService>,
        audit: mpsc::Sender<AuditEntry>,
        events: Arc<EventBus>,
        cfg: &MessagingConfig,
    ) -> Self {
        RemoteControl {
            registrar,
            links,
            store,
            calls,
            audit,
            events,
            timeout_ms: cfg.radio_command_timeout_ms as i64,
            attempts: cfg.radio_command_attempts.max(1),
            pending: DashMap::new(),
            next_txn: AtomicU32::new(0),
        }
    }

    /// A controller transaction id from a range of its own (`0xB000_0000..`), apart from
    /// those of calls and messaging.
    fn txn(&self) -> u32 {
        (CONTROLLER_TXN_BASE | 0x3000_0000) + (self.next_txn.fetch_add(1, Ordering::Relaxed) & 0x0FFF_FFFF)
    }

    /// Tells how a command ended: in the audit log and as an event.
    fn audit(&self, kind: Kind, outcome: RadioOutcome, imsi: Imsi, detail: String) {
        let name = match outcome {
            RadioOutcome::Acknowledged => "acknowledged",
            RadioOutcome::Unacknowledged => "unacknowledged",
            RadioOutcome::NotSent => "not_sent",
        };
        let event = EventKind::RadioCommand {
            imsi,
            command: kind.event(),
            outcome,
        };
        self.events.publish(event);
        let action = format!("subscriber.{}.{name}", kind.name());
        info!(%imsi, %action, %detail, "radio command");
        let entry = (action, format!("subscriber:{imsi}"), detail);
        if self.audit.try_send(entry).is_err() {
            warn!("audit queue full: entry kept in the log only");
        }
    }

    /// The HLR now says `imsi` is inhibited (`true`) or enabled (`false`).
    pub async fn changed(&self, imsi: Imsi, inhibited: bool, now_ms: i64) {
        // A newer inhibit or enable supersedes one still in flight for the unit (a radio
        // check goes on).
        self.pending
            .retain(|_, p| p.imsi != imsi || p.kind == Kind::Check);
        let on_air = self.registrar.vlr().get(&imsi);
        if inhibited {
            let Some(unit) = on_air else {
                let why = "not registered: nothing sent (registrations are refused)".to_string();
                return self.audit(Kind::Inhibit, RadioOutcome::NotSent, imsi, why);
            };
            self.calls.unit_inhibited(unit.tmsi);
            self.send_new(Kind::Inhibit, imsi, unit.tmsi, unit.site, now_ms);
            return;
        }
        let target = match on_air {
            Some(unit) => Some((unit.site, unit.tmsi)),
            None => match self.last_seen(imsi).await {
                Ok(t) => t,
                Err(e) => {
                    let why = format!("last location unreadable: {e}; nothing sent");
                    return self.audit(Kind::Enable, RadioOutcome::NotSent, imsi, why);
                }
            },
        };
        match target {
            Some((site, tmsi)) => self.send_new(Kind::Enable, imsi, tmsi, site, now_ms),
            None => {
                let why = "no last known site and TMSI: nothing sent".to_string();
                self.audit(Kind::Enable, RadioOutcome::NotSent, imsi, why)
            }
        }
    }

    /// Sends `RADIO_CHECK` to the unit's site if it is registered (`true`); else sends
    /// nothing and tells it as [`RadioOutcome::NotSent`] (`false`).
    pub fn check(&self, imsi: Imsi, now_ms: i64) -> bool {
        match self.registrar.vlr().get(&imsi) {
            Some(unit) => {
                self.send_new(Kind::Check, imsi, unit.tmsi, unit.site, now_ms);
                true
            }
            None => {
                let why = "not registered: nothing sent".to_string();
                self.audit(Kind::Check, RadioOutcome::NotSent, imsi, why);
                false
            }
        }
    }

    async fn last_seen(&self, imsi: Imsi) -> Result<Option<(SiteId, Tmsi)>, crate::store::StoreError> {
        let Some((site, _)) = self.store.last_location(imsi).await? else {
            return Ok(None);
        };
        Ok(self.store.last_tmsi(imsi).await?.map(|t| (site, t)))
    }

    /// Sends a new command and keeps it until its answer or its next deadline.
    fn send_new(&self, kind: Kind, imsi: Imsi, tmsi: Tmsi, site: SiteId, now_ms: i64) {
        let p = Pending {
            imsi,
            tmsi,
            kind,
            sent: 1,
            deadline_ms: now_ms + self.timeout_ms,
        };
        let txn = self.txn();
        self.pending.insert((site, txn), p);
        self.transmit(site, txn, &p);
    }

    /// Queues the command's frame for `site` (a site whose link is down counts as an
    /// unanswered send).
    fn transmit(&self, site: SiteId, txn: u32, p: &Pending) {
        if let Err(e) = self.links.send(site, Frame::new(txn, p.kind.message(p.tmsi))) {
            debug!(error = %e, kind = p.kind.name(), "radio command not delivered; will retry");
        }
    }

    /// Handles `INHIBIT_ACK`, `ENABLE_ACK` and `RADIO_CHECK_ACK` from `site` at `now_ms`
    /// (monotonic); `None` for other messages.
    pub fn handle(&self, site: SiteId, frame: &Frame, now_ms: i64) -> Option<Vec<Frame>> {
        let (kind, tmsi) = match frame.msg {
            Message::InhibitAck { tmsi } => (Kind::Inhibit, tmsi),
            Message::EnableAck { tmsi } => (Kind::Enable, tmsi),
            Message::RadioCheckAck { tmsi } => (Kind::Check, tmsi),
            _ => return None,
        };
        let matching = |_: &(SiteId, u32), p: &Pending| p.kind == kind && p.tmsi == tmsi;
        let Some((_, p)) = self.pending.remove_if(&(site, frame.txn), matching) else {
            debug!(%site, txn = frame.txn, "acknowledgement of no command in flight; ignored");
            return Some(vec![]);
        };
        let detail = format!("site {site} acknowledged after {} send(s)", p.sent);
        if kind == Kind::Inhibit {
            self.leave_vlr(p.tmsi, site, now_ms);
        }
        self.audit(kind, RadioOutcome::Acknowledged, p.imsi, detail);
        Some(vec![])
    }

    /// The inhibited unit leaves the VLR (its calls already ended). Its row in
    /// `units_on_air` stays until it registers again or a controller starts, which
    /// skips and removes the rows of inhibited units.
    fn leave_vlr(&self, tmsi: Tmsi, site: SiteId, now: i64) {
        for e in self.registrar.take_off_air(tmsi, site, now) {
            match e {
                Event::UnitGone { tmsi } => self.calls.unit_gone(tmsi),
                Event::Unit(u) => {
                    self.events.publish(EventKind::Unit(u));
                }
                _ => {}
            }
        }
    }

    /// Sends again what is due, and gives up commands sent `attempts` times. An entry is
    /// updated in place, so a newer command or an acknowledgement arriving meanwhile is
    /// never undone.
    pub fn sweep(&self, now_ms: i64) {
        let due: Vec<(SiteId, u32)> = self
            .pending
            .iter()
            .filter(|e| e.deadline_ms <= now_ms)
            .map(|e| *e.key())
            .collect();
        for key in due {
            let (site, txn) = key;
            let resend = self.pending.get_mut(&key).and_then(|mut p| {
                (p.deadline_ms <= now_ms && p.sent < self.attempts).then(|| {
                    p.sent += 1;
                    p.deadline_ms = now_ms + self.timeout_ms;
                    *p
                })
            });
            if let Some(p) = resend {
                // A retry repeats the command on its own transaction id.
                self.transmit(site, txn, &p);
                continue;
            }
            let given_up = self
                .pending
                .remove_if(&key, |_, p| p.deadline_ms <= now_ms && p.sent >= self.attempts);
            let Some((_, p)) = given_up else { continue };
            let detail = format!("no acknowledgement from site {site} after {} send(s)", p.sent);
            if p.kind == Kind::Inhibit {
                self.leave_vlr(p.tmsi, site, now_ms);
            }
            self.audit(p.kind, RadioOutcome::Unacknowledged, p.imsi, detail);
        }
    }
}
