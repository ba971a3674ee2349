//! The VLR: units on the air now, in memory, reachable by IMSI and by TMSI, plus the
//! authentication challenges that are waiting for their answer.
//!
//! The registration state machine (`crate::core::registration::Registrar`) owns the
//! VLR and is the only thing that changes it; every other service reads it through a
//! [`VlrView`], which has no way to change it. The VLR stays a concurrent map because
//! link sessions register units in parallel.
//!
//! Sizes matter here (one entry per registered unit): an entry is a fixed-size value
//! with no heap allocation; see BENCHMARKS.md for the measured bytes per unit.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::protocol::{FleetId, Imsi, SiteId, TalkgroupId, TalkgroupList, Tmsi};

/// A unit's affiliation, stored without heap allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affiliation {
    /// Primary talkgroup.
    pub primary: TalkgroupId,
    /// Up to three secondary talkgroups.
    pub secondary: [Option<TalkgroupId>; 3],
}

impl Affiliation {
    /// From the wire list (which holds at most three secondaries).
    pub fn from_list(l: &TalkgroupList) -> Self {
        Self::from_slice(l.primary(), l.secondary())
    }

    /// `primary` plus the first three of `secondary`.
    pub fn from_slice(primary: TalkgroupId, secondary: &[TalkgroupId]) -> Self {
        let mut s = [None; 3];
        for (slot, tg) in s.iter_mut().zip(secondary) {
            *slot = Some(*tg);
        }
        Affiliation {
            primary,
            secondary: s,
        }
    }

    /// As the wire list.
    pub fn to_list(&self) -> TalkgroupList {
        TalkgroupList::new(self.primary, self.secondary.iter().flatten().copied().collect())
            .expect("an Affiliation always satisfies the TalkgroupList invariant")
    }

    /// Every talkgroup, primary first.
    pub fn all(&self) -> impl Iterator<Item = TalkgroupId> + '_ {
        std::iter::once(self.primary).chain(self.secondary.iter().flatten().copied())
    }
}

/// One registered unit. `Debug` leaves out the session keys.
#[derive(Clone, PartialEq, Eq)]
pub struct VlrUnit {
    /// Its current temporary identity.
    pub tmsi: Tmsi,
    /// The site it is registered at.
    pub site: SiteId,
    /// Its fleet (its talkgroups are the fleet's).
    pub fleet: FleetId,
    /// Its talkgroups.
    pub affiliation: Affiliation,
    /// When it was last heard from, on the controller's monotonic clock (ms).
    pub last_activity_ms: i64,
    /// Session keys from the last authentication (Milenage f3 CK, f4 IK).
    pub ck: [u8; 16],
    /// See `ck`.
    pub ik: [u8; 16],
}

/// What the pending challenge is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Procedure {
    /// Registration (power-on); answered with `REG_ACCEPT`.
    Register,
    /// Location update of a registered unit; answered with `LOCATION_ACCEPT`.
    LocationUpdate,
}

/// A challenge sent and not yet answered, keyed by site and transaction id. `Debug`
/// leaves out the expected response and the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The subscriber being authenticated.
    pub imsi: Imsi,
    /// Expected response (Milenage f2).
    pub xres: [u8; 8],
    /// Session keys to keep if the response is right.
    pub ck: [u8; 16],
    /// See `ck`.
    pub ik: [u8; 16],
    /// When it stops being answerable, monotonic ms.
    pub expires_ms: i64,
    /// What to answer on success.
    pub procedure: Procedure,
}

impl std::fmt::Debug for VlrUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VlrUnit")
            .field("tmsi", &self.tmsi)
            .field("site", &self.site)
            .field("fleet", &self.fleet)
            .field("affiliation", &self.affiliation)
            .field("last_activity_ms", &self.last_activity_ms)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("imsi", &self.imsi)
            .field("expires_ms", &self.expires_ms)
            .field("procedure", &self.procedure)
            .finish_non_exhaustive()
    }
}

/// Why [`Vlr::register`] did not register.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError<E> {
    /// The check refused, with its reason.
    Refused(E),
    /// No free TMSI could be drawn.
    NoTmsi,
}

/// The registry of units on the air. Its changing methods are for its owner, the
/// `Registrar`; everyone else gets a [`VlrView`].
#[derive(Default)]
pub struct Vlr {
    by_imsi: crate::protocol::IdMap<Imsi, VlrUnit>,
    by_tmsi: crate::protocol::IdMap<Tmsi, Imsi>,
    /// Per site, its challenges by transaction id.
    challenges: DashMap<SiteId, HashMap<u32, Challenge>>,
    /// How many challenges `challenges` holds in all.
    pending: AtomicUsize,
    /// Per talkgroup, how many affiliated units are registered at each site: where a
    /// wide-area call must reach.
    talkgroup_sites: DashMap<(FleetId, TalkgroupId), HashMap<SiteId, u32>>,
}

impl Vlr {
    /// An empty VLR.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registered units.
    pub fn len(&self) -> usize {
        self.by_imsi.len()
    }

    /// Whether no unit is registered.
    pub fn is_empty(&self) -> bool {
        self.by_imsi.is_empty()
    }

    /// A registered unit by IMSI.
    pub fn get(&self, imsi: &Imsi) -> Option<VlrUnit> {
        self.by_imsi.get(imsi).map(|u| u.clone())
    }

    /// The IMSI holding `tmsi` now.
    pub fn imsi_of(&self, tmsi: Tmsi) -> Option<Imsi> {
        self.by_tmsi.get(&tmsi).map(|i| *i)
    }

    /// Registers (or re-registers) a unit under a fresh TMSI drawn by `draw` (redrawn
    /// while taken; `unit.tmsi` is overwritten); the unit's previous TMSI stops working
    /// at once. `check` sees the previous entry and may adjust the new one or refuse;
    /// it runs under the IMSI's entry lock, so two registrations of one IMSI cannot both
    /// pass it unseen by each other. Returns the new TMSI and the previous entry.
    pub fn register<E>(
        &self,
        imsi: Imsi,
        mut unit: VlrUnit,
        mut draw: impl FnMut() -> Option<Tmsi>,
        check: impl FnOnce(Option<&VlrUnit>, &mut VlrUnit) -> Result<(), E>,
    ) -> Result<(Tmsi, Option<VlrUnit>), RegisterError<E>> {
        let entry = self.by_imsi.entry(imsi);
        let previous = match &entry {
            Entry::Occupied(o) => Some(o.get().clone()),
            Entry::Vacant(_) => None,
        };
        check(previous.as_ref(), &mut unit).map_err(RegisterError::Refused)?;
        let tmsi = loop {
            match self.by_tmsi.entry(draw().ok_or(RegisterError::NoTmsi)?) {
                Entry::Vacant(v) => {
                    let t = *v.key();
                    v.insert(imsi);
                    break t;
                }
                Entry::Occupied(_) => continue,
            }
        };
        unit.tmsi = tmsi;
        self.index(&unit, 1);
        entry.insert(unit);
        if let Some(p) = &previous {
            self.index(p, -1);
            self.by_tmsi.remove_if(&p.tmsi, |_, owner| *owner == imsi);
        }
        Ok((tmsi, previous))
    }

    /// Puts back a unit as it was written behind (a restart or a takeover): under its
    /// own TMSI, unless the IMSI is registered already or the TMSI is taken (then it is
    /// left out, `false`, and registers again when it next speaks).
    pub fn restore(&self, imsi: Imsi, unit: VlrUnit) -> bool {
        let Entry::Vacant(slot) = self.by_imsi.entry(imsi) else {
            return false;
        };
        match self.by_tmsi.entry(unit.tmsi) {
            Entry::Vacant(v) => {
                v.insert(imsi);
            }
            Entry::Occupied(_) => return false,
        }
        self.index(&unit, 1);
        slot.insert(unit);
        true
    }

    /// Applies `f` to a registered unit; `None` if it is not registered.
    pub fn update<R>(&self, imsi: &Imsi, f: impl FnOnce(&mut VlrUnit) -> R) -> Option<R> {
        let mut u = self.by_imsi.get_mut(imsi)?;
        let before = (u.site, u.affiliation);
        let r = f(&mut u);
        if (u.site, u.affiliation) != before {
            let mut old = u.clone();
            (old.site, old.affiliation) = before;
            self.index(&old, -1);
            self.index(&u, 1);
        }
        Some(r)
    }

    /// Removes the unit holding `tmsi` if it is registered at `site` (deregistration).
    pub fn deregister(&self, tmsi: Tmsi, site: SiteId) -> Option<(Imsi, VlrUnit)> {
        let imsi = self.imsi_of(tmsi)?;
        let (imsi, unit) = self
            .by_imsi
            .remove_if(&imsi, |_, u| u.tmsi == tmsi && u.site == site)?;
        self.index(&unit, -1);
        self.by_tmsi.remove_if(&tmsi, |_, owner| *owner == imsi);
        Some((imsi, unit))
    }

    /// Removes every unit not heard from since `cutoff_ms`, returning them.
    pub fn expire(&self, cutoff_ms: i64) -> Vec<(Imsi, VlrUnit)> {
        let stale: Vec<Imsi> = self
            .by_imsi
            .iter()
            .filter(|e| e.last_activity_ms < cutoff_ms)
            .map(|e| *e.key())
            .collect();
        let mut out = Vec::with_capacity(stale.len());
        for imsi in stale {
            if let Some((imsi, unit)) = self
                .by_imsi
                .remove_if(&imsi, |_, u| u.last_activity_ms < cutoff_ms)
            {
                self.index(&unit, -1);
                self.by_tmsi.remove_if(&unit.tmsi, |_, owner| *owner == imsi);
                out.push((imsi, unit));
            }
        }
        out
    }

    /// One page of registered units in IMSI order: at most `limit` of those after
    /// `after` that `keep` accepts. A scan of the VLR, for operators' queries.
    pub fn page(
        &self,
        after: Option<Imsi>,
        limit: usize,
        keep: impl Fn(&Imsi, &VlrUnit) -> bool,
    ) -> Vec<(Imsi, VlrUnit)> {
        let mut v: Vec<(Imsi, VlrUnit)> = self
            .by_imsi
            .iter()
            .filter(|e| after.is_none_or(|a| *e.key() > a) && keep(e.key(), e.value()))
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        v.sort_unstable_by_key(|(imsi, _)| *imsi);
        v.truncate(limit);
        v
    }

    /// The sites where at least one unit affiliated to the talkgroup is registered.
    pub fn talkgroup_sites(&self, fleet: FleetId, talkgroup: TalkgroupId) -> Vec<SiteId> {
        let mut v: Vec<SiteId> = self
            .talkgroup_sites
            .get(&(fleet, talkgroup))
            .map(|m| m.iter().filter(|(_, n)| **n > 0).map(|(s, _)| *s).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every registered unit affiliated to the talkgroup: (IMSI, TMSI, site). A scan of
    /// the VLR, for the rare group-addressed status message.
    pub fn affiliated_units(&self, fleet: FleetId, talkgroup: TalkgroupId) -> Vec<(Imsi, Tmsi, SiteId)> {
        self.by_imsi
            .iter()
            .filter(|e| e.fleet == fleet && e.affiliation.all().any(|t| t == talkgroup))
            .map(|e| (*e.key(), e.tmsi, e.site))
            .collect()
    }

    /// Adds (`+1`) or removes (`-1`) a unit's affiliations from the talkgroup index.
    fn index(&self, u: &VlrUnit, delta: i32) {
        for tg in u.affiliation.all() {
            let mut e = self.talkgroup_sites.entry((u.fleet, tg)).or_default();
            let n = e.entry(u.site).or_insert(0);
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                e.remove(&u.site);
            }
        }
    }

    /// Keeps a challenge until it is answered or swept; `false` if `max` are pending in
    /// all or `max_per_site` at `site` (a challenge for a `(site, txn)` that has one
    /// already replaces it, and is always kept).
    pub fn put_challenge(
        &self,
        site: SiteId,
        txn: u32,
        c: Challenge,
        max: usize,
        max_per_site: usize,
    ) -> bool {
        let mut at_site = self.challenges.entry(site).or_default();
        if let Some(old) = at_site.get_mut(&txn) {
            *old = c;
            return true;
        }
        if at_site.len() >= max_per_site {
            return false;
        }
        let counted = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        if counted.is_err() {
            return false;
        }
        at_site.insert(txn, c);
        true
    }

    /// Takes the challenge of `(site, txn)`: a challenge answers once.
    pub fn take_challenge(&self, site: SiteId, txn: u32) -> Option<Challenge> {
        let c = self.challenges.get_mut(&site)?.remove(&txn)?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Some(c)
    }

    /// Drops challenges that expired before `cutoff_ms`, bounding memory; returns how many.
    pub fn sweep_challenges(&self, cutoff_ms: i64) -> usize {
        let mut dropped = 0;
        for mut at_site in self.challenges.iter_mut() {
            let before = at_site.len();
            at_site.retain(|_, c| c.expires_ms >= cutoff_ms);
            dropped += before - at_site.len();
        }
        self.pending.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Drops every challenge of `site` (its link went down: nobody can answer them).
    pub fn drop_challenges(&self, site: SiteId) {
        if let Some((_, at_site)) = self.challenges.remove(&site) {
            self.pending.fetch_sub(at_site.len(), Ordering::Relaxed);
        }
    }

    /// Challenges waiting for an answer.
    pub fn pending_challenges(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Challenges waiting for an answer at `site`.
    pub fn pending_challenges_at(&self, site: SiteId) -> usize {
        self.challenges.get(&site).map_or(0, |m| m.len())
    }
}

/// A read-only handle on a VLR that someone else owns (cheap to clone): what the
/// services other than registration (calls, messaging, remote control, the tests) see.
#[derive(Clone)]
pub struct VlrView(Arc<Vlr>);

impl VlrView {
    /// A view of `vlr`.
    pub fn new(vlr: Arc<Vlr>) -> Self {
        VlrView(vlr)
    }

    /// Registered units.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no unit is registered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A registered unit by IMSI.
    pub fn get(&self, imsi: &Imsi) -> Option<VlrUnit> {
        self.0.get(imsi)
    }

    /// The IMSI holding `tmsi` now.
    pub fn imsi_of(&self, tmsi: Tmsi) -> Option<Imsi> {
        self.0.imsi_of(tmsi)
    }

    /// See [`Vlr::page`].
    pub fn page(
        &self,
        after: Option<Imsi>,
        limit: usize,
        keep: impl Fn(&Imsi, &VlrUnit) -> bool,
    ) -> Vec<(Imsi, VlrUnit)> {
        self.0.page(after, limit, keep)
    }

    /// See [`Vlr::talkgroup_sites`].
    pub fn talkgroup_sites(&self, fleet: FleetId, talkgroup: TalkgroupId) -> Vec<SiteId> {
        self.0.talkgroup_sites(fleet, talkgroup)
    }

    /// See [`Vlr::affiliated_units`].
    pub fn affiliated_units(&self, fleet: FleetId, talkgroup: TalkgroupId) -> Vec<(Imsi, Tmsi, SiteId)> {
        self.0.affiliated_units(fleet, talkgroup)
    }

    /// Challenges waiting for an answer.
    pub fn pending_challenges(&self) -> usize {
        self.0.pending_challenges()
    }

    /// Challenges waiting for an answer at `site`.
    pub fn pending_challenges_at(&self, site: SiteId) -> usize {
        self.0.pending_challenges_at(site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imsi(n: u64) -> Imsi {
        Imsi::parse(&format!("00101{n:010}")).unwrap()
    }

    fn ok(_: Option<&VlrUnit>, _: &mut VlrUnit) -> Result<(), ()> {
        Ok(())
    }

    #[test]
    fn the_check_sees_the_previous_entry_and_can_refuse() {
        let vlr = Vlr::new();
        let mut n = 0;
        let mut draw = || {
            n += 1;
            Tmsi::new(n)
        };
        vlr.register(imsi(1), unit(1, 0), &mut draw, ok).unwrap();
        let refused = vlr.register(imsi(1), unit(2, 0), &mut draw, |prev, _| match prev {
            Some(p) if p.site.get() == 1 => Err("elsewhere"),
            _ => Ok(()),
        });
        assert_eq!(refused, Err(RegisterError::Refused("elsewhere")));
        assert_eq!(vlr.get(&imsi(1)).unwrap().site.get(), 1);
        assert!(!format!("{:?}", vlr.get(&imsi(1)).unwrap()).contains("ck"));
    }

    fn unit(site: u16, at: i64) -> VlrUnit {
        VlrUnit {
            tmsi: Tmsi::new(1).unwrap(),
            site: SiteId::new(site).unwrap(),
            fleet: FleetId::new(1).unwrap(),
            affiliation: Affiliation {
                primary: TalkgroupId::new(1).unwrap(),
                secondary: [None; 3],
            },
            last_activity_ms: at,
            ck: [0; 16],
            ik: [0; 16],
        }
    }

    #[test]
    fn re_registration_retires_the_old_tmsi() {
        let vlr = Vlr::new();
        let mut next = 10u32;
        let mut draw = || {
            next += 1;
            Tmsi::new(next)
        };
        let (t1, _) = vlr.register(imsi(1), unit(1, 0), &mut draw, ok).unwrap();
        let (t2, prev) = vlr.register(imsi(1), unit(2, 0), &mut draw, ok).unwrap();
        assert_ne!(t1, t2);
        assert_eq!(prev.unwrap().tmsi, t1);
        assert_eq!(vlr.imsi_of(t1), None);
        assert_eq!(vlr.imsi_of(t2), Some(imsi(1)));
        assert_eq!(vlr.len(), 1);
    }

    #[test]
    fn tmsi_collisions_are_redrawn() {
        let vlr = Vlr::new();
        let mut seq = [5u32, 5, 5, 6].into_iter();
        let mut draw = || Tmsi::new(seq.next().unwrap());
        let (a, _) = vlr.register(imsi(1), unit(1, 0), &mut draw, ok).unwrap();
        let (b, _) = vlr.register(imsi(2), unit(1, 0), &mut draw, ok).unwrap();
        assert_eq!((a.get(), b.get()), (5, 6));
    }

    #[test]
    fn expiry_and_deregistration_remove_both_indexes() {
        let vlr = Vlr::new();
        let mut n = 0;
        let mut draw = || {
            n += 1;
            Tmsi::new(n)
        };
        let (t1, _) = vlr.register(imsi(1), unit(1, 100), &mut draw, ok).unwrap();
        let (t2, _) = vlr.register(imsi(2), unit(1, 500), &mut draw, ok).unwrap();
        let gone = vlr.expire(200);
        assert_eq!(gone.len(), 1);
        assert_eq!(vlr.imsi_of(t1), None);
        let tg1 = TalkgroupId::new(1).unwrap();
        assert_eq!(
            vlr.talkgroup_sites(FleetId::new(1).unwrap(), tg1),
            vec![SiteId::new(1).unwrap()]
        );
        assert!(
            vlr.deregister(t2, SiteId::new(2).unwrap()).is_none(),
            "wrong site"
        );
        assert!(vlr.deregister(t2, SiteId::new(1).unwrap()).is_some());
        assert!(vlr.is_empty());
        assert!(
            vlr.talkgroup_sites(FleetId::new(1).unwrap(), tg1).is_empty(),
            "index not emptied"
        );
        assert!(vlr.deregister(t2, SiteId::new(1).unwrap()).is_none());
    }

    /// A challenge of unit 1 that expires at 1000 ms.
    fn challenge() -> Challenge {
        Challenge {
            imsi: imsi(1),
            xres: [1; 8],
            ck: [0; 16],
            ik: [0; 16],
            expires_ms: 1000,
            procedure: Procedure::Register,
        }
    }

    #[test]
    fn a_challenge_answers_once_and_pending_ones_are_capped() {
        let vlr = Vlr::new();
        let s = SiteId::new(1).unwrap();
        let c = challenge();
        assert!(vlr.put_challenge(s, 7, c.clone(), 1, 1));
        assert!(!vlr.put_challenge(s, 8, c.clone(), 1, 1));
        assert_eq!(vlr.take_challenge(s, 7), Some(c.clone()));
        assert_eq!(vlr.take_challenge(s, 7), None);
        assert!(vlr.put_challenge(s, 9, c, 1, 1));
        assert_eq!(vlr.sweep_challenges(2000), 1);
        assert_eq!(vlr.pending_challenges(), 0);
    }

    #[test]
    fn a_site_at_its_share_of_challenges_leaves_room_for_the_others() {
        let vlr = Vlr::new();
        let (a, b) = (SiteId::new(1).unwrap(), SiteId::new(2).unwrap());
        let c = challenge();
        for txn in 1..=3 {
            assert!(vlr.put_challenge(a, txn, c.clone(), 5, 3));
        }
        assert!(
            !vlr.put_challenge(a, 4, c.clone(), 5, 3),
            "site 1 is at its share"
        );
        assert!(
            vlr.put_challenge(a, 2, c.clone(), 5, 3),
            "a replacement takes no room"
        );
        assert!(vlr.put_challenge(b, 1, c.clone(), 5, 3));
        assert!(vlr.put_challenge(b, 2, c.clone(), 5, 3));
        assert!(!vlr.put_challenge(b, 3, c.clone(), 5, 3), "the total is reached");
        assert_eq!(
            (vlr.pending_challenges_at(a), vlr.pending_challenges_at(b)),
            (3, 2)
        );
        vlr.drop_challenges(a);
        assert_eq!(vlr.pending_challenges(), 2);
        assert!(vlr.put_challenge(b, 3, c, 5, 3));
        assert_eq!(vlr.sweep_challenges(2000), 3);
        assert_eq!(vlr.pending_challenges(), 0);
    }
}
