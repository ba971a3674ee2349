//! Commands to radios that an operator follows by id: inhibit, enable, radio check and
//! call alert.
//! Each is `pending` until its radio answers (`acknowledged`), it cannot be carried out
//! (`failed`, with the reason), or no answer came in time (`timed_out`); every state is
//! told on the event stream ([`EventKind::Command`]).
//!
//! Inhibit and enable write the HLR first (the unit is refused from that moment,
//! whatever its radio answers); the radio command that follows is resolved from its
//! outcome event. The log is in memory: the last [`KEPT`] commands, lost at a restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;

use crate::clock::Clock;
use crate::events::{EventBus, EventKind, RadioCommand, RadioOutcome};
use crate::protocol::Imsi;

/// Commands kept for reading back.
pub const KEPT: usize = 10_000;

/// What is asked of a radio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// Inhibit (stun).
    Inhibit,
    /// Enable (revive).
    Enable,
    /// Radio check: is the unit reachable now.
    Check,
    /// Call alert (page) from a console.
    Alert,
}

impl CommandKind {
    /// `inhibit`, `enable`, `check`, `alert`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Inhibit => "inhibit",
            CommandKind::Enable => "enable",
            CommandKind::Check => "check",
            CommandKind::Alert => "alert",
        }
    }
}

/// Where a command stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandState {
    /// Sent or about to be; no answer yet.
    Pending,
    /// The radio's gateway acknowledged it.
    Acknowledged,
    /// It could not be carried out.
    Failed {
        /// Why.
        reason: String,
    },
    /// No answer came within the retries.
    TimedOut,
}

impl CommandState {
    /// `pending`, `acknowledged`, `failed`, `timed_out`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandState::Pending => "pending",
            CommandState::Acknowledged => "acknowledged",
            CommandState::Failed { .. } => "failed",
            CommandState::TimedOut => "timed_out",
        }
    }
}

/// A command and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedCommand {
    /// Random, 32 hex digits.
    pub id: String,
    /// What.
    pub kind: CommandKind,
    /// To whom.
    pub imsi: Imsi,
    /// Who asked.
    pub actor: String,
    /// Where it stands.
    pub state: CommandState,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last change.
    pub updated_at_ms: i64,
}

/// The commands, by id.
pub(super) struct CommandLog {
    by_id: DashMap<String, TrackedCommand>,
    order: Mutex<VecDeque<String>>,
    events: Arc<EventBus>,
    clock: Clock,
}

impl CommandLog {
    pub(super) fn new(events: Arc<EventBus>, clock: Clock) -> Self {
        CommandLog {
            by_id: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            events,
            clock,
        }
    }

    /// A new pending command (told on the stream).
    pub(super) fn open(
        &self,
        kind: CommandKind,
        imsi: Imsi,
        actor: &str,
    ) -> Result<TrackedCommand, getrandom::Error> {
        let now = self.clock.unix_ms();
        let c = TrackedCommand {
            id: crate::auth::tokens::random_id()?,
            kind,
            imsi,
            actor: actor.to_string(),
            state: CommandState::Pending,
            created_at_ms: now,
            updated_at_ms: now,
        };
        {
            let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
            order.push_back(c.id.clone());
            while order.len() > KEPT {
                if let Some(old) = order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
        }
        self.by_id.insert(c.id.clone(), c.clone());
        self.events.publish(EventKind::Command(c.clone()));
        Ok(c)
    }

    /// Settles a pending command (told on the stream); a settled one stays as it is.
    pub(super) fn settle(&self, id: &str, state: CommandState) -> Option<TrackedCommand> {
        let mut c = self.by_id.get_mut(id)?;
        if c.state != CommandState::Pending {
            return Some(c.clone());
        }
        c.state = state;
        c.updated_at_ms = self.clock.unix_ms();
        let settled = c.clone();
        drop(c);
        self.events.publish(EventKind::Command(settled.clone()));
        Some(settled)
    }

    /// One command.
    pub(super) fn get(&self, id: &str) -> Option<TrackedCommand> {
        self.by_id.get(id).map(|c| c.clone())
    }

    /// Settles the oldest pending `kind` command for `imsi` from a radio outcome.
    fn radio_outcome(&self, imsi: Imsi, command: RadioCommand, outcome: RadioOutcome) {
        let kind = match (command, outcome) {
            (RadioCommand::Inhibit, _) => CommandKind::Inhibit,
            (RadioCommand::Enable, _) => CommandKind::Enable,
            // A check that could not be sent is settled by the one who asked for it, at
            // once: this event may not be its (another check of the unit may be pending).
            (RadioCommand::Check, RadioOutcome::NotSent) => return,
            (RadioCommand::Check, _) => CommandKind::Check,
        };
        let oldest = self
            .by_id
            .iter()
            .filter(|c| c.imsi == imsi && c.kind == kind && c.state == CommandState::Pending)
            .min_by_key(|c| c.created_at_ms)
            .map(|c| c.id.clone());
        if let Some(id) = oldest {
            let state = match outcome {
                RadioOutcome::Acknowledged => CommandState::Acknowledged,
                RadioOutcome::Unacknowledged => CommandState::TimedOut,
                RadioOutcome::NotSent => CommandState::Failed {
                    reason: "the unit is not on the air: it is refused service when it next registers".into(),
                },
            };
            self.settle(&id, state);
        }
    }

    /// Settles the radio commands it tracks as their outcomes are published, from now on.
    pub(super) fn follow(self: &Arc<Self>) {
        let log = Arc::downgrade(self);
        self.events.observe(move |kind| {
            if let EventKind::RadioCommand {
                imsi,
                command,
                outcome,
            } = kind
            {
                if let Some(log) = log.upgrade() {
                    log.radio_outcome(*imsi, *command, *outcome);
                }
            }
        });
    }
}
