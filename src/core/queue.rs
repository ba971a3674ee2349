//! One site's busy queue: the requests waiting for a slot there, and the started
//! wide-area calls waiting to join the site.
//!
//! Entries are served by class (higher first: 16 = emergency, then the priority level)
//! and, within a class, by arrival. A request's position counts the requests ahead of
//! it only: a call waiting to join holds no position, so its coming and going never
//! moves anyone. The queue remembers the position each request's gateway was last told,
//! so that after a change only the requests that really moved are told again.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::protocol::{CallId, CallType, Target, Unit};

/// A request waiting in a site's busy queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// Its position, 1 = next (what its gateway was last told).
    pub position: usize,
    /// The caller.
    pub caller: Unit,
    /// The request's transaction on the site's link.
    pub txn: u32,
    /// Kind of call asked for.
    pub call_type: CallType,
    /// Whom.
    pub target: Target,
    /// Its class: 16 = emergency, else the caller's priority level.
    pub class: u8,
    /// When it was asked for, monotonic ms.
    pub requested_ms: i64,
}

/// What the busy queue shows operators of a request it holds ([`BusyQueue::view`]).
pub trait QueuedRequest {
    /// The caller.
    fn caller(&self) -> Unit;
    /// The request's transaction on its site's link.
    fn txn(&self) -> u32;
    /// Kind of call asked for.
    fn call_type(&self) -> CallType;
    /// Whom.
    fn target(&self) -> Target;
}

/// Where an entry waits: a higher class first, then a lower `seq` (earlier arrival).
/// The caller hands out the `seq` numbers; a key is unique while its entry waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey(Reverse<u8>, u64);

impl QueueKey {
    /// The key of an entry of `class` that arrived as number `seq`.
    pub fn new(class: u8, seq: u64) -> Self {
        QueueKey(Reverse(class), seq)
    }

    /// Its class.
    pub fn class(self) -> u8 {
        self.0 .0
    }
}

/// An entry taken out of the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting<R> {
    /// A new call's request, asked for at `requested_ms` (monotonic ms).
    New {
        /// The request.
        req: R,
        /// When it was asked for.
        requested_ms: i64,
    },
    /// A started wide-area call that waited for a slot at this site.
    Join(CallId),
}

#[derive(Clone, Debug)]
enum Entry<R> {
    /// `told` is the position its gateway last heard (`QUEUED` or `QUEUE_UPDATE`).
    New {
        req: R,
        requested_ms: i64,
        told: usize,
    },
    Join(CallId),
}

impl<R> Entry<R> {
    fn is_request(&self) -> bool {
        matches!(self, Entry::New { .. })
    }

    fn into_waiting(self) -> Waiting<R> {
        match self {
            Entry::New {
                req, requested_ms, ..
            } => Waiting::New { req, requested_ms },
            Entry::Join(call) => Waiting::Join(call),
        }
    }
}

/// The busy queue of one site, holding requests of type `R`.
///
/// Promises: entries come out in key order ([`QueueKey`]); a request's position is 1 +
/// the requests (not joins) ahead of it; after [`BusyQueue::moved`] every request's
/// last told position is its position.
#[derive(Clone, Debug)]
pub struct BusyQueue<R> {
    entries: BTreeMap<QueueKey, Entry<R>>,
}

impl<R> Default for BusyQueue<R> {
    fn default() -> Self {
        BusyQueue {
            entries: BTreeMap::new(),
        }
    }
}

impl<R> BusyQueue<R> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries waiting: requests and calls waiting to join.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The classes of the waiting entries, in serving order.
    pub fn classes(&self) -> impl Iterator<Item = u8> + '_ {
        self.entries.keys().map(|k| k.class())
    }

    /// The key of the entry served last.
    pub fn last(&self) -> Option<QueueKey> {
        self.entries.keys().next_back().copied()
    }

    /// Adds a request at `key` and returns its position (1 = next), which counts as
    /// told: the caller tells its gateway (`QUEUED`). The requests behind it have moved
    /// down one; [`BusyQueue::moved`] reports them.
    pub fn insert_request(&mut self, key: QueueKey, req: R, requested_ms: i64) -> usize {
        let position = self.entries.range(..key).filter(|(_, e)| e.is_request()).count() + 1;
        self.entries.insert(
            key,
            Entry::New {
                req,
                requested_ms,
                told: position,
            },
        );
        position
    }

    /// Adds the started call `call`, waiting to join this site, at `key`. It holds no
    /// position and moves no request.
    pub fn insert_join(&mut self, key: QueueKey, call: CallId) {
        self.entries.insert(key, Entry::Join(call));
    }

    /// Takes out the entry at `key`.
    pub fn remove(&mut self, key: QueueKey) -> Option<Waiting<R>> {
        self.entries.remove(&key).map(Entry::into_waiting)
    }

    /// Takes out the entry to serve next.
    pub fn pop_first(&mut self) -> Option<Waiting<R>> {
        self.entries.pop_first().map(|(_, e)| e.into_waiting())
    }

    /// Takes out the first request matching `pred`, with when it was asked for.
    pub fn remove_request(&mut self, pred: impl Fn(&R) -> bool) -> Option<(R, i64)> {
        let key = self.entries.iter().find_map(|(k, e)| match e {
            Entry::New { req, .. } if pred(req) => Some(*k),
            _ => None,
        })?;
        match self.entries.remove(&key)?.into_waiting() {
            Waiting::New { req, requested_ms } => Some((req, requested_ms)),
            Waiting::Join(_) => None,
        }
    }

    /// Takes out every request matching `pred`, in serving order, with when each was
    /// asked for.
    pub fn remove_requests(&mut self, pred: impl Fn(&R) -> bool) -> Vec<(R, i64)> {
        let keys: Vec<QueueKey> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::New { req, .. } if pred(req)))
            .map(|(k, _)| *k)
            .collect();
        keys.iter()
            .filter_map(|k| match self.entries.remove(k)?.into_waiting() {
                Waiting::New { req, requested_ms } => Some((req, requested_ms)),
                Waiting::Join(_) => None,
            })
            .collect()
    }

    /// Drops `call`'s waits to join this site (the call ended).
    pub fn remove_joins(&mut self, call: CallId) {
        if !self.entries.is_empty() {
            self.entries
                .retain(|_, e| !matches!(e, Entry::Join(c) if *c == call));
        }
    }

    /// Empties the queue; yields its requests in serving order, with when each was
    /// asked for (the waits to join are dropped).
    pub fn take_requests(&mut self) -> impl Iterator<Item = (R, i64)> {
        std::mem::take(&mut self.entries)
            .into_values()
            .filter_map(|e| match e {
                Entry::New {
                    req, requested_ms, ..
                } => Some((req, requested_ms)),
                Entry::Join(_) => None,
            })
    }

    /// Every waiting request, in serving order, to change in place.
    pub fn requests_mut(&mut self) -> impl Iterator<Item = &mut R> + '_ {
        self.entries.values_mut().filter_map(|e| match e {
            Entry::New { req, .. } => Some(req),
            Entry::Join(_) => None,
        })
    }

    /// Calls `tell` with each request whose position changed (up or down) since it was
    /// last told, and its new position, in serving order; they count as told.
    pub fn moved(&mut self, mut tell: impl FnMut(&R, usize)) {
        let requests = self.entries.values_mut().filter(|e| e.is_request());
        for (i, e) in requests.enumerate() {
            if let Entry::New { req, told, .. } = e {
                if *told != i + 1 {
                    *told = i + 1;
                    tell(req, i + 1);
                }
            }
        }
    }

    /// The first request whose last told position is not its position, with the told
    /// and the real one; `None` when every request knows where it is.
    pub fn first_untold(&self) -> Option<(&R, usize, usize)> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::New { req, told, .. } => Some((req, *told)),
                Entry::Join(_) => None,
            })
            .enumerate()
            .find_map(|(i, (req, told))| (told != i + 1).then_some((req, told, i + 1)))
    }
}

impl<R: QueuedRequest> BusyQueue<R> {
    /// The waiting requests in serving order, as operators see them (calls waiting to
    /// join are not listed: they hold no position).
    pub fn view(&self) -> Vec<QueueEntry> {
        self.entries
            .iter()
            .filter_map(|(key, e)| match e {
                Entry::New {
                    req,
                    requested_ms,
                    told,
                } => Some(QueueEntry {
                    position: *told,
                    caller: req.caller(),
                    txn: req.txn(),
                    call_type: req.call_type(),
                    target: req.target(),
                    class: key.class(),
                    requested_ms: *requested_ms,
                }),
                Entry::Join(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FleetId, MemberId};

    /// A request known by its transaction.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Req(u32);

    impl QueuedRequest for Req {
        fn caller(&self) -> Unit {
            Unit {
                fleet: FleetId::new(1).unwrap(),
                member: MemberId::new(self.0 as u16).unwrap(),
            }
        }
        fn txn(&self) -> u32 {
            self.0
        }
        fn call_type(&self) -> CallType {
            CallType::Private
        }
        fn target(&self) -> Target {
            Target::Unit(self.caller())
        }
    }

    fn call(n: u32) -> CallId {
        CallId::new(n).unwrap()
    }

    fn order(q: &BusyQueue<Req>) -> Vec<u32> {
        q.view().iter().map(|e| e.txn).collect()
    }

    fn moved(q: &mut BusyQueue<Req>) -> Vec<(u32, usize)> {
        let mut v = Vec::new();
        q.moved(|r, p| v.push((r.0, p)));
        v
    }

    #[test]
    fn served_by_class_then_arrival() {
        let mut q = BusyQueue::new();
        assert_eq!(q.insert_request(QueueKey::new(0, 1), Req(1), 10), 1);
        assert_eq!(q.insert_request(QueueKey::new(5, 2), Req(2), 20), 1);
        assert_eq!(q.insert_request(QueueKey::new(16, 3), Req(3), 30), 1);
        assert_eq!(q.insert_request(QueueKey::new(5, 4), Req(4), 40), 3);
        assert_eq!(q.insert_request(QueueKey::new(0, 5), Req(5), 50), 5);
        assert_eq!(order(&q), vec![3, 2, 4, 1, 5]);
        assert_eq!(q.classes().collect::<Vec<_>>(), vec![16, 5, 5, 0, 0]);
        assert_eq!(q.last(), Some(QueueKey::new(0, 5)));
        assert_eq!(q.last().map(QueueKey::class), Some(0));
        let served: Vec<_> = std::iter::from_fn(|| q.pop_first()).collect();
        assert_eq!(
            served,
            [3, 2, 4, 1, 5]
                .map(|n| Waiting::New {
                    req: Req(n),
                    requested_ms: i64::from(n) * 10
                })
                .to_vec()
        );
        assert!(q.is_empty());
    }

    #[test]
    fn positions_count_requests_only() {
        let mut q = BusyQueue::new();
        q.insert_join(QueueKey::new(16, 1), call(100));
        assert_eq!(q.insert_request(QueueKey::new(3, 2), Req(1), 0), 1);
        q.insert_join(QueueKey::new(3, 3), call(101));
        assert_eq!(q.insert_request(QueueKey::new(3, 4), Req(2), 0), 2);
        assert_eq!(q.len(), 4);
        // Joins are not shown and move nobody, coming or going.
        let view = q.view();
        assert_eq!(
            view.iter()
                .map(|e| (e.txn, e.position, e.class))
                .collect::<Vec<_>>(),
            vec![(1, 1, 3), (2, 2, 3)]
        );
        assert_eq!(moved(&mut q), vec![]);
        q.remove_joins(call(101));
        assert_eq!(q.len(), 3);
        assert_eq!(moved(&mut q), vec![]);
        assert_eq!(q.pop_first(), Some(Waiting::Join(call(100))));
        assert_eq!(moved(&mut q), vec![]);
        assert_eq!(q.first_untold(), None);
    }

    #[test]
    fn only_the_requests_that_moved_are_told() {
        let mut q = BusyQueue::new();
        for n in 1..=4 {
            q.insert_request(QueueKey::new(0, u64::from(n)), Req(n), 0);
        }
        assert_eq!(moved(&mut q), vec![]);
        // An emergency goes ahead of everyone: all four moved down one.
        assert_eq!(q.insert_request(QueueKey::new(16, 5), Req(5), 0), 1);
        assert_eq!(q.first_untold(), Some((&Req(1), 1, 2)));
        assert_eq!(moved(&mut q), vec![(1, 2), (2, 3), (3, 4), (4, 5)]);
        assert_eq!(q.first_untold(), None);
        // The third leaves: only those behind it move up.
        assert_eq!(q.remove_request(|r| r.0 == 2), Some((Req(2), 0)));
        assert_eq!(moved(&mut q), vec![(3, 3), (4, 4)]);
        // Nothing changed: nobody is told again.
        assert_eq!(moved(&mut q), vec![]);
        assert_eq!(
            q.view().iter().map(|e| (e.txn, e.position)).collect::<Vec<_>>(),
            vec![(5, 1), (1, 2), (3, 3), (4, 4)]
        );
    }

    #[test]
    fn removals_take_requests_only() {
        let mut q = BusyQueue::new();
        q.insert_request(QueueKey::new(0, 1), Req(1), 1);
        q.insert_join(QueueKey::new(0, 2), call(7));
        q.insert_request(QueueKey::new(0, 3), Req(2), 3);
        q.insert_request(QueueKey::new(0, 4), Req(3), 4);
        assert_eq!(q.remove_request(|r| r.0 == 9), None);
        assert_eq!(q.remove_requests(|r| r.0 != 2), vec![(Req(1), 1), (Req(3), 4)]);
        for r in q.requests_mut() {
            r.0 = 20;
        }
        assert_eq!(q.remove(QueueKey::new(0, 2)), Some(Waiting::Join(call(7))));
        q.insert_join(QueueKey::new(0, 5), call(8));
        assert_eq!(q.take_requests().collect::<Vec<_>>(), vec![(Req(20), 3)]);
        assert!(q.is_empty());
    }
}
