//! Registration, authentication, location update, deregistration and affiliation
//! (`PROTOCOL.md §5.2`, DOMAIN.md "Procedures"), plus periodic-registration expiry.
//!
//! Sans-IO: the [`Registrar`] owns the VLR (the units on the air and the challenges
//! waiting for their answer) and is the only thing that changes it. Every input carries
//! the current time (monotonic ms) and returns what to send and what happened
//! ([`Event`]s for the shell to carry out); [`Registrar::tick`] runs the time-driven
//! work and should be called every [`Registrar::tick_every_ms`]. Subscribers are looked
//! up through a [`SubscriberLookup`] the caller passes in, random bytes come from an
//! [`Entropy`] given at construction. No clock, no tokio, no database inside: tests
//! drive it with a simulated clock and a [`SeededEntropy`](crate::core::entropy::SeededEntropy).
//!
//! Every refusal leaves the VLR as it was, except that a challenge, once answered
//! (rightly or not), is gone: a challenge answers once.

use std::sync::{Arc, PoisonError, RwLock};

use crate::core::auth::{milenage, response_ok};
use crate::core::entropy::Entropy;
use crate::hlr::model::Subscriber;
use crate::protocol::{
    Cause, FleetId, Frame, Identity, Imei, Imsi, Message, MessageType, SiteId, TalkgroupId, TalkgroupList,
    Tmsi,
};
use crate::vlr::{Affiliation, Challenge, Procedure, RegisterError, Vlr, VlrUnit, VlrView};

/// An expired challenge is kept at least this long after it expired (ms), so that a
/// late answer is told "challenge expired" rather than "no challenge pending".
pub const MIN_KEEP_EXPIRED_CHALLENGE_MS: i64 = 5_000;

/// Registration settings (the `[registration]` config section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationPolicy {
    /// How long a challenge may be answered, ms.
    pub challenge_timeout_ms: i64,
    /// Most challenges waiting at once; more are refused "busy".
    pub max_pending_challenges: usize,
    /// Most challenges waiting at once at one site; more there are refused "busy".
    pub max_pending_challenges_per_site: usize,
    /// Activity from two sites closer together than this flags a possible clone, ms.
    pub clone_window_ms: i64,
    /// Whether the second registration of a suspected clone is refused.
    pub refuse_clones: bool,
    /// A unit not heard from for longer than this leaves the VLR, ms (above 0).
    pub periodic_registration_ms: i64,
}

/// What the registrar needs to know of the HLR. The shell passes its in-memory copy
/// (`crate::hlr::HlrCache`); a lookup must answer at once, without IO.
pub trait SubscriberLookup {
    /// A provisioned subscriber by IMSI.
    fn subscriber(&self, imsi: &Imsi) -> Option<Arc<Subscriber>>;
    /// The IMSI provisioned for an IMEI.
    fn imsi_for_imei(&self, imei: &Imei) -> Option<Imsi>;
    /// Whether `talkgroup` exists in `fleet`.
    fn talkgroup_exists(&self, fleet: FleetId, talkgroup: TalkgroupId) -> bool;
}

/// Something the I/O side must carry out after the answer is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The unit was seen at `site` now (written behind to the HLR's last location).
    Located {
        /// The unit.
        imsi: Imsi,
        /// Where.
        site: SiteId,
        /// Its TMSI there.
        tmsi: Tmsi,
    },
    /// A location update gave the unit a new TMSI: its calls and requests follow it.
    TmsiChanged {
        /// The TMSI that stopped working.
        old: Tmsi,
        /// The new one.
        new: Tmsi,
    },
    /// The unit is on the air at `site` under `tmsi` (after a registration or location
    /// update): messages stored for it can be delivered.
    Attached {
        /// The unit.
        imsi: Imsi,
        /// Its TMSI now.
        tmsi: Tmsi,
        /// Where.
        site: SiteId,
    },
    /// The unit's TMSI stopped working (deregistration, a new registration gave it
    /// another, periodic-registration expiry, removal from the HLR, or an inhibit):
    /// calls and requests of that TMSI must end.
    UnitGone {
        /// The retired TMSI.
        tmsi: Tmsi,
    },
    /// What operators are told (the controller's event stream).
    Unit(UnitEvent),
    /// A security-relevant fact for the audit log.
    Audit {
        /// e.g. `clone.suspected`.
        action: &'static str,
        /// e.g. `subscriber:<imsi>`.
        object: String,
        /// Free text, never secrets.
        detail: String,
    },
}

/// Why a unit left the air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// It deregistered (`DEREGISTER`).
    Detached,
    /// Its periodic registration ran out.
    Expired,
    /// An operator removed it from the HLR.
    Removed,
    /// It was inhibited (acknowledged, or unanswered after every attempt).
    Inhibited,
}

/// A change of a unit's registration, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitEvent {
    /// It registered (power-on, or registered again) at `site`.
    Registered {
        /// The unit.
        imsi: Imsi,
        /// Its TMSI now.
        tmsi: Tmsi,
        /// Where.
        site: SiteId,
    },
    /// It moved (location update).
    LocationChanged {
        /// The unit.
        imsi: Imsi,
        /// Where it was.
        from: SiteId,
        /// Where it is.
        to: SiteId,
        /// Its TMSI now.
        tmsi: Tmsi,
    },
    /// It left the air.
    Left {
        /// The unit.
        imsi: Imsi,
        /// The site it was at.
        site: SiteId,
        /// Why.
        reason: LeaveReason,
    },
    /// Its talkgroup affiliation changed.
    Affiliated {
        /// The unit.
        imsi: Imsi,
        /// Where.
        site: SiteId,
        /// Its talkgroups now, the primary first.
        talkgroups: Vec<TalkgroupId>,
    },
}

impl UnitEvent {
    /// The unit it is about.
    pub fn imsi(&self) -> Imsi {
        match self {
            UnitEvent::Registered { imsi, .. }
            | UnitEvent::LocationChanged { imsi, .. }
            | UnitEvent::Left { imsi, .. }
            | UnitEvent::Affiliated { imsi, .. } => *imsi,
        }
    }
}

/// The answers to one frame and the events it caused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Frames for the requesting gateway.
    pub replies: Vec<Frame>,
    /// Work for the write-behind side.
    pub events: Vec<Event>,
}

impl Outcome {
    fn reply(f: Frame) -> Self {
        Outcome {
            replies: vec![f],
            events: vec![],
        }
    }
}

/// The registration state machine. Its methods take `&self` (the VLR inside is a
/// concurrent map) so that link sessions can call it in parallel.
pub struct Registrar {
    vlr: Arc<Vlr>,
    policy: RwLock<RegistrationPolicy>,
    entropy: Box<dyn Entropy>,
}

impl Registrar {
    /// A registrar with an empty VLR, drawing RANDs and TMSIs from `entropy`.
    pub fn new(policy: RegistrationPolicy, entropy: Box<dyn Entropy>) -> Self {
        Registrar {
            vlr: Arc::new(Vlr::new()),
            policy: RwLock::new(policy),
            entropy,
        }
    }

    /// The settings in force.
    pub fn policy(&self) -> RegistrationPolicy {
        *self.policy.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// New settings, in force for the next frame and tick (challenges already sent
    /// keep the expiry they were given).
    pub fn set_policy(&self, policy: RegistrationPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// A read-only view of the VLR, for the services that need to know who is on the air.
    pub fn vlr(&self) -> VlrView {
        VlrView::new(self.vlr.clone())
    }

    /// Handles a registration-family frame from `site`, looking subscribers up in
    /// `hlr`; `None` for any other message.
    pub fn handle(
        &self,
        site: SiteId,
        frame: &Frame,
        hlr: &dyn SubscriberLookup,
        now_ms: i64,
    ) -> Option<Outcome> {
        let txn = frame.txn;
        let out = match &frame.msg {
            Message::RegRequest { identity } => self.reg_request(site, txn, identity, hlr, now_ms),
            Message::AuthResponse { res } => self.auth_response(site, txn, res, hlr, now_ms),
            Message::LocationUpdate { tmsi, .. } => self.location_update(site, txn, *tmsi, hlr, now_ms),
            Message::Deregister { tmsi } => self.deregister(site, txn, *tmsi),
            Message::Affiliate { tmsi, talkgroups } => {
                self.affiliate(site, txn, *tmsi, talkgroups, hlr, now_ms)
            }
            _ => return None,
        };
        Some(out)
    }

    /// Puts back the units a controller on this database left on the air (written
    /// behind, loaded at start), each under its TMSI, heard from at `now_ms`. Returns
    /// how many were put back; a unit whose subscriber `hlr` no longer holds (or holds
    /// in another fleet), or who is inhibited, is left out (and registers again if it can).
    pub fn restore(
        &self,
        units: impl IntoIterator<Item = (Imsi, VlrUnit)>,
        hlr: &dyn SubscriberLookup,
        now_ms: i64,
    ) -> usize {
        units
            .into_iter()
            .filter(|(imsi, unit)| {
                hlr.subscriber(imsi)
                    .is_some_and(|s| !s.inhibited && s.unit.fleet == unit.fleet)
            })
            .filter(|(imsi, unit)| {
                self.vlr.restore(
                    *imsi,
                    VlrUnit {
                        last_activity_ms: now_ms,
                        ..unit.clone()
                    },
                )
            })
            .count()
    }

    /// Forgets every challenge sent to `site` (its link went down: nobody can answer
    /// them). `now_ms` is taken as by every input; nothing here depends on it.
    pub fn drop_challenges(&self, site: SiteId, now_ms: i64) {
        let _ = now_ms;
        self.vlr.drop_challenges(site);
    }

    /// The subscriber `imsi` was removed from the HLR: it leaves the air at once.
    /// Returns [`Event::UnitGone`] if it was on the air.
    pub fn subscriber_removed(&self, imsi: Imsi, now_ms: i64) -> Vec<Event> {
        match self.vlr.get(&imsi) {
            Some(u) => self.leave(u.tmsi, u.site, LeaveReason::Removed, now_ms),
            None => vec![],
        }
    }

    /// The unit holding `tmsi` at `site` leaves the air (an inhibited unit acknowledged,
    /// or its inhibit went unanswered). Returns [`Event::UnitGone`] if it was there
    /// under that TMSI; nothing if it has moved or registered again meanwhile.
    pub fn take_off_air(&self, tmsi: Tmsi, site: SiteId, now_ms: i64) -> Vec<Event> {
        self.leave(tmsi, site, LeaveReason::Inhibited, now_ms)
    }

    fn leave(&self, tmsi: Tmsi, site: SiteId, reason: LeaveReason, now_ms: i64) -> Vec<Event> {
        let _ = now_ms;
        match self.vlr.deregister(tmsi, site) {
            Some((imsi, _)) => vec![
                Event::UnitGone { tmsi },
                Event::Unit(UnitEvent::Left { imsi, site, reason }),
            ],
            None => vec![],
        }
    }

    /// How often the shell should call [`Registrar::tick`], ms: a tenth of the
    /// periodic-registration period, within 10..=1000. A silent unit leaves at most
    /// this long after its period ran out.
    pub fn tick_every_ms(&self) -> u64 {
        (self.policy().periodic_registration_ms.max(0) as u64 / 10).clamp(10, 1000)
    }

    /// The time-driven work: every unit not heard from for longer than the
    /// periodic-registration period (last activity before `now_ms - period`) leaves the
    /// VLR, one [`Event::UnitGone`] each; challenges that expired more than
    /// max(challenge timeout, [`MIN_KEEP_EXPIRED_CHALLENGE_MS`]) ago are dropped.
    pub fn tick(&self, now_ms: i64) -> Vec<Event> {
        let policy = self.policy();
        let gone = self
            .vlr
            .expire(now_ms - policy.periodic_registration_ms)
            .into_iter()
            .flat_map(|(imsi, unit)| {
                let left = UnitEvent::Left {
                    imsi,
                    site: unit.site,
                    reason: LeaveReason::Expired,
                };
                [Event::UnitGone { tmsi: unit.tmsi }, Event::Unit(left)]
            })
            .collect();
        let keep_expired = policy.challenge_timeout_ms.max(MIN_KEEP_EXPIRED_CHALLENGE_MS);
        self.vlr.sweep_challenges(now_ms - keep_expired);
        gone
    }

    fn reg_request(
        &self,
        site: SiteId,
        txn: u32,
        identity: &Identity,
        hlr: &dyn SubscriberLookup,
        now: i64,
    ) -> Outcome {
        let imsi = match identity {
            Identity::Imei(imei) => {
                if !imei.luhn_ok() {
                    return reject(txn, Cause::BadImeiCheckDigit);
                }
                hlr.imsi_for_imei(imei)
            }
            Identity::Imsi(imsi) => Some(*imsi),
            Identity::Tmsi(tmsi) => self.vlr.imsi_of(*tmsi),
        };
        let Some(sub) = imsi.and_then(|i| hlr.subscriber(&i)) else {
            return reject(txn, Cause::UnknownSubscriber);
        };
        if sub.inhibited {
            return reject(txn, Cause::UnitInhibited);
        }
        self.challenge(site, txn, &sub, Procedure::Register, now)
    }

    fn location_update(
        &self,
        site: SiteId,
        txn: u32,
        tmsi: Tmsi,
        hlr: &dyn SubscriberLookup,
        now: i64,
    ) -> Outcome {
        let Some(sub) = self.vlr.imsi_of(tmsi).and_then(|i| hlr.subscriber(&i)) else {
            return reject(txn, Cause::NotRegistered);
        };
        if sub.inhibited {
            return reject(txn, Cause::UnitInhibited);
        }
        self.challenge(site, txn, &sub, Procedure::LocationUpdate, now)
    }

    /// Draws RAND, computes the expected answer and keeps it; sends `AUTH_CHALLENGE`.
    fn challenge(&self, site: SiteId, txn: u32, sub: &Subscriber, procedure: Procedure, now: i64) -> Outcome {
        let mut rand = [0u8; 16];
        if !self.entropy.fill(&mut rand) {
            return reject(txn, Cause::Unspecified);
        }
        let v = milenage(&sub.k, &sub.opc, &rand);
        let c = Challenge {
            imsi: sub.imsi,
            xres: v.xres,
            ck: v.ck,
            ik: v.ik,
            expires_ms: now + self.policy().challenge_timeout_ms,
            procedure,
        };
        let p = self.policy();
        if !self.vlr.put_challenge(
            site,
            txn,
            c,
            p.max_pending_challenges,
            p.max_pending_challenges_per_site,
        ) {
            return reject(txn, Cause::Busy);
        }
        Outcome::reply(Frame::new(txn, Message::AuthChallenge { rand }))
    }

    fn auth_response(
        &self,
        site: SiteId,
        txn: u32,
        res: &[u8; 8],
        hlr: &dyn SubscriberLookup,
        now: i64,
    ) -> Outcome {
        let Some(c) = self.vlr.take_challenge(site, txn) else {
            return reject(txn, Cause::NoChallengePending);
        };
        if now > c.expires_ms {
            return reject(txn, Cause::ChallengeExpired);
        }
        if !response_ok(res, &c.xres) {
            return reject(txn, Cause::AuthFailed);
        }
        let Some(sub) = hlr.subscriber(&c.imsi) else {
            return reject(txn, Cause::UnknownSubscriber);
        };
        if sub.inhibited {
            return reject(txn, Cause::UnitInhibited);
        }
        let Some((&primary, secondary)) = sub.talkgroups.split_first() else {
            return reject(txn, Cause::TalkgroupNotPermitted);
        };
        let mut events = Vec::new();
        let unit = VlrUnit {
            tmsi: Tmsi::new(1).expect("in range"), // replaced by Vlr::register
            site,
            fleet: sub.unit.fleet,
            affiliation: Affiliation::from_slice(primary, secondary),
            last_activity_ms: now,
            ck: c.ck,
            ik: c.ik,
        };
        let policy = self.policy();
        let check = |prev: Option<&VlrUnit>, new: &mut VlrUnit| -> Result<(), Cause> {
            match (c.procedure, prev) {
                (Procedure::LocationUpdate, None) => return Err(Cause::NotRegistered),
                // A moving unit keeps its talkgroups.
                (Procedure::LocationUpdate, Some(p)) => new.affiliation = p.affiliation,
                (Procedure::Register, Some(p))
                    if p.site != site && now - p.last_activity_ms < policy.clone_window_ms =>
                {
                    events.push(Event::Audit {
                        action: "clone.suspected",
                        object: format!("subscriber:{}", sub.imsi),
                        detail: format!(
                            "registered at site {site} {} ms after activity at site {}; {}",
                            now - p.last_activity_ms,
                            p.site,
                            if policy.refuse_clones {
                                "refused"
                            } else {
                                "allowed"
                            }
                        ),
                    });
                    if policy.refuse_clones {
                        return Err(Cause::CloneSuspected);
                    }
                }
                (Procedure::Register, _) => {}
            }
            Ok(())
        };
        let tmsi = match self.vlr.register(sub.imsi, unit, || self.draw_tmsi(), check) {
            Ok((tmsi, previous)) => {
                let (imsi, from) = (sub.imsi, previous.as_ref().map(|p| p.site));
                events.push(Event::Unit(match (c.procedure, from) {
                    (Procedure::LocationUpdate, Some(from)) if from != site => UnitEvent::LocationChanged {
                        imsi,
                        from,
                        to: site,
                        tmsi,
                    },
                    _ => UnitEvent::Registered { imsi, tmsi, site },
                }));
                if let Some(p) = previous {
                    events.push(match c.procedure {
                        // A moving unit keeps its calls; a unit powering on again does not.
                        Procedure::LocationUpdate => Event::TmsiChanged {
                            old: p.tmsi,
                            new: tmsi,
                        },
                        Procedure::Register => Event::UnitGone { tmsi: p.tmsi },
                    });
                }
                tmsi
            }
            Err(RegisterError::Refused(cause)) => {
                return Outcome {
                    replies: vec![reg_reject(txn, cause)],
                    events,
                };
            }
            Err(RegisterError::NoTmsi) => return reject(txn, Cause::Unspecified),
        };
        events.push(Event::Located {
            imsi: sub.imsi,
            site,
            tmsi,
        });
        events.push(Event::Attached {
            imsi: sub.imsi,
            tmsi,
            site,
        });
        let answer = match c.procedure {
            Procedure::Register => Message::RegAccept {
                imsi: sub.imsi,
                individual: sub.individual,
                tmsi,
                unit: sub.unit,
                talkgroups: self
                    .vlr
                    .get(&sub.imsi)
                    .map_or_else(|| Affiliation::from_slice(primary, secondary), |u| u.affiliation)
                    .to_list(),
            },
            Procedure::LocationUpdate => Message::LocationAccept { tmsi },
        };
        Outcome {
            replies: vec![Frame::new(txn, answer)],
            events,
        }
    }

    fn deregister(&self, site: SiteId, txn: u32, tmsi: Tmsi) -> Outcome {
        match self.vlr.deregister(tmsi, site) {
            Some((imsi, _)) => Outcome {
                replies: vec![Frame::new(
                    txn,
                    Message::Ack {
                        acked: MessageType::Deregister,
                    },
                )],
                events: vec![
                    Event::Located { imsi, site, tmsi },
                    Event::UnitGone { tmsi },
                    Event::Unit(UnitEvent::Left {
                        imsi,
                        site,
                        reason: LeaveReason::Detached,
                    }),
                ],
            },
            None => Outcome::reply(Frame::deny(txn, MessageType::Deregister, Cause::NotRegistered)),
        }
    }

    fn affiliate(
        &self,
        site: SiteId,
        txn: u32,
        tmsi: Tmsi,
        list: &TalkgroupList,
        hlr: &dyn SubscriberLookup,
        now: i64,
    ) -> Outcome {
        let ty = MessageType::Affiliate;
        let Some(imsi) = self.vlr.imsi_of(tmsi) else {
            return Outcome::reply(Frame::deny(txn, ty, Cause::NotRegistered));
        };
        let Some(sub) = hlr.subscriber(&imsi) else {
            return Outcome::reply(Frame::deny(txn, ty, Cause::UnknownSubscriber));
        };
        if sub.inhibited {
            return Outcome::reply(Frame::deny(txn, ty, Cause::UnitInhibited));
        }
        if !sub.permissions.allows(ty) {
            return Outcome::reply(Frame::deny(txn, ty, Cause::ServiceNotPermitted));
        }
        let wanted = Affiliation::from_list(list);
        if wanted.all().any(|tg| !hlr.talkgroup_exists(sub.unit.fleet, tg)) {
            return Outcome::reply(Frame::deny(txn, ty, Cause::InvalidTarget));
        }
        if wanted.all().any(|tg| !sub.talkgroups.contains(&tg)) {
            return Outcome::reply(Frame::deny(txn, ty, Cause::TalkgroupNotPermitted));
        }
        let updated = self.vlr.update(&imsi, |u| {
            if u.site != site || u.tmsi != tmsi {
                return false;
            }
            u.affiliation = wanted;
            u.last_activity_ms = now;
            true
        });
        if updated != Some(true) {
            return Outcome::reply(Frame::deny(txn, ty, Cause::NotRegistered));
        }
        Outcome {
            replies: vec![Frame::new(
                txn,
                Message::AffiliateAccept {
                    talkgroups: wanted.to_list(),
                },
            )],
            events: vec![Event::Unit(UnitEvent::Affiliated {
                imsi,
                site,
                talkgroups: wanted.all().collect(),
            })],
        }
    }

    /// A random TMSI in range (`0` and all-ones are reserved and redrawn).
    fn draw_tmsi(&self) -> Option<Tmsi> {
        for _ in 0..16 {
            let mut b = [0u8; 4];
            if !self.entropy.fill(&mut b) {
                return None;
            }
            if let Some(t) = Tmsi::new(u32::from_be_bytes(b)) {
                return Some(t);
            }
        }
        None
    }
}

fn reg_reject(txn: u32, cause: Cause) -> Frame {
    Frame::new(txn, Message::RegReject { cause })
}

fn reject(txn: u32, cause: Cause) -> Outcome {
    Outcome::reply(reg_reject(txn, cause))
}

#[cfg(test)]
mod tests {
    //! The registrar driven by hand: a simulated clock (plain `i64` ms), a seeded random
    //! source and an HLR in a `HashMap`. No tokio, no database.

    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::core::auth::unit_response;
    use crate::core::entropy::SeededEntropy;
    use crate::hlr::model::{Permissions, Secret128};
    use crate::protocol::{IndividualId, LocationReason, MemberId, Unit};

    const TIMEOUT: i64 = 10_000;
    const WINDOW: i64 = 60_000;
    const PERIOD: i64 = 1_800_000;

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            challenge_timeout_ms: TIMEOUT,
            max_pending_challenges: 100,
            max_pending_challenges_per_site: 10,
            clone_window_ms: WINDOW,
            refuse_clones: true,
            periodic_registration_ms: PERIOD,
        }
    }

    fn site(n: u16) -> SiteId {
        SiteId::new(n).unwrap()
    }

    fn tg(n: u16) -> TalkgroupId {
        TalkgroupId::new(n).unwrap()
    }

    fn imsi(n: u8) -> Imsi {
        Imsi::parse(&format!("001010000000{n:03}")).unwrap()
    }

    fn fleet() -> FleetId {
        FleetId::new(1).unwrap()
    }

    /// Subscriber `n` of fleet 1, permitted on talkgroups 1 and 2.
    fn subscriber(n: u8) -> Subscriber {
        Subscriber {
            imsi: imsi(n),
            imei: Imei::with_check_digit(&format!("35000000000{n:03}")).unwrap(),
            msisdn: None,
            alias: None,
            unit: Unit {
                fleet: fleet(),
                member: MemberId::new(u16::from(n)).unwrap(),
            },
            individual: IndividualId::new(1000 + u32::from(n)).unwrap(),
            k: Secret128::from_bytes([n; 16]),
            opc: Secret128::from_bytes([n.wrapping_add(100); 16]),
            priority: 5,
            permissions: Permissions::ALL,
            inhibited: false,
            talkgroups: vec![tg(1), tg(2)],
            created_at: 0,
            updated_at: 0,
        }
    }

    /// The HLR as the registrar sees it.
    #[derive(Default)]
    struct Hlr {
        subscribers: HashMap<Imsi, Arc<Subscriber>>,
        talkgroups: HashSet<(FleetId, TalkgroupId)>,
    }

    impl SubscriberLookup for Hlr {
        fn subscriber(&self, imsi: &Imsi) -> Option<Arc<Subscriber>> {
            self.subscribers.get(imsi).cloned()
        }

        fn imsi_for_imei(&self, imei: &Imei) -> Option<Imsi> {
            self.subscribers
                .values()
                .find(|s| s.imei == *imei)
                .map(|s| s.imsi)
        }

        fn talkgroup_exists(&self, fleet: FleetId, talkgroup: TalkgroupId) -> bool {
            self.talkgroups.contains(&(fleet, talkgroup))
        }
    }

    /// A registrar over an HLR with subscribers 1 and 2, seeded with 42.
    struct World {
        reg: Registrar,
        hlr: Hlr,
    }

    impl World {
        fn new(policy: RegistrationPolicy) -> Self {
            let mut hlr = Hlr::default();
            for n in [1, 2] {
                hlr.subscribers.insert(imsi(n), Arc::new(subscriber(n)));
            }
            hlr.talkgroups.extend([(fleet(), tg(1)), (fleet(), tg(2))]);
            World {
                reg: Registrar::new(policy, Box::new(SeededEntropy::new(42))),
                hlr,
            }
        }

        fn send(&self, at: SiteId, txn: u32, msg: Message, now: i64) -> Outcome {
            let out = self.reg.handle(at, &Frame::new(txn, msg), &self.hlr, now);
            out.expect("a registration-family frame is always answered")
        }

        /// Starts a registration of unit `n` by IMSI; returns the RAND it was sent.
        fn request(&self, at: SiteId, txn: u32, n: u8, now: i64) -> [u8; 16] {
            let identity = Identity::Imsi(imsi(n));
            rand_of(&self.send(at, txn, Message::RegRequest { identity }, now))
        }

        /// The right answer of unit `n` to `rand`.
        fn answer(&self, at: SiteId, txn: u32, n: u8, rand: &[u8; 16], now: i64) -> Outcome {
            let s = subscriber(n);
            let res = unit_response(&s.k, &s.opc, rand);
            self.send(at, txn, Message::AuthResponse { res }, now)
        }

        /// Registers unit `n` at `at` (challenge and answer at `now`); its TMSI.
        fn register(&self, at: SiteId, n: u8, now: i64) -> Tmsi {
            let rand = self.request(at, 1, n, now);
            let out = self.answer(at, 1, n, &rand, now);
            match out.replies[..] {
                [Frame {
                    msg: Message::RegAccept { tmsi, .. },
                    ..
                }] => tmsi,
                _ => panic!("not accepted: {out:?}"),
            }
        }
    }

    fn rand_of(out: &Outcome) -> [u8; 16] {
        match out.replies[..] {
            [Frame {
                msg: Message::AuthChallenge { rand },
                ..
            }] => rand,
            _ => panic!("no challenge: {out:?}"),
        }
    }

    /// The cause of the only reply, a `REG_REJECT`.
    fn rejected(out: &Outcome) -> Cause {
        match out.replies[..] {
            [Frame {
                msg: Message::RegReject { cause },
                ..
            }] => cause,
            _ => panic!("not a REG_REJECT: {out:?}"),
        }
    }

    fn audits(out: &Outcome) -> Vec<&str> {
        out.events
            .iter()
            .filter_map(|e| match e {
                Event::Audit { action, detail, .. } => {
                    assert_eq!(*action, "clone.suspected");
                    Some(detail.as_str())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_registration_is_a_challenge_and_its_answer_and_a_seed_repeats_it() {
        let w = World::new(policy());
        let rand = w.request(site(1), 7, 1, 100);
        let out = w.answer(site(1), 7, 1, &rand, 200);
        let tmsi = w.reg.vlr().get(&imsi(1)).expect("registered").tmsi;
        let s = subscriber(1);
        assert_eq!(
            out.replies,
            vec![Frame::new(
                7,
                Message::RegAccept {
                    imsi: s.imsi,
                    individual: s.individual,
                    tmsi,
                    unit: s.unit,
                    talkgroups: TalkgroupList::new(tg(1), vec![tg(2)]).unwrap(),
                }
            )]
        );
        assert_eq!(
            out.events,
            vec![
                Event::Unit(UnitEvent::Registered {
                    imsi: s.imsi,
                    tmsi,
                    site: site(1)
                }),
                Event::Located {
                    imsi: s.imsi,
                    site: site(1),
                    tmsi
                },
                Event::Attached {
                    imsi: s.imsi,
                    tmsi,
                    site: site(1)
                },
            ]
        );
        assert_eq!(w.reg.vlr().get(&imsi(1)).unwrap().last_activity_ms, 200);

        let again = World::new(policy());
        assert_eq!(again.request(site(1), 7, 1, 100), rand, "same seed, same RAND");
        again.answer(site(1), 7, 1, &rand, 200);
        assert_eq!(
            again.reg.vlr().imsi_of(tmsi),
            Some(imsi(1)),
            "same seed, same TMSI"
        );
    }

    #[test]
    fn an_answer_after_the_timeout_is_told_the_challenge_expired() {
        let w = World::new(policy());
        let rand = w.request(site(1), 1, 1, 0);
        assert_eq!(
            rejected(&w.answer(site(1), 1, 1, &rand, TIMEOUT + 1)),
            Cause::ChallengeExpired
        );
        assert!(w.reg.vlr().is_empty(), "a late answer registers nothing");
        assert_eq!(w.reg.vlr().pending_challenges(), 0, "the challenge answered once");
        assert_eq!(
            rejected(&w.answer(site(1), 1, 1, &rand, TIMEOUT + 2)),
            Cause::NoChallengePending
        );

        // The last moment of the timeout still counts.
        let rand = w.request(site(1), 2, 1, 0);
        assert!(matches!(
            w.answer(site(1), 2, 1, &rand, TIMEOUT).replies[0].msg,
            Message::RegAccept { .. }
        ));
    }

    #[test]
    fn expired_challenges_are_kept_at_least_five_seconds_for_late_answers() {
        let short = RegistrationPolicy {
            challenge_timeout_ms: 1_000,
            ..policy()
        };
        let w = World::new(short);
        let keep = MIN_KEEP_EXPIRED_CHALLENGE_MS;
        let rand = w.request(site(1), 1, 1, 0);
        let dropped = w.request(site(1), 2, 1, 0);
        // Expired at 1 000 ms; still there at the last tick that keeps it.
        assert!(w.reg.tick(1_000 + keep).is_empty());
        assert_eq!(w.reg.vlr().pending_challenges(), 2);
        assert_eq!(
            rejected(&w.answer(site(1), 1, 1, &rand, 1_000 + keep)),
            Cause::ChallengeExpired
        );
        // One tick later it is swept: nothing is left to answer.
        w.reg.tick(1_000 + keep + 1);
        assert_eq!(w.reg.vlr().pending_challenges(), 0);
        assert_eq!(
            rejected(&w.answer(site(1), 2, 1, &dropped, 1_000 + keep + 2)),
            Cause::NoChallengePending
        );

        // A timeout longer than 5 s keeps them for the timeout.
        let w = World::new(policy());
        w.request(site(1), 1, 1, 0);
        w.reg.tick(2 * TIMEOUT);
        assert_eq!(w.reg.vlr().pending_challenges(), 1);
        w.reg.tick(2 * TIMEOUT + 1);
        assert_eq!(w.reg.vlr().pending_challenges(), 0);
    }

    #[test]
    fn a_replayed_answer_is_refused_and_changes_nothing() {
        let w = World::new(policy());
        let rand = w.request(site(1), 1, 1, 0);
        let s = subscriber(1);
        let answer = Message::AuthResponse {
            res: unit_response(&s.k, &s.opc, &rand),
        };
        w.send(site(1), 1, answer.clone(), 10);
        let before = w.reg.vlr().get(&imsi(1)).unwrap();
        let replay = w.send(site(1), 1, answer.clone(), 20);
        assert_eq!(rejected(&replay), Cause::NoChallengePending);
        assert!(replay.events.is_empty());
        assert_eq!(w.reg.vlr().get(&imsi(1)).unwrap(), before);
        // Nor from another site.
        assert_eq!(
            rejected(&w.send(site(2), 1, answer, 30)),
            Cause::NoChallengePending
        );

        // A wrong answer uses the challenge up too.
        let rand = w.request(site(1), 2, 1, 40);
        let wrong = w.send(site(1), 2, Message::AuthResponse { res: [0; 8] }, 50);
        assert_eq!(rejected(&wrong), Cause::AuthFailed);
        assert_eq!(
            rejected(&w.answer(site(1), 2, 1, &rand, 60)),
            Cause::NoChallengePending
        );
        assert_eq!(w.reg.vlr().get(&imsi(1)).unwrap(), before);
    }

    #[test]
    fn the_same_unit_at_two_sites_within_the_clone_window_is_a_suspected_clone() {
        for refuse_clones in [true, false] {
            let w = World::new(RegistrationPolicy {
                refuse_clones,
                ..policy()
            });
            let first = w.register(site(1), 1, 1_000);
            let rand = w.request(site(2), 1, 1, 1_000 + WINDOW - 1);
            let out = w.answer(site(2), 1, 1, &rand, 1_000 + WINDOW - 1);
            let verdict = if refuse_clones { "refused" } else { "allowed" };
            assert_eq!(audits(&out).len(), 1, "{out:?}");
            assert!(audits(&out)[0].ends_with(verdict), "{out:?}");
            let unit = w.reg.vlr().get(&imsi(1)).unwrap();
            if refuse_clones {
                assert_eq!(rejected(&out), Cause::CloneSuspected);
                assert_eq!((unit.site, unit.tmsi), (site(1), first), "the first stays");
            } else {
                assert!(matches!(out.replies[0].msg, Message::RegAccept { .. }));
                assert_eq!(unit.site, site(2));
                assert!(out.events.contains(&Event::UnitGone { tmsi: first }));
            }
        }
    }

    #[test]
    fn outside_the_clone_window_or_at_the_same_site_a_registration_is_no_clone() {
        let w = World::new(policy());
        let first = w.register(site(1), 1, 1_000);
        // The same site at once: a unit powering on again.
        let rand = w.request(site(1), 1, 1, 1_001);
        let out = w.answer(site(1), 1, 1, &rand, 1_001);
        assert!(audits(&out).is_empty());
        assert!(out.events.contains(&Event::UnitGone { tmsi: first }));
        // Another site, a whole window after the last activity.
        let rand = w.request(site(2), 1, 1, 1_001 + WINDOW);
        let out = w.answer(site(2), 1, 1, &rand, 1_001 + WINDOW);
        assert!(audits(&out).is_empty(), "{out:?}");
        assert_eq!(w.reg.vlr().get(&imsi(1)).unwrap().site, site(2));
    }

    #[test]
    fn silent_units_expire_after_the_periodic_registration_period() {
        let w = World::new(policy());
        assert_eq!(w.reg.tick_every_ms(), 1_000);
        let t1 = w.register(site(1), 1, 0);
        let t2 = w.register(site(1), 2, 0);
        // Unit 2 is heard from later (an affiliation counts as activity).
        let list = TalkgroupList::new(tg(2), vec![]).unwrap();
        let out = w.send(
            site(1),
            3,
            Message::Affiliate {
                tmsi: t2,
                talkgroups: list,
            },
            5_000,
        );
        assert!(matches!(out.replies[0].msg, Message::AffiliateAccept { .. }));

        assert!(w.reg.tick(PERIOD).is_empty(), "a whole period is allowed");
        assert_eq!(
            w.reg.tick(PERIOD + 1),
            vec![
                Event::UnitGone { tmsi: t1 },
                Event::Unit(UnitEvent::Left {
                    imsi: imsi(1),
                    site: site(1),
                    reason: LeaveReason::Expired
                })
            ]
        );
        assert_eq!(w.reg.vlr().get(&imsi(1)), None);
        assert_eq!(w.reg.vlr().imsi_of(t1), None);
        assert_eq!(w.reg.vlr().len(), 1);
        assert!(w.reg.tick(PERIOD + 5_000).is_empty());
        assert_eq!(
            w.reg.tick(PERIOD + 5_001),
            vec![
                Event::UnitGone { tmsi: t2 },
                Event::Unit(UnitEvent::Left {
                    imsi: imsi(2),
                    site: site(1),
                    reason: LeaveReason::Expired
                })
            ]
        );
        assert!(w.reg.vlr().is_empty());
        assert!(w.reg.vlr().talkgroup_sites(fleet(), tg(2)).is_empty());

        // A location update after expiry finds nothing.
        let update = Message::LocationUpdate {
            tmsi: t1,
            reason: LocationReason::Periodic,
        };
        assert_eq!(
            rejected(&w.send(site(1), 4, update, PERIOD + 6_000)),
            Cause::NotRegistered
        );
    }

    #[test]
    fn a_location_update_reallocates_the_tmsi_and_keeps_the_talkgroups() {
        let w = World::new(policy());
        let old = w.register(site(1), 1, 0);
        let list = TalkgroupList::new(tg(2), vec![tg(1)]).unwrap();
        w.send(
            site(1),
            2,
            Message::Affiliate {
                tmsi: old,
                talkgroups: list.clone(),
            },
            10,
        );
        // A move to site 2, well within the clone window: a move, not a clone.
        let update = Message::LocationUpdate {
            tmsi: old,
            reason: LocationReason::SiteChange,
        };
        let rand = rand_of(&w.send(site(2), 3, update, 1_000));
        let out = w.answer(site(2), 3, 1, &rand, 1_000);
        let new = w.reg.vlr().get(&imsi(1)).unwrap().tmsi;
        assert_ne!(new, old);
        assert_eq!(
            out.replies,
            vec![Frame::new(3, Message::LocationAccept { tmsi: new })]
        );
        assert_eq!(
            out.events,
            vec![
                Event::Unit(UnitEvent::LocationChanged {
                    imsi: imsi(1),
                    from: site(1),
                    to: site(2),
                    tmsi: new
                }),
                Event::TmsiChanged { old, new },
                Event::Located {
                    imsi: imsi(1),
                    site: site(2),
                    tmsi: new
                },
                Event::Attached {
                    imsi: imsi(1),
                    tmsi: new,
                    site: site(2)
                },
            ]
        );
        let unit = w.reg.vlr().get(&imsi(1)).unwrap();
        assert_eq!((unit.site, unit.affiliation.to_list()), (site(2), list));
        assert_eq!(w.reg.vlr().imsi_of(old), None, "the old TMSI stops working");
        assert_eq!(w.reg.vlr().talkgroup_sites(fleet(), tg(2)), vec![site(2)]);
    }

    #[test]
    fn a_removed_or_inhibited_unit_is_taken_off_the_air() {
        let w = World::new(policy());
        let t1 = w.register(site(1), 1, 0);
        let t2 = w.register(site(1), 2, 0);
        assert!(w.reg.take_off_air(t1, site(2), 5).is_empty(), "not there");
        assert_eq!(
            w.reg.take_off_air(t1, site(1), 5),
            vec![
                Event::UnitGone { tmsi: t1 },
                Event::Unit(UnitEvent::Left {
                    imsi: imsi(1),
                    site: site(1),
                    reason: LeaveReason::Inhibited
                })
            ]
        );
        assert!(w.reg.take_off_air(t1, site(1), 6).is_empty(), "once");
        assert_eq!(
            w.reg.subscriber_removed(imsi(2), 7),
            vec![
                Event::UnitGone { tmsi: t2 },
                Event::Unit(UnitEvent::Left {
                    imsi: imsi(2),
                    site: site(1),
                    reason: LeaveReason::Removed
                })
            ]
        );
        assert!(w.reg.subscriber_removed(imsi(2), 8).is_empty());
        assert!(w.reg.vlr().is_empty());
    }

    #[test]
    fn a_dropped_link_forgets_its_challenges_only() {
        let w = World::new(policy());
        let rand = w.request(site(1), 1, 1, 0);
        w.request(site(2), 1, 2, 0);
        w.reg.drop_challenges(site(1), 1);
        assert_eq!(
            (
                w.reg.vlr().pending_challenges_at(site(1)),
                w.reg.vlr().pending_challenges()
            ),
            (0, 1)
        );
        assert_eq!(
            rejected(&w.answer(site(1), 1, 1, &rand, 2)),
            Cause::NoChallengePending
        );
    }

    #[test]
    fn without_randomness_a_registration_is_refused_and_nothing_is_kept() {
        struct Broken;
        impl Entropy for Broken {
            fn fill(&self, _: &mut [u8]) -> bool {
                false
            }
        }
        let mut w = World::new(policy());
        w.reg = Registrar::new(policy(), Box::new(Broken));
        let identity = Identity::Imsi(imsi(1));
        let out = w.send(site(1), 1, Message::RegRequest { identity }, 0);
        assert_eq!(rejected(&out), Cause::Unspecified);
        assert_eq!(w.reg.vlr().pending_challenges(), 0);
    }

    #[test]
    fn other_messages_are_not_the_registrars() {
        let w = World::new(policy());
        let frame = Frame::new(
            1,
            Message::Ack {
                acked: MessageType::Deregister,
            },
        );
        assert_eq!(w.reg.handle(site(1), &frame, &w.hlr, 0), None);
    }
}
