//! What a link session measures of its own traffic for [`Metrics`]: from the moment a
//! request frame is read to the moment its answer is written (registration round trips,
//! call request to grant), and the answers it writes (denies by cause, registration
//! outcomes).
//!
//! A session reads frames in bursts and writes what they caused with one flush
//! (`session.rs`): a request "is read" when its burst is, and its answer "is written"
//! when that flush completes. The answers a request causes reach the session while it
//! is being handled (as replies, or queued for the link by the call service), so they
//! are found by transaction among the frames queued right after it. A call request
//! answered `QUEUED` is remembered (on this link, at most [`MAX_QUEUED`]) until its
//! `CHANNEL_GRANT` or `DENY` is written, whenever that is.
//!
//! Costs on the frame path: a look at each frame's type, an atomic add per counted
//! answer, and one clock reading per flush that carries a timed answer; nothing is
//! allocated once the buffer of answers has grown to a burst's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{Metrics, RegAnswer};
use crate::protocol::{Frame, Message, MessageType};

/// Call requests waiting in the busy queue that one link remembers; past this, a grant
/// after queueing is not timed (the busy queue of one site is far shorter by default).
pub(super) const MAX_QUEUED: usize = 4096;

/// A request whose answer is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timed {
    /// `REG_REQUEST`.
    Register,
    /// `AUTH_RESPONSE`.
    AuthResponse,
    /// `GROUP_CALL_REQ`, `PRIVATE_CALL_REQ`, `EMERGENCY_CALL_REQ`.
    Call,
}

impl Timed {
    /// The timed request a frame of type `ty` is, if any.
    pub(super) fn of(ty: MessageType) -> Option<Timed> {
        match ty {
            MessageType::RegRequest => Some(Timed::Register),
            MessageType::AuthResponse => Some(Timed::AuthResponse),
            MessageType::GroupCallReq | MessageType::PrivateCallReq | MessageType::EmergencyCallReq => {
                Some(Timed::Call)
            }
            _ => None,
        }
    }
}

/// A request just read: its transaction, what it is, when its burst was read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Read {
    pub(super) txn: u32,
    pub(super) request: Timed,
    pub(super) at: Instant,
}

/// An answer about to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Registration(RegAnswer),
    Grant { queued: bool },
}

/// One link's measurements.
pub(super) struct Timing {
    metrics: Arc<Metrics>,
    /// Call requests answered `QUEUED`: transaction → when the request was read.
    queued: HashMap<u32, Instant>,
    /// Answers in the frames about to be written, with when their request was read.
    pending: Vec<(Answer, Instant)>,
}

impl Timing {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Timing {
            metrics,
            queued: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Looks at `frames`, about to be written: those `read` caused (if it is a timed
    /// request), then any others queued for the link meanwhile.
    pub(super) fn note(&mut self, frames: &[Frame], read: Option<Read>) {
        for f in frames {
            if let Message::Deny { cause, .. } = f.msg {
                self.metrics.denied(cause);
            }
            let answer = match read {
                Some(r) if r.txn == f.txn => self.answer_to(r, f),
                _ => self.later_answer(f),
            };
            if let Some(a) = answer {
                self.pending.push(a);
            }
        }
    }

    /// `f` as the answer to `r`, read in this burst.
    fn answer_to(&mut self, r: Read, f: &Frame) -> Option<(Answer, Instant)> {
        let reg = |a| Some((Answer::Registration(a), r.at));
        match (r.request, &f.msg) {
            (Timed::Register, Message::AuthChallenge { .. }) => reg(RegAnswer::Challenge),
            (Timed::AuthResponse, Message::RegAccept { .. }) => reg(RegAnswer::Accepted),
            (
                Timed::Register | Timed::AuthResponse,
                Message::RegReject { cause } | Message::Deny { cause, .. },
            ) => reg(RegAnswer::Rejected(*cause)),
            (Timed::Call, Message::Queued { .. }) => {
                if self.queued.len() < MAX_QUEUED {
                    self.queued.insert(f.txn, r.at);
                }
                None
            }
            (Timed::Call, Message::ChannelGrant { .. }) => {
                self.queued.remove(&f.txn);
                Some((Answer::Grant { queued: false }, r.at))
            }
            // Its request was queued (in this burst or before) and now granted or denied.
            _ => self.later_answer(f),
        }
    }

    /// `f` as the end of a call request that waited in the busy queue.
    fn later_answer(&mut self, f: &Frame) -> Option<(Answer, Instant)> {
        if self.queued.is_empty() || !matches!(f.msg, Message::ChannelGrant { .. } | Message::Deny { .. }) {
            return None;
        }
        let read = self.queued.remove(&f.txn)?;
        matches!(f.msg, Message::ChannelGrant { .. }).then_some((Answer::Grant { queued: true }, read))
    }

    /// The frames noted since the last call are written now.
    pub(super) fn written(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.written_at(Instant::now());
    }

    fn written_at(&mut self, now: Instant) {
        for (answer, read) in self.pending.drain(..) {
            let latency = now.saturating_duration_since(read);
            match answer {
                Answer::Registration(a) => self.metrics.registration_answered(a, latency),
                Answer::Grant { queued } => self.metrics.grant_written(queued, latency),
            }
        }
    }

    /// The frames noted since the last call will not be written.
    pub(super) fn not_written(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::{
        CallId, CallType, Carrier, Cause, FleetId, MemberId, QueuePosition, SiteGrant, SiteId, Slot,
        TalkgroupId, Target, Unit,
    };

    fn grant(txn: u32) -> Frame {
        Frame::new(
            txn,
            Message::ChannelGrant {
                call: CallId::new(1).unwrap(),
                call_type: CallType::Group,
                caller: Unit {
                    fleet: FleetId::new(100).unwrap(),
                    member: MemberId::new(1).unwrap(),
                },
                target: Target::Talkgroup {
                    fleet: FleetId::new(100).unwrap(),
                    talkgroup: TalkgroupId::new(10).unwrap(),
                },
                sites: vec![SiteGrant {
                    site: SiteId::new(1).unwrap(),
                    carrier: Carrier::new(1).unwrap(),
                    slot: Slot::new(1).unwrap(),
                }],
            },
        )
    }

    fn queued(txn: u32) -> Frame {
        Frame::new(
            txn,
            Message::Queued {
                position: QueuePosition::new(1).unwrap(),
            },
        )
    }

    fn call(txn: u32, at: Instant) -> Option<Read> {
        Some(Read {
            txn,
            request: Timed::Call,
            at,
        })
    }

    #[test]
    fn a_grant_at_once_and_one_after_queueing_are_told_apart() {
        let m = Arc::new(Metrics::default());
        let mut t = Timing::new(m.clone());
        let t0 = Instant::now();
        // Request 7 granted at once; request 8 queued, then granted in a later burst.
        t.note(&[grant(7)], call(7, t0));
        t.note(&[queued(8)], call(8, t0));
        t.written_at(t0 + Duration::from_micros(200));
        assert_eq!(t.queued.len(), 1);
        t.note(&[grant(8)], None);
        t.written_at(t0 + Duration::from_secs(2));
        let s = m.snapshot();
        assert_eq!(s.grant_at_once.count, 1);
        assert_eq!(s.grant_after_queue.count, 1);
        assert!((s.grant_after_queue.sum_seconds - 2.0).abs() < 1e-9);
        assert!(t.queued.is_empty());
    }

    #[test]
    fn a_queued_request_denied_is_forgotten_and_counted_as_a_deny() {
        let m = Arc::new(Metrics::default());
        let mut t = Timing::new(m.clone());
        let t0 = Instant::now();
        t.note(&[queued(8)], call(8, t0));
        let deny = Frame::deny(8, MessageType::GroupCallReq, Cause::Busy);
        t.note(&[deny], None);
        t.written_at(t0);
        assert!(t.queued.is_empty());
        let s = m.snapshot();
        assert_eq!(s.grant_after_queue.count, 0);
        assert_eq!(s.denies, vec![(Cause::Busy, 1)]);
    }

    #[test]
    fn registration_answers_are_timed_and_counted_by_outcome() {
        let m = Arc::new(Metrics::default());
        let mut t = Timing::new(m.clone());
        let t0 = Instant::now();
        let read = |txn, request| Some(Read { txn, request, at: t0 });
        t.note(
            &[Frame::new(1, Message::AuthChallenge { rand: [0; 16] })],
            read(1, Timed::Register),
        );
        t.note(
            &[Frame::new(
                2,
                Message::RegReject {
                    cause: Cause::AuthFailed,
                },
            )],
            read(2, Timed::AuthResponse),
        );
        // An answer on another transaction is not this request's.
        t.note(
            &[Frame::new(
                9,
                Message::RegReject {
                    cause: Cause::AuthFailed,
                },
            )],
            read(3, Timed::Register),
        );
        t.written_at(t0 + Duration::from_millis(1));
        let s = m.snapshot();
        let count = |answer| s.registration.iter().find(|(a, _)| *a == answer).unwrap().1.count;
        assert_eq!(
            (count("challenge"), count("accepted"), count("rejected")),
            (1, 0, 1)
        );
        assert_eq!(s.registrations_rejected, vec![(Cause::AuthFailed, 1)]);
    }

    #[test]
    fn answers_not_written_are_not_timed() {
        let m = Arc::new(Metrics::default());
        let mut t = Timing::new(m.clone());
        t.note(&[grant(7)], call(7, Instant::now()));
        t.not_written();
        t.written();
        assert_eq!(m.snapshot().grant_at_once.count, 0);
    }
}
