//! Registration, authentication, location update, deregistration and affiliation
//! (`PROTOCOL.md §5.2`, DOMAIN.md "Procedures"). Sans-IO: [`Registrar::handle`] takes a
//! frame and the current time (monotonic ms) and returns the answers plus events for the
//! write-behind side (last location, audit). It reads the HLR cache and the VLR, both in
//! memory.
//!
//! Every refusal leaves the VLR as it was, except that a challenge, once answered
//! (rightly or not), is gone: a challenge answers once.

use std::sync::Arc;

use crate::core::auth::{milenage, response_ok};
use crate::hlr::HlrCache;
use crate::protocol::{Cause, Frame, Identity, Imsi, Message, MessageType, SiteId, TalkgroupList, Tmsi};
use crate::store::Subscriber;
use crate::vlr::{Affiliation, Challenge, Procedure, RegisterError, Vlr, VlrUnit};

/// Registration settings (the `[registration]` config section).
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// A source of cryptographically secure random bytes.
pub trait Entropy: Send + Sync {
    /// Fills `buf`; `false` if no randomness could be had.
    fn fill(&self, buf: &mut [u8]) -> bool;
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }
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
    /// The unit's TMSI stopped working (deregistration, or a new registration gave it
    /// another): calls and requests of that TMSI must end.
    UnitGone {
        /// The retired TMSI.
        tmsi: Tmsi,
    },
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

/// The registration state machine.
pub struct Registrar {
    hlr: Arc<HlrCache>,
    vlr: Arc<Vlr>,
    policy: RegistrationPolicy,
    entropy: Arc<dyn Entropy>,
}

impl Registrar {
    /// A registrar over the given HLR cache and VLR.
    pub fn new(
        hlr: Arc<HlrCache>,
        vlr: Arc<Vlr>,
        policy: RegistrationPolicy,
        entropy: Arc<dyn Entropy>,
    ) -> Self {
        Registrar {
            hlr,
            vlr,
            policy,
            entropy,
        }
    }

    /// Forgets every challenge sent to `site` (its link went down).
    pub fn drop_challenges(&self, site: SiteId) {
        self.vlr.drop_challenges(site);
    }

    /// Handles a registration-family frame from `site`; `None` for any other message.
    pub fn handle(&self, site: SiteId, frame: &Frame, now_ms: i64) -> Option<Outcome> {
        let txn = frame.txn;
        let out = match &frame.msg {
            Message::RegRequest { identity } => self.reg_request(site, txn, identity, now_ms),
            Message::AuthResponse { res } => self.auth_response(site, txn, res, now_ms),
            Message::LocationUpdate { tmsi, .. } => self.location_update(site, txn, *tmsi, now_ms),
            Message::Deregister { tmsi } => self.deregister(site, txn, *tmsi),
            Message::Affiliate { tmsi, talkgroups } => self.affiliate(site, txn, *tmsi, talkgroups, now_ms),
            _ => return None,
        };
        Some(out)
    }

    fn reg_request(&self, site: SiteId, txn: u32, identity: &Identity, now: i64) -> Outcome {
        let imsi = match identity {
            Identity::Imei(imei) => {
                if !imei.luhn_ok() {
                    return reject(txn, Cause::BadImeiCheckDigit);
                }
                self.hlr.imsi_for_imei(imei)
            }
            Identity::Imsi(imsi) => Some(*imsi),
            Identity::Tmsi(tmsi) => self.vlr.imsi_of(*tmsi),
        };
        let Some(sub) = imsi.and_then(|i| self.hlr.subscriber(&i)) else {
            return reject(txn, Cause::UnknownSubscriber);
        };
        if sub.inhibited {
            return reject(txn, Cause::UnitInhibited);
        }
        self.challenge(site, txn, &sub, Procedure::Register, now)
    }

    fn location_update(&self, site: SiteId, txn: u32, tmsi: Tmsi, now: i64) -> Outcome {
        let Some(sub) = self.vlr.imsi_of(tmsi).and_then(|i| self.hlr.subscriber(&i)) else {
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
            expires_ms: now + self.policy.challenge_timeout_ms,
            procedure,
        };
        let p = &self.policy;
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

    fn auth_response(&self, site: SiteId, txn: u32, res: &[u8; 8], now: i64) -> Outcome {
        let Some(c) = self.vlr.take_challenge(site, txn) else {
            return reject(txn, Cause::NoChallengePending);
        };
        if now > c.expires_ms {
            return reject(txn, Cause::ChallengeExpired);
        }
        if !response_ok(res, &c.xres) {
            return reject(txn, Cause::AuthFailed);
        }
        let Some(sub) = self.hlr.subscriber(&c.imsi) else {
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
        let policy = &self.policy;
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
                events: vec![Event::Located { imsi, site, tmsi }, Event::UnitGone { tmsi }],
            },
            None => Outcome::reply(deny(txn, MessageType::Deregister, Cause::NotRegistered)),
        }
    }

    fn affiliate(&self, site: SiteId, txn: u32, tmsi: Tmsi, list: &TalkgroupList, now: i64) -> Outcome {
        let ty = MessageType::Affiliate;
        let Some(imsi) = self.vlr.imsi_of(tmsi) else {
            return Outcome::reply(deny(txn, ty, Cause::NotRegistered));
        };
        let Some(sub) = self.hlr.subscriber(&imsi) else {
            return Outcome::reply(deny(txn, ty, Cause::UnknownSubscriber));
        };
        if sub.inhibited {
            return Outcome::reply(deny(txn, ty, Cause::UnitInhibited));
        }
        if !sub.permissions.allows(ty) {
            return Outcome::reply(deny(txn, ty, Cause::ServiceNotPermitted));
        }
        let wanted = Affiliation::from_list(list);
        if wanted
            .all()
            .any(|tg| !self.hlr.talkgroup_exists(sub.unit.fleet, tg))
        {
            return Outcome::reply(deny(txn, ty, Cause::InvalidTarget));
        }
        if wanted.all().any(|tg| !sub.talkgroups.contains(&tg)) {
            return Outcome::reply(deny(txn, ty, Cause::TalkgroupNotPermitted));
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
            return Outcome::reply(deny(txn, ty, Cause::NotRegistered));
        }
        Outcome::reply(Frame::new(
            txn,
            Message::AffiliateAccept {
                talkgroups: wanted.to_list(),
            },
        ))
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

fn deny(txn: u32, request: MessageType, cause: Cause) -> Frame {
    Frame::new(txn, Message::Deny { request, cause })
}
