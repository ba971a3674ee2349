//! Who may take part in the link handshake (`PROTOCOL.md §3.2`): a budget of places for
//! connections that have not proven a site's key yet, a share of it per source, and which
//! connection gives up its place when a newcomer needs one. Also the tally of handshakes
//! that ended without a link, so that a flood is logged as a few summary lines.
//!
//! Pure bookkeeping: no IO, no clock. The link server holds both behind a mutex.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Where a connection comes from, for the per-source share: an IPv4 address, or the /64
/// prefix of an IPv6 address (one host commonly holds a whole /64, so counting single
/// IPv6 addresses would let it take as many places as it likes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a peer address; an IPv4-mapped IPv6 address counts as the IPv4 one.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => Source(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX)))),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// How far a handshaking connection got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Accepted; no `LINK_HELLO` for a known site yet.
    Silent,
    /// Sent `LINK_HELLO` for a known site and was sent `LINK_CHALLENGE`.
    Challenged,
}

/// The connections in the handshake, by source and in accept order. `T` is what the
/// server needs to tell an evicted connection (a cancellation token).
pub struct Admission<T> {
    max_total: usize,
    max_per_source: usize,
    total: usize,
    /// Per source, its handshaking connections by id (ids grow with accept order).
    by_source: HashMap<Source, BTreeMap<u64, (Stage, T)>>,
}

impl<T> Admission<T> {
    /// At most `max_total` connections in the handshake, `max_per_source` from one
    /// source; both at least 1.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Admission {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            total: 0,
            by_source: HashMap::new(),
        }
    }

    /// Connections in the handshake now.
    pub fn pending(&self) -> usize {
        self.total
    }

    /// Gives connection `id` (larger than every id admitted before) from `src` a place
    /// in the handshake. A newcomer always gets one: if its source is at its share, one
    /// of that source's connections is evicted; else, if the budget is full, one of the
    /// source holding the most places. Within a source the oldest silent connection goes
    /// first, then the oldest challenged one. Returns the evicted connection's handle.
    pub fn admit(&mut self, id: u64, src: Source, handle: T) -> Option<T> {
        let own = self.by_source.get(&src).map_or(0, BTreeMap::len);
        let victim_src = if own >= self.max_per_source {
            Some(src)
        } else if self.total >= self.max_total {
            self.heaviest()
        } else {
            None
        };
        let evicted = victim_src.and_then(|s| self.evict_from(s));
        self.by_source
            .entry(src)
            .or_default()
            .insert(id, (Stage::Silent, handle));
        self.total += 1;
        evicted
    }

    /// Connection `id` of `src` was sent `LINK_CHALLENGE`: it is evicted after the
    /// silent ones of its source.
    pub fn challenged(&mut self, id: u64, src: Source) {
        if let Some((stage, _)) = self.by_source.get_mut(&src).and_then(|m| m.get_mut(&id)) {
            *stage = Stage::Challenged;
        }
    }

    /// Connection `id` of `src` left the handshake (linked or failed). `false` if it had
    /// no place (it was evicted).
    pub fn finish(&mut self, id: u64, src: Source) -> bool {
        let Some(m) = self.by_source.get_mut(&src) else {
            return false;
        };
        let found = m.remove(&id).is_some();
        if m.is_empty() {
            self.by_source.remove(&src);
        }
        if found {
            self.total -= 1;
        }
        found
    }

    /// The source with the most places; of equals, the one with the oldest connection.
    fn heaviest(&self) -> Option<Source> {
        self.by_source
            .iter()
            .filter_map(|(s, m)| Some((m.len(), std::cmp::Reverse(*m.keys().next()?), *s)))
            .max()
            .map(|(_, _, s)| s)
    }

    fn evict_from(&mut self, src: Source) -> Option<T> {
        let m = self.by_source.get_mut(&src)?;
        let id = m
            .iter()
            .find(|(_, (stage, _))| *stage == Stage::Silent)
            .or_else(|| m.iter().next())
            .map(|(id, _)| *id)?;
        let (_, handle) = m.remove(&id)?;
        if m.is_empty() {
            self.by_source.remove(&src);
        }
        self.total -= 1;
        Some(handle)
    }
}

/// Most sources tallied by name in one period; the rest are counted together.
const MAX_SOURCES_NAMED: usize = 1024;

/// Handshakes that ended without a link, per source, over one logging period.
#[derive(Default)]
pub struct Refusals {
    by_source: HashMap<Source, Tally>,
    others: Tally,
}

/// Refusals of one source (or of the sources past [`MAX_SOURCES_NAMED`]).
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// How many in the period.
    pub count: u64,
    /// How many per reason (a cause name, or "closed by peer").
    pub reasons: BTreeMap<String, u64>,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (reason, n)) in self.reasons.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{reason}: {n}")?;
        }
        Ok(())
    }
}

impl Tally {
    fn add(&mut self, reason: &str) {
        self.count += 1;
        match self.reasons.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                self.reasons.insert(reason.to_string(), 1);
            }
        }
    }
}

impl Refusals {
    /// Counts a handshake of `src` that ended for `reason`. `true` if it is the first
    /// from `src` this period: that one is worth a log line of its own, the rest go into
    /// the summary.
    pub fn record(&mut self, src: Source, reason: &str) -> bool {
        if let Some(t) = self.by_source.get_mut(&src) {
            t.add(reason);
            return false;
        }
        if self.by_source.len() >= MAX_SOURCES_NAMED {
            self.others.add(reason);
            return false;
        }
        self.by_source.entry(src).or_default().add(reason);
        true
    }

    /// Ends the period: the sources with more refusals than the one logged in full,
    /// most first, and the tally of the sources not named (count 0 if none); then starts
    /// afresh.
    pub fn take(&mut self) -> (Vec<(Source, Tally)>, Tally) {
        let mut named: Vec<(Source, Tally)> = std::mem::take(&mut self.by_source)
            .into_iter()
            .filter(|(_, t)| t.count > 1)
            .collect();
        named.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        (named, std::mem::take(&mut self.others))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(n: u8) -> Source {
        Source::of(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), src(1));
    }

    #[test]
    fn a_source_at_its_share_gives_up_its_oldest_silent_connection() {
        let mut a = Admission::new(100, 3);
        assert_eq!(a.admit(1, src(1), 1), None);
        assert_eq!(a.admit(2, src(1), 2), None);
        assert_eq!(a.admit(3, src(1), 3), None);
        assert_eq!(a.admit(4, src(2), 4), None);
        a.challenged(1, src(1));
        // 1 is challenged: the oldest silent one (2) goes.
        assert_eq!(a.admit(5, src(1), 5), Some(2));
        assert_eq!(a.admit(6, src(1), 6), Some(3));
        a.challenged(5, src(1));
        a.challenged(6, src(1));
        // No silent one left: the oldest challenged one goes.
        assert_eq!(a.admit(7, src(1), 7), Some(1));
        assert_eq!(a.pending(), 4);
        assert!(!a.finish(2, src(1)), "an evicted connection has no place");
        assert!(a.finish(4, src(2)));
        assert_eq!(a.pending(), 3);
    }

    #[test]
    fn a_full_budget_takes_from_the_source_holding_the_most() {
        let mut a = Admission::new(4, 4);
        for id in 1..=3 {
            assert_eq!(a.admit(id, src(1), id), None);
        }
        assert_eq!(a.admit(4, src(2), 4), None);
        // Full: a third source's newcomer takes a place of source 1, never source 2's.
        assert_eq!(a.admit(5, src(3), 5), Some(1));
        assert_eq!(a.admit(6, src(4), 6), Some(2));
        // Now every source holds one: the oldest connection goes.
        assert_eq!(a.admit(7, src(5), 7), Some(3));
        assert_eq!(a.admit(8, src(5), 8), Some(4));
        assert_eq!(a.pending(), 4);
    }

    #[test]
    fn places_never_exceed_the_budget_or_the_share() {
        let mut a = Admission::new(16, 5);
        let of = |id: u64| src((id * 7 % 11) as u8);
        let mut live = std::collections::HashSet::new();
        for id in 2..10_000u64 {
            if id % 3 == 0 {
                a.challenged(id - 2, of(id - 2));
            }
            if let Some(v) = a.admit(id, of(id), id) {
                assert!(live.remove(&v), "evicted {v} twice");
            }
            live.insert(id);
            if id % 5 == 0 && a.finish(id / 2, of(id / 2)) {
                assert!(live.remove(&(id / 2)));
            }
            assert!(a.pending() <= 16);
            assert_eq!(a.pending(), live.len());
            assert!(a.by_source.values().all(|m| m.len() <= 5));
        }
    }

    #[test]
    fn refusals_log_the_first_of_a_source_and_summarise_the_rest() {
        let mut r = Refusals::default();
        assert!(r.record(src(1), "connection limit"));
        for _ in 0..4 {
            assert!(!r.record(src(1), "connection limit"));
        }
        assert!(!r.record(src(1), "handshake timeout"));
        assert!(r.record(src(2), "link auth failed"));
        let (named, others) = r.take();
        assert_eq!(named.len(), 1, "source 2 was logged in full already");
        assert_eq!(named[0].0, src(1));
        assert_eq!(named[0].1.count, 6);
        assert_eq!(
            named[0].1.to_string(),
            "connection limit: 5, handshake timeout: 1"
        );
        assert_eq!(others.count, 0);
        // A new period starts afresh.
        assert!(r.record(src(1), "connection limit"));
    }

    #[test]
    fn refusals_bound_the_sources_they_name() {
        let mut r = Refusals::default();
        for n in 0..(MAX_SOURCES_NAMED as u32 + 10) {
            r.record(Source::of(IpAddr::from(n.to_be_bytes())), "handshake timeout");
        }
        let (named, others) = r.take();
        assert!(named.is_empty());
        assert_eq!(others.count, 10);
    }
}
