//! What happens in a running controller, told to whoever listens (operator API,
//! console, tests, the standby): a numbered stream of typed events with a bounded
//! backlog.
//!
//! - Every event gets the next sequence number (from 1) and the time it happened.
//! - A listener subscribes from "now" (after taking a snapshot through the handle) or
//!   resumes after the last sequence number it saw, as long as the backlog still holds
//!   the events after it; otherwise it is told to take a new snapshot.
//! - Publishing never waits for a listener: one that falls more than the backlog behind
//!   is told it lagged ([`Lagged`]) and must take a new snapshot.
//! - Parts of the controller that act on a few kinds of event observe the bus
//!   ([`EventBus::observe`]): called by the publisher for every event, they pick theirs
//!   out at once instead of keeping a task woken for each one.
//! - Once the controller has stopped it closes the bus ([`EventBus::close`]): every
//!   listener is given what was published before, then the end of the stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{broadcast, watch};

use crate::clock::Clock;
use crate::core::messaging::Reply;
use crate::core::registration::UnitEvent;
use crate::core::trunking::CallEvent;
use crate::protocol::{Imsi, SiteId, Target, Unit};

/// One numbered event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its place in the stream, from 1, without gaps.
    pub seq: u64,
    /// When it happened, Unix ms.
    pub at_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// A command sent over the air to a radio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RadioCommand {
    /// `INHIBIT` (stun).
    Inhibit,
    /// `ENABLE` (revive).
    Enable,
    /// `RADIO_CHECK` (is the unit reachable).
    Check,
}

/// How a radio command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RadioOutcome {
    /// The unit's gateway acknowledged it.
    Acknowledged,
    /// Sent, never acknowledged after every attempt.
    Unacknowledged,
    /// Not sent: the unit was not on the air (or its site not connected).
    NotSent,
}

/// A messaging service (`PROTOCOL.md §5.3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A call alert (page).
    CallAlert,
    /// A status message.
    Status {
        /// Its code.
        code: u16,
    },
    /// Short data (its payload is not carried in the event).
    ShortData,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Registrations, moves, departures and affiliations (from the registrar).
    Unit(UnitEvent),
    /// The same subscriber was active at two sites within the clone window.
    CloneSuspected {
        /// The unit.
        imsi: Imsi,
        /// What the registrar saw (sites, times).
        detail: String,
    },
    /// Calls, queues and slots (from the trunking core).
    Call(CallEvent),
    /// An inhibit, enable or radio check ended.
    RadioCommand {
        /// The unit.
        imsi: Imsi,
        /// Which command.
        command: RadioCommand,
        /// How it ended.
        outcome: RadioOutcome,
    },
    /// A site's link came up.
    LinkUp {
        /// The site.
        site: SiteId,
    },
    /// A site's link went down.
    LinkDown {
        /// The site.
        site: SiteId,
    },
    /// A subscriber's record changed (inhibited, enabled, authorised differently).
    SubscriberChanged {
        /// The subscriber.
        imsi: Imsi,
        /// Its dispatch address.
        unit: Unit,
        /// Who changed it.
        actor: String,
        /// What changed, e.g. `inhibited`, `priority=5`.
        change: String,
    },
    /// A call alert, status or short data sent from a console was answered.
    Message {
        /// Which service.
        kind: MessageKind,
        /// The dispatcher's unit address it was sent from.
        from: Unit,
        /// To whom.
        to: Target,
        /// The operator who sent it.
        actor: String,
        /// How it ended: what a radio would have been told.
        outcome: Reply,
    },
    /// A command to a radio that an operator follows by id was opened or settled.
    Command(crate::controller::TrackedCommand),
    /// An alarm was raised (or raised again), acknowledged or cleared.
    Alarm {
        /// What happened to it.
        change: crate::controller::AlarmChange,
        /// The alarm as it is now.
        alarm: crate::controller::Alarm,
    },
    /// A system parameter was changed; it is in force for the next request.
    ParameterChanged {
        /// Its name, e.g. `trunking.hang_time_ms`.
        name: String,
        /// Its new value, as text.
        value: String,
        /// Who changed it.
        actor: String,
    },
}

/// A part of the controller that observes every event ([`EventBus::observe`]).
type Observer = Arc<dyn Fn(&EventKind) + Send + Sync>;

/// A listener fell more than the backlog behind; it must take a new snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event listener lagged: events after {last_seen} are no longer held; take a new snapshot")]
pub struct Lagged {
    /// The last event it was given.
    pub last_seen: u64,
}

struct Ring {
    next_seq: u64,
    backlog: VecDeque<Arc<Event>>,
}

/// The stream of events of one controller; shared, cheap to publish to.
pub struct EventBus {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
    /// Set once the controller has stopped.
    closed: watch::Sender<bool>,
    /// Called with every event published.
    observers: Mutex<Arc<[Observer]>>,
    capacity: usize,
    clock: Clock,
}

impl EventBus {
    /// A bus keeping the last `capacity` events for listeners that resume (at least 1),
    /// stamping each with the time on `clock`.
    pub fn new(capacity: usize, clock: Clock) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        EventBus {
            ring: Mutex::new(Ring {
                next_seq: 1,
                backlog: VecDeque::with_capacity(capacity),
            }),
            tx,
            closed: watch::Sender::new(false),
            observers: Mutex::new(Arc::new([])),
            capacity,
            clock,
        }
    }

    /// Has `f` called with every event published from now on, by the publisher, once the
    /// bus has let go of its own lock. The publisher may hold locks of its own (the
    /// trunking core's), so `f` must be quick, must not wait and must not take a lock
    /// that is held while publishing: it picks out the events it wants and hands them on.
    pub fn observe(&self, f: impl Fn(&EventKind) + Send + Sync + 'static) {
        let mut observers = self.observers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<Observer> = observers.iter().cloned().collect();
        all.push(Arc::new(f));
        *observers = all.into();
    }

    /// Ends every subscription, past and future, once it has been given what was
    /// published before (the controller has stopped: nothing more will be).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes an event that happened now; returns its number.
    pub fn publish(&self, kind: EventKind) -> u64 {
        let at_ms = self.clock.unix_ms();
        let mut ring = self.ring();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let event = Arc::new(Event { seq, at_ms, kind });
        if ring.backlog.len() == self.capacity {
            ring.backlog.pop_front();
        }
        ring.backlog.push_back(event.clone());
        // Sent with the ring held: listeners get the events in their order. No listener
        // is not an error.
        let _ = self.tx.send(event.clone());
        drop(ring);
        let observers = self
            .observers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for o in observers.iter() {
            o(&event.kind);
        }
        seq
    }

    /// The number of the last event published (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.ring().next_seq - 1
    }

    /// Listens from now on: the first event it yields is the one after
    /// [`Subscription::after`].
    pub fn subscribe(&self) -> Subscription {
        let ring = self.ring();
        Subscription {
            replay: VecDeque::new(),
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            last: ring.next_seq - 1,
        }
    }

    /// Listens from the event after `after`, replaying those the backlog still holds;
    /// `Err` if it no longer holds them all (or `after` was never published): take a new
    /// snapshot instead.
    pub fn resume(&self, after: u64) -> Result<Subscription, Lagged> {
        let ring = self.ring();
        let oldest = ring.backlog.front().map_or(ring.next_seq, |e| e.seq);
        if after + 1 < oldest || after >= ring.next_seq {
            return Err(Lagged { last_seen: after });
        }
        Ok(Subscription {
            replay: ring.backlog.iter().filter(|e| e.seq > after).cloned().collect(),
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            last: after,
        })
    }
}

/// One listener's place in the stream.
pub struct Subscription {
    replay: VecDeque<Arc<Event>>,
    rx: broadcast::Receiver<Arc<Event>>,
    closed: watch::Receiver<bool>,
    last: u64,
}

impl Subscription {
    /// The number of the last event this listener was given (or started after).
    pub fn after(&self) -> u64 {
        self.last
    }

    /// The next event, waiting for it; `Err` once this listener lagged (every later
    /// call says so too); `None` once the bus is closed and every event published
    /// before was given.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        loop {
            let event = match self.replay.pop_front() {
                Some(e) => e,
                None => match tokio::select! {
                    biased;
                    r = self.rx.recv() => r,
                    _ = self.closed.wait_for(|c| *c) => return None,
                } {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some(Err(Lagged { last_seen: self.last }));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            // The live channel also carries what the replay gave.
            if event.seq <= self.last {
                continue;
            }
            if event.seq != self.last + 1 {
                return Some(Err(Lagged { last_seen: self.last }));
            }
            self.last = event.seq;
            return Some(Ok(event));
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        futures::FutureExt::now_or_never(self.next()).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SiteId;

    fn up(n: u16) -> EventKind {
        EventKind::LinkUp {
            site: SiteId::new(n).unwrap(),
        }
    }

    fn seqs(sub: &mut Subscription) -> Vec<u64> {
        std::iter::from_fn(|| sub.try_next())
            .map(|r| r.unwrap().seq)
            .collect()
    }

    #[tokio::test]
    async fn a_closed_bus_gives_what_was_published_then_ends_every_subscription() {
        let bus = EventBus::new(8, Clock::start());
        let mut early = bus.subscribe();
        bus.publish(up(1));
        bus.close();
        assert_eq!(early.next().await.unwrap().unwrap().seq, 1);
        assert!(early.next().await.is_none());
        let mut late = bus.resume(0).unwrap();
        assert_eq!(late.next().await.unwrap().unwrap().seq, 1);
        assert!(late.next().await.is_none());
        assert!(bus.subscribe().next().await.is_none());
    }

    #[test]
    fn numbers_events_and_resumes_from_the_backlog() {
        let bus = EventBus::new(4, Clock::start());
        let mut live = bus.subscribe();
        for i in 1..=3 {
            assert_eq!(bus.publish(up(i)), u64::from(i));
        }
        assert_eq!(seqs(&mut live), vec![1, 2, 3]);
        let mut resumed = bus.resume(1).unwrap();
        bus.publish(up(4));
        assert_eq!(seqs(&mut resumed), vec![2, 3, 4]);
        assert_eq!(resumed.after(), 4);
        // Nothing missed, nothing twice.
        assert_eq!(seqs(&mut live), vec![4]);
    }

    #[test]
    fn resuming_beyond_the_backlog_asks_for_a_snapshot() {
        let bus = EventBus::new(2, Clock::start());
        for i in 1..=5 {
            bus.publish(up(i));
        }
        // 3 is gone: resuming after 2 would miss it.
        assert_eq!(bus.resume(2).err(), Some(Lagged { last_seen: 2 }));
        assert_eq!(seqs(&mut bus.resume(3).unwrap()), vec![4, 5]);
        // A number never published.
        assert!(bus.resume(9).is_err());
        assert!(bus.resume(5).is_ok());
    }

    #[test]
    fn a_slow_listener_is_told_it_lagged_and_never_blocks_the_publisher() {
        let bus = EventBus::new(2, Clock::start());
        let mut slow = bus.subscribe();
        for i in 1..=10 {
            bus.publish(up(i));
        }
        assert_eq!(slow.try_next(), Some(Err(Lagged { last_seen: 0 })));
        assert_eq!(bus.last_seq(), 10);
    }
}
