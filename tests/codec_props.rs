//! Property tests of the sans-IO wire codec (`src/protocol`, `PROTOCOL.md §2, §4, §5`).
//!
//! - every one of the 45 messages, with any valid field values (`§4` ranges), survives
//!   encode → decode unchanged, and every strict prefix of its frame is `Incomplete`;
//! - frames concatenated into one stream, delivered in arbitrary chunks, split apart again;
//! - `decode` never panics on arbitrary bytes, and the length it reports is sane;
//! - decoding is canonical: whenever `decode` accepts `buf[..len]` as a well-formed frame,
//!   re-encoding that frame gives back exactly `buf[..len]` (so there is exactly one
//!   encoding of every frame), checked on mutated valid frames and on random payloads.
//!
//! Case count: 256 per property unless `PROPTEST_CASES` is set.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;

use trunkd::protocol::{
    decode, CallId, CallScope, CallType, Carrier, Cause, ControllerAddress, Decoded, Digits15, FleetId,
    Frame, Identity, Imei, Imsi, IndividualId, LocationReason, MemberId, Message, MessageId, MessageType,
    QueuePosition, ResourceState, ShortData, SiteGrant, SiteId, Slot, SlotSelector, StreamError, TalkgroupId,
    TalkgroupList, Target, Tmsi, Unit, HEADER_LEN, MAGIC, MAX_GRANT_SITES, MAX_PAYLOAD, VERSION,
};

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Strategies for field values (ranges per PROTOCOL.md §4), built through the public
// constructors so that every generated value is valid to encode.
// ---------------------------------------------------------------------------------------

fn site_id() -> impl Strategy<Value = SiteId> {
    (SiteId::MIN..=SiteId::MAX).prop_map(|v| SiteId::new(v).unwrap())
}
fn fleet() -> impl Strategy<Value = FleetId> {
    (FleetId::MIN..=FleetId::MAX).prop_map(|v| FleetId::new(v).unwrap())
}
fn member() -> impl Strategy<Value = MemberId> {
    (MemberId::MIN..=MemberId::MAX).prop_map(|v| MemberId::new(v).unwrap())
}
fn talkgroup() -> impl Strategy<Value = TalkgroupId> {
    (TalkgroupId::MIN..=TalkgroupId::MAX).prop_map(|v| TalkgroupId::new(v).unwrap())
}
fn individual() -> impl Strategy<Value = IndividualId> {
    (IndividualId::MIN..=IndividualId::MAX).prop_map(|v| IndividualId::new(v).unwrap())
}
fn tmsi() -> impl Strategy<Value = Tmsi> {
    // Bias towards the edges of the range (1 and 0xFFFF_FFFE are the tricky ones).
    prop_oneof![
        4 => Tmsi::MIN..=Tmsi::MAX,
        1 => Just(Tmsi::MIN),
        1 => Just(Tmsi::MAX),
    ]
    .prop_map(|v| Tmsi::new(v).unwrap())
}
fn carrier() -> impl Strategy<Value = Carrier> {
    (Carrier::MIN..=Carrier::MAX).prop_map(|v| Carrier::new(v).unwrap())
}
fn slot() -> impl Strategy<Value = Slot> {
    (Slot::MIN..=Slot::MAX).prop_map(|v| Slot::new(v).unwrap())
}
fn call_id() -> impl Strategy<Value = CallId> {
    (CallId::MIN..=CallId::MAX).prop_map(|v| CallId::new(v).unwrap())
}
fn position() -> impl Strategy<Value = QueuePosition> {
    (QueuePosition::MIN..=QueuePosition::MAX).prop_map(|v| QueuePosition::new(v).unwrap())
}
fn message_id() -> impl Strategy<Value = MessageId> {
    prop_oneof![
        4 => MessageId::MIN..=MessageId::MAX,
        1 => Just(MessageId::MAX),
    ]
    .prop_map(|v| MessageId::new(v).unwrap())
}
fn cause() -> impl Strategy<Value = Cause> {
    select(Cause::ALL)
}
fn message_type() -> impl Strategy<Value = MessageType> {
    select(MessageType::ALL)
}
fn digits15() -> impl Strategy<Value = Digits15> {
    proptest::array::uniform15(0u8..=9).prop_map(|d| Digits15::from_digits(d).unwrap())
}
fn identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        digits15().prop_map(|d| Identity::Imei(Imei(d))),
        digits15().prop_map(|d| Identity::Imsi(Imsi(d))),
        tmsi().prop_map(Identity::Tmsi),
    ]
}
fn unit() -> impl Strategy<Value = Unit> {
    (fleet(), member()).prop_map(|(fleet, member)| Unit { fleet, member })
}
fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        unit().prop_map(Target::Unit),
        (fleet(), talkgroup()).prop_map(|(fleet, talkgroup)| Target::Talkgroup { fleet, talkgroup }),
    ]
}
fn talkgroup_list() -> impl Strategy<Value = TalkgroupList> {
    // Draw from a small pool now and then so that collisions (primary == secondary,
    // repeated secondaries) are common, then drop them: every list is valid, and lists
    // with 0, 1, 2 and 3 secondaries all occur.
    let tg = prop_oneof![talkgroup(), (1u16..=4).prop_map(|v| TalkgroupId::new(v).unwrap())];
    (tg.clone(), vec(tg, 0..=TalkgroupList::MAX_SECONDARY)).prop_map(|(primary, raw)| {
        let mut secondary: Vec<TalkgroupId> = Vec::new();
        for t in raw {
            if t != primary && !secondary.contains(&t) {
                secondary.push(t);
            }
        }
        TalkgroupList::new(primary, secondary).expect("deduplicated list is valid")
    })
}
fn short_data() -> impl Strategy<Value = ShortData> {
    prop_oneof![
        3 => vec(any::<u8>(), 1..=64),
        1 => vec(any::<u8>(), 1..=ShortData::MAX_LEN),
        1 => vec(any::<u8>(), ShortData::MAX_LEN..=ShortData::MAX_LEN),
    ]
    .prop_map(|d| ShortData::new(d).expect("1..=1024 bytes"))
}
fn site_grant() -> impl Strategy<Value = SiteGrant> {
    (site_id(), carrier(), slot()).prop_map(|(site, carrier, slot)| SiteGrant { site, carrier, slot })
}
fn location_reason() -> impl Strategy<Value = LocationReason> {
    prop_oneof![Just(LocationReason::Periodic), Just(LocationReason::SiteChange)]
}
fn call_scope() -> impl Strategy<Value = CallScope> {
    prop_oneof![
        Just(CallScope::Local),
        Just(CallScope::SelectedArea),
        Just(CallScope::WideArea)
    ]
}
fn call_type() -> impl Strategy<Value = CallType> {
    prop_oneof![
        Just(CallType::Group),
        Just(CallType::Private),
        Just(CallType::Emergency)
    ]
}
fn slot_selector() -> impl Strategy<Value = SlotSelector> {
    prop_oneof![
        slot().prop_map(SlotSelector::Slot),
        Just(SlotSelector::WholeCarrier)
    ]
}
fn resource_state() -> impl Strategy<Value = ResourceState> {
    prop_oneof![Just(ResourceState::InService), Just(ResourceState::Faulty)]
}

// ---------------------------------------------------------------------------------------
// Messages: one strategy per message type. The match on `MessageType` has no wildcard, so
// a new type added to the protocol fails to compile here until it gets a strategy.
// ---------------------------------------------------------------------------------------

fn message_of(ty: MessageType) -> BoxedStrategy<Message> {
    use Message as M;
    use MessageType as T;
    match ty {
        // §5.1 Link
        T::LinkHello => site_id().prop_map(|site| M::LinkHello { site }).boxed(),
        T::LinkChallenge => any::<[u8; 32]>()
            .prop_map(|nonce| M::LinkChallenge { nonce })
            .boxed(),
        T::LinkResponse => any::<[u8; 32]>().prop_map(|mac| M::LinkResponse { mac }).boxed(),
        T::LinkAccept => (
            prop_oneof![100u32..=600_000, Just(100u32), Just(600_000u32)],
            1u8..=255,
        )
            .prop_map(|(keepalive_interval_ms, misses)| M::LinkAccept {
                keepalive_interval_ms,
                misses,
            })
            .boxed(),
        T::LinkReject => cause().prop_map(|cause| M::LinkReject { cause }).boxed(),
        T::Keepalive => Just(M::Keepalive).boxed(),
        T::KeepaliveAck => Just(M::KeepaliveAck).boxed(),
        T::LinkClose => cause().prop_map(|cause| M::LinkClose { cause }).boxed(),
        T::FrameError => (cause(), any::<u8>())
            .prop_map(|(cause, offending_type)| M::FrameError {
                cause,
                offending_type,
            })
            .boxed(),
        T::Ack => message_type().prop_map(|acked| M::Ack { acked }).boxed(),
        T::LinkRedirect => "[!-~]{1,255}"
            .prop_map(|a| M::LinkRedirect {
                active: ControllerAddress::new(&a).unwrap(),
            })
            .boxed(),
        // §5.2 Registration and mobility
        T::RegRequest => identity().prop_map(|identity| M::RegRequest { identity }).boxed(),
        T::AuthChallenge => any::<[u8; 16]>()
            .prop_map(|rand| M::AuthChallenge { rand })
            .boxed(),
        T::AuthResponse => any::<[u8; 8]>().prop_map(|res| M::AuthResponse { res }).boxed(),
        T::RegAccept => (digits15(), individual(), tmsi(), unit(), talkgroup_list())
            .prop_map(|(d, individual, tmsi, unit, talkgroups)| M::RegAccept {
                imsi: Imsi(d),
                individual,
                tmsi,
                unit,
                talkgroups,
            })
            .boxed(),
        T::RegReject => cause().prop_map(|cause| M::RegReject { cause }).boxed(),
        T::Deregister => tmsi().prop_map(|tmsi| M::Deregister { tmsi }).boxed(),
        T::LocationUpdate => (tmsi(), location_reason())
            .prop_map(|(tmsi, reason)| M::LocationUpdate { tmsi, reason })
            .boxed(),
        T::LocationAccept => tmsi().prop_map(|tmsi| M::LocationAccept { tmsi }).boxed(),
        T::Affiliate => (tmsi(), talkgroup_list())
            .prop_map(|(tmsi, talkgroups)| M::Affiliate { tmsi, talkgroups })
            .boxed(),
        T::AffiliateAccept => talkgroup_list()
            .prop_map(|talkgroups| M::AffiliateAccept { talkgroups })
            .boxed(),
        // §5.3 Calls and services
        T::GroupCallReq => (tmsi(), talkgroup(), call_scope())
            .prop_map(|(tmsi, talkgroup, scope)| M::GroupCallReq {
                tmsi,
                talkgroup,
                scope,
            })
            .boxed(),
        T::PrivateCallReq => (tmsi(), unit())
            .prop_map(|(tmsi, target)| M::PrivateCallReq { tmsi, target })
            .boxed(),
        T::EmergencyCallReq => (tmsi(), talkgroup())
            .prop_map(|(tmsi, talkgroup)| M::EmergencyCallReq { tmsi, talkgroup })
            .boxed(),
        T::CallAlertReq => (tmsi(), unit())
            .prop_map(|(tmsi, target)| M::CallAlertReq { tmsi, target })
            .boxed(),
        T::StatusReq => (tmsi(), target(), any::<u16>())
            .prop_map(|(tmsi, target, code)| M::StatusReq { tmsi, target, code })
            .boxed(),
        T::ShortDataReq => (tmsi(), target(), short_data())
            .prop_map(|(tmsi, target, data)| M::ShortDataReq { tmsi, target, data })
            .boxed(),
        T::CallCancel => (tmsi(), any::<u32>())
            .prop_map(|(tmsi, request_txn)| M::CallCancel { tmsi, request_txn })
            .boxed(),
        T::ChannelGrant => (
            call_id(),
            call_type(),
            unit(),
            target(),
            prop_oneof![
                3 => vec(site_grant(), 1..=4),
                1 => vec(site_grant(), 1..=MAX_GRANT_SITES),
                1 => vec(site_grant(), MAX_GRANT_SITES..=MAX_GRANT_SITES),
            ],
        )
            .prop_map(|(call, call_type, caller, target, sites)| M::ChannelGrant {
                call,
                call_type,
                caller,
                target,
                sites,
            })
            .boxed(),
        T::Queued => position().prop_map(|position| M::Queued { position }).boxed(),
        T::QueueUpdate => position()
            .prop_map(|position| M::QueueUpdate { position })
            .boxed(),
        T::PttPress => (call_id(), tmsi())
            .prop_map(|(call, tmsi)| M::PttPress { call, tmsi })
            .boxed(),
        T::PttRelease => (call_id(), tmsi())
            .prop_map(|(call, tmsi)| M::PttRelease { call, tmsi })
            .boxed(),
        T::PttGrant => (call_id(), unit())
            .prop_map(|(call, talker)| M::PttGrant { call, talker })
            .boxed(),
        T::CallEnd => (call_id(), cause())
            .prop_map(|(call, cause)| M::CallEnd { call, cause })
            .boxed(),
        T::Preempted => (call_id(), cause())
            .prop_map(|(call, cause)| M::Preempted { call, cause })
            .boxed(),
        T::Deny => (message_type(), cause())
            .prop_map(|(request, cause)| M::Deny { request, cause })
            .boxed(),
        T::CallAlert => (tmsi(), unit())
            .prop_map(|(tmsi, caller)| M::CallAlert { tmsi, caller })
            .boxed(),
        T::StatusDelivery => (tmsi(), unit(), any::<u16>())
            .prop_map(|(tmsi, source, code)| M::StatusDelivery { tmsi, source, code })
            .boxed(),
        T::ShortDataDelivery => (message_id(), tmsi(), unit(), short_data())
            .prop_map(|(id, tmsi, source, data)| M::ShortDataDelivery {
                id,
                tmsi,
                source,
                data,
            })
            .boxed(),
        T::ShortDataAck => message_id().prop_map(|id| M::ShortDataAck { id }).boxed(),
        // §5.4 Operator commands
        T::Inhibit => tmsi().prop_map(|tmsi| M::Inhibit { tmsi }).boxed(),
        T::InhibitAck => tmsi().prop_map(|tmsi| M::InhibitAck { tmsi }).boxed(),
        T::Enable => tmsi().prop_map(|tmsi| M::Enable { tmsi }).boxed(),
        T::EnableAck => tmsi().prop_map(|tmsi| M::EnableAck { tmsi }).boxed(),
        T::RadioCheck => tmsi().prop_map(|tmsi| M::RadioCheck { tmsi }).boxed(),
        T::RadioCheckAck => tmsi().prop_map(|tmsi| M::RadioCheckAck { tmsi }).boxed(),
        // §5.5 Site
        T::SiteStatus => (carrier(), slot_selector(), resource_state())
            .prop_map(|(carrier, slot, state)| M::SiteStatus { carrier, slot, state })
            .boxed(),
    }
}

/// Any message of protocol v1, every type equally likely.
fn message() -> impl Strategy<Value = Message> {
    Union::new(MessageType::ALL.iter().map(|&t| message_of(t)))
}

fn txn() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => any::<u32>(),
        1 => Just(0u32),
        1 => Just(0x7FFF_FFFFu32),
        1 => Just(0x8000_0000u32),
        1 => Just(u32::MAX),
    ]
}

/// Any well-formed frame: any message, any transaction id, with or without EMERGENCY.
fn frame() -> impl Strategy<Value = Frame> {
    (txn(), any::<bool>(), message()).prop_map(|(txn, emergency, msg)| Frame { txn, emergency, msg })
}

/// The index of a message's variant. No wildcard: adding a variant to `Message` breaks
/// the build here, a reminder to give it a strategy above.
fn variant_index(m: &Message) -> usize {
    use Message as M;
    match m {
        M::LinkHello { .. } => 0,
        M::LinkChallenge { .. } => 1,
        M::LinkResponse { .. } => 2,
        M::LinkAccept { .. } => 3,
        M::LinkReject { .. } => 4,
        M::Keepalive => 5,
        M::KeepaliveAck => 6,
        M::LinkClose { .. } => 7,
        M::FrameError { .. } => 8,
        M::Ack { .. } => 9,
        M::RegRequest { .. } => 10,
        M::AuthChallenge { .. } => 11,
        M::AuthResponse { .. } => 12,
        M::RegAccept { .. } => 13,
        M::RegReject { .. } => 14,
        M::Deregister { .. } => 15,
        M::LocationUpdate { .. } => 16,
        M::LocationAccept { .. } => 17,
        M::Affiliate { .. } => 18,
        M::AffiliateAccept { .. } => 19,
        M::GroupCallReq { .. } => 20,
        M::PrivateCallReq { .. } => 21,
        M::EmergencyCallReq { .. } => 22,
        M::CallAlertReq { .. } => 23,
        M::StatusReq { .. } => 24,
        M::ShortDataReq { .. } => 25,
        M::CallCancel { .. } => 26,
        M::ChannelGrant { .. } => 27,
        M::Queued { .. } => 28,
        M::QueueUpdate { .. } => 29,
        M::PttPress { .. } => 30,
        M::PttRelease { .. } => 31,
        M::PttGrant { .. } => 32,
        M::CallEnd { .. } => 33,
        M::Preempted { .. } => 34,
        M::Deny { .. } => 35,
        M::CallAlert { .. } => 36,
        M::StatusDelivery { .. } => 37,
        M::ShortDataDelivery { .. } => 38,
        M::ShortDataAck { .. } => 39,
        M::Inhibit { .. } => 40,
        M::InhibitAck { .. } => 41,
        M::Enable { .. } => 42,
        M::EnableAck { .. } => 43,
        M::RadioCheck { .. } => 44,
        M::RadioCheckAck { .. } => 45,
        M::SiteStatus { .. } => 46,
        M::LinkRedirect { .. } => 47,
    }
}
const MESSAGE_VARIANTS: usize = 48;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Decodes frames off the front of `buf` until it is `Incomplete` or the stream is lost,
/// checking on the way that every reported length is sane and that every well-formed
/// frame re-encodes to exactly the bytes it was decoded from (canonical decoding).
/// Returns the well-formed frames, how many bytes were consumed, and the stream error.
fn drain(buf: &[u8], max_payload: usize) -> Result<(Vec<Frame>, usize, Option<StreamError>), TestCaseError> {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        match decode(rest, max_payload) {
            Ok(Decoded::Incomplete) => {
                prop_assert!(
                    rest.len() < HEADER_LEN + MAX_PAYLOAD,
                    "Incomplete with {} bytes buffered",
                    rest.len()
                );
                return Ok((frames, pos, None));
            }
            Err(e) => return Ok((frames, pos, Some(e))),
            Ok(Decoded::Frame { len, result }) => {
                prop_assert!(len >= HEADER_LEN, "frame len {len} < header");
                prop_assert!(len <= rest.len(), "frame len {len} > buffered {}", rest.len());
                prop_assert!(
                    len <= HEADER_LEN + max_payload.min(MAX_PAYLOAD),
                    "frame len {len} over the limit"
                );
                if let Ok(frame) = result {
                    let re = frame.to_bytes();
                    prop_assert_eq!(
                        &re[..],
                        &rest[..len],
                        "decode is not canonical: input {} decoded to {:?} which re-encodes as {}",
                        hex(&rest[..len]),
                        frame,
                        hex(&re)
                    );
                    frames.push(frame);
                }
                pos += len;
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b
}

/// One damage done to an encoded frame; positions are taken modulo the buffer length.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        keep: usize,
    },
    Insert {
        at: usize,
        value: u8,
    },
    Remove {
        at: usize,
    },
    /// Rewrites the length field to the actual payload length, so that a frame damaged by
    /// an insert or remove still reaches the payload decoder instead of being Incomplete.
    FixLength,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        1 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        2 => any::<usize>().prop_map(|at| Mutation::Remove { at }),
        2 => Just(Mutation::FixLength),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    match *m {
        Mutation::FlipBit { at, bit } if !buf.is_empty() => {
            let n = buf.len();
            buf[at % n] ^= 1 << bit;
        }
        Mutation::SetByte { at, value } if !buf.is_empty() => {
            let n = buf.len();
            buf[at % n] = value;
        }
        Mutation::Truncate { keep } => {
            let n = buf.len();
            buf.truncate(keep % (n + 1));
        }
        Mutation::Insert { at, value } => {
            let n = buf.len();
            buf.insert(at % (n + 1), value);
        }
        Mutation::Remove { at } if !buf.is_empty() => {
            let n = buf.len();
            buf.remove(at % n);
        }
        Mutation::FixLength if buf.len() >= HEADER_LEN => {
            let payload = (buf.len() - HEADER_LEN).min(usize::from(u16::MAX)) as u16;
            buf[10..12].copy_from_slice(&payload.to_be_bytes());
        }
        _ => {}
    }
}

/// A buffer that starts with a valid magic and version, then a type byte (usually a
/// known one), flags (usually valid), a transaction id, a length (usually the payload's
/// real length) and random payload bytes.
fn header_prefixed() -> impl Strategy<Value = Vec<u8>> {
    let ty = prop_oneof![3 => message_type().prop_map(|t| t.code()), 1 => any::<u8>()];
    let flags = prop_oneof![3 => 0u16..=1, 1 => any::<u16>()];
    let payload = prop_oneof![
        3 => vec(any::<u8>(), 0..=48),
        1 => vec(any::<u8>(), 0..=MAX_PAYLOAD + 16),
        1 => vec(any::<u8>(), 0..4096),
    ];
    // None: the payload's real length.
    let len = prop_oneof![3 => Just(None), 1 => any::<u16>().prop_map(Some)];
    (ty, flags, any::<u32>(), len, payload).prop_map(|(ty, flags, txn, len, payload)| {
        let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(ty);
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&txn.to_be_bytes());
        let len = len.unwrap_or(payload.len().min(usize::from(u16::MAX)) as u16);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&payload);
        b
    })
}

/// A receiver limit: usually the protocol maximum, sometimes a lower configured one, and
/// sometimes one above `MAX_PAYLOAD` (which `decode` must clamp).
fn max_payload() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(MAX_PAYLOAD), 1 => 0usize..=MAX_PAYLOAD, 1 => MAX_PAYLOAD..=usize::MAX]
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

#[test]
fn the_strategy_covers_every_message_type() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    assert_eq!(MessageType::ALL.len(), MESSAGE_VARIANTS);
    let mut runner = TestRunner::deterministic();
    for &ty in MessageType::ALL {
        let s = message_of(ty);
        for _ in 0..8 {
            let m = s.new_tree(&mut runner).unwrap().current();
            assert_eq!(m.message_type(), ty, "strategy for {ty} made {m:?}");
        }
    }
    // And the union reaches all of them.
    let s = message();
    let mut seen = [false; MESSAGE_VARIANTS];
    for _ in 0..5000 {
        seen[variant_index(&s.new_tree(&mut runner).unwrap().current())] = true;
    }
    let missing: Vec<_> = (0..MESSAGE_VARIANTS).filter(|&i| !seen[i]).collect();
    assert!(missing.is_empty(), "variants never generated: {missing:?}");
}

proptest! {
    #![proptest_config(config())]

    /// encode → decode gives back the same frame, `decode` reports the whole buffer as
    /// one frame, and every strict prefix is `Incomplete`.
    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let bytes = frame.to_bytes();
        prop_assert!(bytes.len() >= HEADER_LEN && bytes.len() <= HEADER_LEN + MAX_PAYLOAD);
        prop_assert_eq!(&bytes[..2], &MAGIC[..]);
        prop_assert_eq!(bytes[2], VERSION);
        prop_assert_eq!(bytes[3], frame.msg.message_type().code());
        prop_assert_eq!(u16::from_be_bytes([bytes[4], bytes[5]]), u16::from(frame.emergency));
        prop_assert_eq!(u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]), frame.txn);
        prop_assert_eq!(usize::from(u16::from_be_bytes([bytes[10], bytes[11]])), bytes.len() - HEADER_LEN);

        prop_assert_eq!(Frame::decode_exact(&bytes), Ok(frame.clone()));
        prop_assert_eq!(
            decode(&bytes, MAX_PAYLOAD),
            Ok(Decoded::Frame { len: bytes.len(), result: Ok(frame.clone()) })
        );
        // A receiver limit exactly at this frame's payload length still accepts it.
        prop_assert_eq!(
            decode(&bytes, bytes.len() - HEADER_LEN),
            Ok(Decoded::Frame { len: bytes.len(), result: Ok(frame.clone()) })
        );
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut], MAX_PAYLOAD), Ok(Decoded::Incomplete), "prefix of {} bytes", cut);
        }
    }

    /// Frames back to back in one buffer come apart one after the other, and also when
    /// the stream arrives in arbitrary chunks (as from a socket).
    #[test]
    fn concatenated_frames_split(
        frames in vec(frame(), 1..8),
        chunks in vec(1usize..200, 1..32),
    ) {
        let bytes = encode_all(&frames);

        // All at once.
        let mut pos = 0;
        for (n, want) in frames.iter().enumerate() {
            let len = want.to_bytes().len();
            prop_assert_eq!(
                decode(&bytes[pos..], MAX_PAYLOAD),
                Ok(Decoded::Frame { len, result: Ok(want.clone()) }),
                "frame #{} at offset {}", n, pos
            );
            pos += len;
        }
        prop_assert_eq!(pos, bytes.len());
        prop_assert_eq!(decode(&bytes[pos..], MAX_PAYLOAD), Ok(Decoded::Incomplete));
        let (got, used, err) = drain(&bytes, MAX_PAYLOAD)?;
        prop_assert_eq!(&got, &frames);
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(err, None);

        // Chunk by chunk, decoding everything available after each read.
        let mut buffer: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        let mut fed = 0;
        let mut sizes = chunks.iter().cycle();
        while fed < bytes.len() {
            let n = (*sizes.next().unwrap()).min(bytes.len() - fed);
            buffer.extend_from_slice(&bytes[fed..fed + n]);
            fed += n;
            loop {
                match decode(&buffer, MAX_PAYLOAD) {
                    Ok(Decoded::Incomplete) => break,
                    Ok(Decoded::Frame { len, result }) => {
                        got.push(result.expect("well-formed frame"));
                        buffer.drain(..len);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("stream lost: {e}"))),
                }
            }
        }
        prop_assert!(buffer.is_empty());
        prop_assert_eq!(got, frames);
    }

    /// `decode` never panics on arbitrary bytes; a reported frame length is within the
    /// buffer and at least a header; well-formed frames are canonical.
    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..4096), max in max_payload()) {
        drain(&buf, max)?;
        if let Ok(Decoded::Frame { len, .. }) = decode(&buf, max) {
            prop_assert!(len >= HEADER_LEN && len <= buf.len());
        }
    }

    /// The same, on bytes that pass the magic and version check, so the type, flags,
    /// length and payload decoders are what gets exercised.
    #[test]
    fn header_prefixed_bytes_never_panic(buf in header_prefixed(), max in max_payload()) {
        match decode(&buf, max) {
            Ok(Decoded::Frame { len, .. }) => prop_assert!(len >= HEADER_LEN && len <= buf.len()),
            Ok(Decoded::Incomplete) => {}
            Err(e) => prop_assert!(matches!(e, StreamError::TooLong { .. }), "unexpected {:?}", e),
        }
        drain(&buf, max)?;
    }

    /// Damaging a valid frame (bit flips, overwritten, inserted and removed bytes,
    /// truncation) never panics, and anything still accepted as well-formed re-encodes to
    /// exactly the bytes it was decoded from.
    #[test]
    fn mutated_frames_decode_canonically(
        frames in vec(frame(), 1..4),
        mutations in vec(mutation(), 1..6),
        max in max_payload(),
    ) {
        let mut buf = encode_all(&frames).to_vec();
        for m in &mutations {
            apply(&mut buf, m);
        }
        drain(&buf, max)?;
        for cut in [0, 1, 2, 3, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 1] {
            if cut <= buf.len() {
                drain(&buf[..cut], max)?;
            }
        }
    }

    /// Single-field corruption of the payload only (header intact): the payload decoder
    /// either rejects the frame or accepts bytes that re-encode identically.
    #[test]
    fn payload_byte_overwrites_are_canonical(frame in frame(), at in any::<usize>(), value in any::<u8>()) {
        let mut buf = frame.to_bytes().to_vec();
        if buf.len() > HEADER_LEN {
            let i = HEADER_LEN + at % (buf.len() - HEADER_LEN);
            buf[i] = value;
        }
        let (_, used, err) = drain(&buf, MAX_PAYLOAD)?;
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(err, None);
    }
}
