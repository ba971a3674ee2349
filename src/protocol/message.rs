//! Typed messages (`PROTOCOL.md §5`): what a frame's payload means, with its encoder and
//! its nom decoder. Decoding names the field that failed and why.

use bytes::{BufMut, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u64, be_u8};
use nom::IResult;
use std::fmt;

use super::cause::Cause;
use super::ids::*;

/// Which side sends a message (`PROTOCOL.md §5`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Gateway to controller only.
    ToController,
    /// Controller to gateway only.
    ToGateway,
    /// Either side.
    Both,
}

/// The service a message belongs to (the message table's last column).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    /// The link itself (handshake, keepalive, close, frame errors): the link layer's.
    Link,
    /// Answers any service gives or takes (`ACK`, `DENY`).
    Answer,
    /// Registration, location updates, affiliation.
    Registration,
    /// Calls, the busy queue, floor control and the slots (`SITE_STATUS`).
    Call,
    /// Call alerts, status messages and short data.
    Messaging,
    /// Inhibit, enable and radio check over the air.
    RadioCommand,
}

macro_rules! message_types {
    ($($name:ident = $code:literal, $wire:literal, $dir:ident, $gw_txn:literal, $family:ident;)*) => {
        /// The message type byte of the frame header.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        #[repr(u8)]
        pub enum MessageType {
            $(#[doc = $wire] $name = $code,)*
        }

        impl MessageType {
            /// Every message type, in spec order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$name,)*];

            /// The type with this code, or `None` for an unknown type.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(MessageType::$name),)*
                    _ => None,
                }
            }

            /// The name used in the spec, e.g. `LINK_HELLO`.
            pub const fn wire_name(self) -> &'static str {
                match self { $(MessageType::$name => $wire,)* }
            }

            /// Which side sends it.
            pub const fn direction(self) -> Direction {
                match self { $(MessageType::$name => Direction::$dir,)* }
            }

            /// The service it belongs to: where the controller routes it when a gateway
            /// sends it (an `ACK` goes where the message it acknowledges belongs).
            pub const fn family(self) -> Family {
                match self { $(MessageType::$name => Family::$family,)* }
            }

            /// Whether a gateway sends it in a transaction of its own, so its transaction
            /// id must lie in the gateway's range (`PROTOCOL.md §2.2`).
            pub const fn gateway_transaction(self) -> bool {
                match self { $(MessageType::$name => $gw_txn,)* }
            }
        }
    };
}

message_types! {
    LinkHello = 0x01, "LINK_HELLO", ToController, true, Link;
    LinkChallenge = 0x02, "LINK_CHALLENGE", ToGateway, false, Link;
    LinkResponse = 0x03, "LINK_RESPONSE", ToController, true, Link;
    LinkAccept = 0x04, "LINK_ACCEPT", ToGateway, false, Link;
    LinkReject = 0x05, "LINK_REJECT", ToGateway, false, Link;
    Keepalive = 0x06, "KEEPALIVE", Both, true, Link;
    KeepaliveAck = 0x07, "KEEPALIVE_ACK", Both, false, Link;
    LinkClose = 0x08, "LINK_CLOSE", Both, false, Link;
    FrameError = 0x09, "FRAME_ERROR", Both, false, Link;
    Ack = 0x0A, "ACK", Both, false, Answer;
    LinkRedirect = 0x0B, "LINK_REDIRECT", ToGateway, false, Link;
    RegRequest = 0x10, "REG_REQUEST", ToController, true, Registration;
    AuthChallenge = 0x11, "AUTH_CHALLENGE", ToGateway, false, Registration;
    AuthResponse = 0x12, "AUTH_RESPONSE", ToController, true, Registration;
    RegAccept = 0x13, "REG_ACCEPT", ToGateway, false, Registration;
    RegReject = 0x14, "REG_REJECT", ToGateway, false, Registration;
    Deregister = 0x15, "DEREGISTER", ToController, true, Registration;
    LocationUpdate = 0x16, "LOCATION_UPDATE", ToController, true, Registration;
    LocationAccept = 0x17, "LOCATION_ACCEPT", ToGateway, false, Registration;
    Affiliate = 0x18, "AFFILIATE", ToController, true, Registration;
    AffiliateAccept = 0x19, "AFFILIATE_ACCEPT", ToGateway, false, Registration;
    GroupCallReq = 0x20, "GROUP_CALL_REQ", ToController, true, Call;
    PrivateCallReq = 0x21, "PRIVATE_CALL_REQ", ToController, true, Call;
    EmergencyCallReq = 0x22, "EMERGENCY_CALL_REQ", ToController, true, Call;
    CallAlertReq = 0x23, "CALL_ALERT_REQ", ToController, true, Messaging;
    StatusReq = 0x24, "STATUS_REQ", ToController, true, Messaging;
    ShortDataReq = 0x25, "SHORT_DATA_REQ", ToController, true, Messaging;
    CallCancel = 0x26, "CALL_CANCEL", ToController, true, Call;
    ChannelGrant = 0x28, "CHANNEL_GRANT", ToGateway, false, Call;
    Queued = 0x29, "QUEUED", ToGateway, false, Call;
    QueueUpdate = 0x2A, "QUEUE_UPDATE", ToGateway, false, Call;
    PttPress = 0x2B, "PTT_PRESS", ToController, true, Call;
    PttRelease = 0x2C, "PTT_RELEASE", ToController, true, Call;
    PttGrant = 0x2D, "PTT_GRANT", ToGateway, false, Call;
    CallEnd = 0x2E, "CALL_END", Both, false, Call;
    Preempted = 0x2F, "PREEMPTED", ToGateway, false, Call;
    Deny = 0x30, "DENY", ToGateway, false, Answer;
    CallAlert = 0x31, "CALL_ALERT", ToGateway, false, Messaging;
    StatusDelivery = 0x32, "STATUS_DELIVERY", ToGateway, false, Messaging;
    ShortDataDelivery = 0x33, "SHORT_DATA_DELIVERY", ToGateway, false, Messaging;
    ShortDataAck = 0x34, "SHORT_DATA_ACK", ToController, false, Messaging;
    Inhibit = 0x40, "INHIBIT", ToGateway, false, RadioCommand;
    InhibitAck = 0x41, "INHIBIT_ACK", ToController, false, RadioCommand;
    Enable = 0x42, "ENABLE", ToGateway, false, RadioCommand;
    EnableAck = 0x43, "ENABLE_ACK", ToController, false, RadioCommand;
    RadioCheck = 0x44, "RADIO_CHECK", ToGateway, false, RadioCommand;
    RadioCheckAck = 0x45, "RADIO_CHECK_ACK", ToController, false, RadioCommand;
    SiteStatus = 0x50, "SITE_STATUS", ToController, true, Call;
}

impl MessageType {
    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

/// Why a unit sends `LOCATION_UPDATE`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LocationReason {
    /// Periodic registration refresh.
    Periodic = 1,
    /// The unit moved to this site.
    SiteChange = 2,
}

/// The reach of a group call.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CallScope {
    /// The caller's site only.
    Local = 0,
    /// A configured list of sites.
    SelectedArea = 1,
    /// Every site where a member is registered and affiliated.
    WideArea = 2,
}

/// The kind of call a grant is for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CallType {
    /// Talkgroup call.
    Group = 1,
    /// Unit to unit.
    Private = 2,
    /// Emergency call on a talkgroup.
    Emergency = 3,
}

/// Which slots a `SITE_STATUS` is about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SlotSelector {
    /// One slot of the carrier.
    Slot(Slot),
    /// The whole carrier (`0xFF` on the wire).
    WholeCarrier,
}

/// A slot's or carrier's state in `SITE_STATUS`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ResourceState {
    /// In service, or restored to service.
    InService = 0,
    /// Faulty: never to be granted.
    Faulty = 1,
}

/// Short-data user payload, 1..=1024 bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ShortData(Vec<u8>);

impl ShortData {
    /// Most bytes one message may carry.
    pub const MAX_LEN: usize = 1024;

    /// The payload, or `None` when empty or longer than [`Self::MAX_LEN`].
    pub fn new(data: Vec<u8>) -> Option<Self> {
        (1..=Self::MAX_LEN).contains(&data.len()).then_some(Self(data))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ShortData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortData({})", hex::encode(&self.0))
    }
}

/// The active controller's link address a standby names in `LINK_REDIRECT`: 1..=255
/// printable ASCII bytes (`host:port`, as the gateway would dial it).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ControllerAddress(String);

impl ControllerAddress {
    /// Most bytes an address may have.
    pub const MAX_LEN: usize = 255;

    /// The address, or `None` when empty, longer than [`Self::MAX_LEN`], or not
    /// printable ASCII (`0x21..=0x7E`).
    pub fn new(text: &str) -> Option<Self> {
        let fits = (1..=Self::MAX_LEN).contains(&text.len());
        (fits && text.bytes().all(|b| b.is_ascii_graphic())).then(|| Self(text.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Every message of protocol v1 (`PROTOCOL.md §5`).
#[allow(missing_docs)] // Each variant and field is documented in the spec table it names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    // §5.1 Link
    LinkHello {
        site: SiteId,
    },
    LinkChallenge {
        nonce: [u8; 32],
    },
    LinkResponse {
        mac: [u8; 32],
    },
    LinkAccept {
        keepalive_interval_ms: u32,
        misses: u8,
    },
    LinkReject {
        cause: Cause,
    },
    Keepalive,
    KeepaliveAck,
    LinkClose {
        cause: Cause,
    },
    FrameError {
        cause: Cause,
        offending_type: u8,
    },
    Ack {
        acked: MessageType,
    },
    LinkRedirect {
        active: ControllerAddress,
    },
    // §5.2 Registration and mobility
    RegRequest {
        identity: Identity,
    },
    AuthChallenge {
        rand: [u8; 16],
    },
    AuthResponse {
        res: [u8; 8],
    },
    RegAccept {
        imsi: Imsi,
        individual: IndividualId,
        tmsi: Tmsi,
        unit: Unit,
        talkgroups: TalkgroupList,
    },
    RegReject {
        cause: Cause,
    },
    Deregister {
        tmsi: Tmsi,
    },
    LocationUpdate {
        tmsi: Tmsi,
        reason: LocationReason,
    },
    LocationAccept {
        tmsi: Tmsi,
    },
    Affiliate {
        tmsi: Tmsi,
        talkgroups: TalkgroupList,
    },
    AffiliateAccept {
        talkgroups: TalkgroupList,
    },
    // §5.3 Calls and services
    GroupCallReq {
        tmsi: Tmsi,
        talkgroup: TalkgroupId,
        scope: CallScope,
    },
    PrivateCallReq {
        tmsi: Tmsi,
        target: Unit,
    },
    EmergencyCallReq {
        tmsi: Tmsi,
        talkgroup: TalkgroupId,
    },
    CallAlertReq {
        tmsi: Tmsi,
        target: Unit,
    },
    StatusReq {
        tmsi: Tmsi,
        target: Target,
        code: u16,
    },
    ShortDataReq {
        tmsi: Tmsi,
        target: Target,
        data: ShortData,
    },
    CallCancel {
        tmsi: Tmsi,
        request_txn: u32,
    },
    ChannelGrant {
        call: CallId,
        call_type: CallType,
        caller: Unit,
        target: Target,
        sites: Vec<SiteGrant>,
    },
    Queued {
        position: QueuePosition,
    },
    QueueUpdate {
        position: QueuePosition,
    },
    PttPress {
        call: CallId,
        tmsi: Tmsi,
    },
    PttRelease {
        call: CallId,
        tmsi: Tmsi,
    },
    PttGrant {
        call: CallId,
        talker: Unit,
    },
    CallEnd {
        call: CallId,
        cause: Cause,
    },
    Preempted {
        call: CallId,
        cause: Cause,
    },
    Deny {
        request: MessageType,
        cause: Cause,
    },
    CallAlert {
        tmsi: Tmsi,
        caller: Unit,
    },
    StatusDelivery {
        tmsi: Tmsi,
        source: Unit,
        code: u16,
    },
    ShortDataDelivery {
        id: MessageId,
        tmsi: Tmsi,
        source: Unit,
        data: ShortData,
    },
    ShortDataAck {
        id: MessageId,
    },
    // §5.4 Operator commands
    Inhibit {
        tmsi: Tmsi,
    },
    InhibitAck {
        tmsi: Tmsi,
    },
    Enable {
        tmsi: Tmsi,
    },
    EnableAck {
        tmsi: Tmsi,
    },
    RadioCheck {
        tmsi: Tmsi,
    },
    RadioCheckAck {
        tmsi: Tmsi,
    },
    // §5.5 Site
    SiteStatus {
        carrier: Carrier,
        slot: SlotSelector,
        state: ResourceState,
    },
}

/// Most site grants one `CHANNEL_GRANT` may carry.
pub const MAX_GRANT_SITES: usize = 255;

/// A payload that does not decode, naming the field (`PROTOCOL.md §2.3`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{cause} at field `{field}`")]
pub struct PayloadError {
    /// `TruncatedPayload`, `TrailingBytes` or `InvalidField`.
    pub cause: Cause,
    /// The field that failed (for trailing bytes: the last field read).
    pub field: &'static str,
}

impl<I> nom::error::ParseError<I> for PayloadError {
    fn from_error_kind(_: I, _: nom::error::ErrorKind) -> Self {
        PayloadError {
            cause: Cause::TruncatedPayload,
            field: "?",
        }
    }
    fn append(_: I, _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

type In<'a> = &'a [u8];
type PResult<'a, T> = IResult<In<'a>, T, PayloadError>;

fn fail<T>(cause: Cause, field: &'static str) -> Result<T, nom::Err<PayloadError>> {
    Err(nom::Err::Error(PayloadError { cause, field }))
}

/// Runs a nom number/take parser and names the field if input runs out.
fn field<'a, T>(
    i: In<'a>,
    name: &'static str,
    p: fn(In<'a>) -> IResult<In<'a>, T, nom::error::Error<In<'a>>>,
) -> PResult<'a, T> {
    p(i).or_else(|_| fail(Cause::TruncatedPayload, name))
}

/// Reads a field and validates it; an out-of-range value is `InvalidField`.
fn checked<'a, R, T>(
    i: In<'a>,
    name: &'static str,
    p: fn(In<'a>) -> IResult<In<'a>, R, nom::error::Error<In<'a>>>,
    make: impl FnOnce(R) -> Option<T>,
) -> PResult<'a, T> {
    let (i, raw) = field(i, name, p)?;
    match make(raw) {
        Some(v) => Ok((i, v)),
        None => fail(Cause::InvalidField, name),
    }
}

fn u8_<'a>(i: In<'a>) -> IResult<In<'a>, u8, nom::error::Error<In<'a>>> {
    be_u8(i)
}
fn u16_<'a>(i: In<'a>) -> IResult<In<'a>, u16, nom::error::Error<In<'a>>> {
    be_u16(i)
}
fn u32_<'a>(i: In<'a>) -> IResult<In<'a>, u32, nom::error::Error<In<'a>>> {
    be_u32(i)
}
fn u64_<'a>(i: In<'a>) -> IResult<In<'a>, u64, nom::error::Error<In<'a>>> {
    be_u64(i)
}

fn array<'a, const N: usize>(i: In<'a>, name: &'static str) -> PResult<'a, [u8; N]> {
    let (i, b) =
        take::<_, _, nom::error::Error<In<'a>>>(N)(i).or_else(|_| fail(Cause::TruncatedPayload, name))?;
    Ok((i, b.try_into().expect("take returned N bytes")))
}

fn cause<'a>(i: In<'a>, name: &'static str) -> PResult<'a, Cause> {
    checked(i, name, u8_, Cause::from_code)
}
fn msg_type<'a>(i: In<'a>, name: &'static str) -> PResult<'a, MessageType> {
    checked(i, name, u8_, MessageType::from_code)
}
fn tmsi(i: In<'_>) -> PResult<'_, Tmsi> {
    checked(i, "tmsi", u32_, Tmsi::new)
}
fn call_id(i: In<'_>) -> PResult<'_, CallId> {
    checked(i, "call", u32_, CallId::new)
}
fn site_id<'a>(i: In<'a>, name: &'static str) -> PResult<'a, SiteId> {
    checked(i, name, u16_, SiteId::new)
}
fn talkgroup<'a>(i: In<'a>, name: &'static str) -> PResult<'a, TalkgroupId> {
    checked(i, name, u16_, TalkgroupId::new)
}
fn position(i: In<'_>) -> PResult<'_, QueuePosition> {
    checked(i, "position", u16_, QueuePosition::new)
}
fn digits<'a>(i: In<'a>, name: &'static str) -> PResult<'a, Digits15> {
    let (i, b) = array::<8>(i, name)?;
    match Digits15::from_bcd(&b) {
        Some(d) => Ok((i, d)),
        None => fail(Cause::InvalidField, name),
    }
}
fn unit<'a>(i: In<'a>, name: &'static str) -> PResult<'a, Unit> {
    let (i, fleet) = checked(i, name, u16_, FleetId::new)?;
    let (i, member) = checked(i, name, u16_, MemberId::new)?;
    Ok((i, Unit { fleet, member }))
}
fn target(i: In<'_>) -> PResult<'_, Target> {
    let (i, kind) = field(i, "target.kind", u8_)?;
    let (i, fleet) = checked(i, "target.fleet", u16_, FleetId::new)?;
    match kind {
        1 => {
            let (i, member) = checked(i, "target.id", u16_, MemberId::new)?;
            Ok((i, Target::Unit(Unit { fleet, member })))
        }
        2 => {
            let (i, talkgroup) = talkgroup(i, "target.id")?;
            Ok((i, Target::Talkgroup { fleet, talkgroup }))
        }
        _ => fail(Cause::InvalidField, "target.kind"),
    }
}
fn talkgroups(i: In<'_>) -> PResult<'_, TalkgroupList> {
    let (i, primary) = talkgroup(i, "talkgroups.primary")?;
    let (mut i, n) = field(i, "talkgroups.count", u8_)?;
    if usize::from(n) > TalkgroupList::MAX_SECONDARY {
        return fail(Cause::InvalidField, "talkgroups.count");
    }
    let mut secondary = Vec::with_capacity(n.into());
    for _ in 0..n {
        let (rest, tg) = talkgroup(i, "talkgroups.secondary")?;
        secondary.push(tg);
        i = rest;
    }
    match TalkgroupList::new(primary, secondary) {
        Some(l) => Ok((i, l)),
        None => fail(Cause::InvalidField, "talkgroups.secondary"),
    }
}
fn short_data(i: In<'_>) -> PResult<'_, ShortData> {
    let (i, len) = field(i, "data.length", u16_)?;
    if len == 0 || usize::from(len) > ShortData::MAX_LEN {
        return fail(Cause::InvalidField, "data.length");
    }
    let (i, b) =
        take::<_, _, nom::error::Error<In<'_>>>(len)(i).or_else(|_| fail(Cause::TruncatedPayload, "data"))?;
    Ok((i, ShortData(b.to_vec())))
}
fn enum_u8<'a, T>(i: In<'a>, name: &'static str, map: fn(u8) -> Option<T>) -> PResult<'a, T> {
    checked(i, name, u8_, map)
}

impl Message {
    /// The service this message goes to: its type's [`Family`], and for an `ACK` the
    /// family of the message it acknowledges.
    pub fn family(&self) -> Family {
        match self {
            Message::Ack { acked } => acked.family(),
            m => m.message_type().family(),
        }
    }

    /// The header type of this message.
    pub fn message_type(&self) -> MessageType {
        use Message as M;
        use MessageType as T;
        match self {
            M::LinkHello { .. } => T::LinkHello,
            M::LinkChallenge { .. } => T::LinkChallenge,
            M::LinkResponse { .. } => T::LinkResponse,
            M::LinkAccept { .. } => T::LinkAccept,
            M::LinkReject { .. } => T::LinkReject,
            M::LinkRedirect { .. } => T::LinkRedirect,
            M::Keepalive => T::Keepalive,
            M::KeepaliveAck => T::KeepaliveAck,
            M::LinkClose { .. } => T::LinkClose,
            M::FrameError { .. } => T::FrameError,
            M::Ack { .. } => T::Ack,
            M::RegRequest { .. } => T::RegRequest,
            M::AuthChallenge { .. } => T::AuthChallenge,
            M::AuthResponse { .. } => T::AuthResponse,
            M::RegAccept { .. } => T::RegAccept,
            M::RegReject { .. } => T::RegReject,
            M::Deregister { .. } => T::Deregister,
            M::LocationUpdate { .. } => T::LocationUpdate,
            M::LocationAccept { .. } => T::LocationAccept,
            M::Affiliate { .. } => T::Affiliate,
            M::AffiliateAccept { .. } => T::AffiliateAccept,
            M::GroupCallReq { .. } => T::GroupCallReq,
            M::PrivateCallReq { .. } => T::PrivateCallReq,
            M::EmergencyCallReq { .. } => T::EmergencyCallReq,
            M::CallAlertReq { .. } => T::CallAlertReq,
            M::StatusReq { .. } => T::StatusReq,
            M::ShortDataReq { .. } => T::ShortDataReq,
            M::CallCancel { .. } => T::CallCancel,
            M::ChannelGrant { .. } => T::ChannelGrant,
            M::Queued { .. } => T::Queued,
            M::QueueUpdate { .. } => T::QueueUpdate,
            M::PttPress { .. } => T::PttPress,
            M::PttRelease { .. } => T::PttRelease,
            M::PttGrant { .. } => T::PttGrant,
            M::CallEnd { .. } => T::CallEnd,
            M::Preempted { .. } => T::Preempted,
            M::Deny { .. } => T::Deny,
            M::CallAlert { .. } => T::CallAlert,
            M::StatusDelivery { .. } => T::StatusDelivery,
            M::ShortDataDelivery { .. } => T::ShortDataDelivery,
            M::ShortDataAck { .. } => T::ShortDataAck,
            M::Inhibit { .. } => T::Inhibit,
            M::InhibitAck { .. } => T::InhibitAck,
            M::Enable { .. } => T::Enable,
            M::EnableAck { .. } => T::EnableAck,
            M::RadioCheck { .. } => T::RadioCheck,
            M::RadioCheckAck { .. } => T::RadioCheckAck,
            M::SiteStatus { .. } => T::SiteStatus,
        }
    }

    /// Appends the payload (not the header) to `b`.
    pub fn encode_payload(&self, b: &mut BytesMut) {
        use Message as M;
        match self {
            M::LinkHello { site } => b.put_u16(site.get()),
            M::LinkChallenge { nonce } => b.put_slice(nonce),
            M::LinkResponse { mac } => b.put_slice(mac),
            M::LinkAccept {
                keepalive_interval_ms,
                misses,
            } => {
                b.put_u32(*keepalive_interval_ms);
                b.put_u8(*misses);
            }
            M::LinkReject { cause } | M::LinkClose { cause } | M::RegReject { cause } => {
                b.put_u8(cause.code())
            }
            M::Keepalive | M::KeepaliveAck => {}
            M::LinkRedirect { active } => {
                let text = active.as_str().as_bytes();
                b.put_u8(text.len() as u8);
                b.put_slice(text);
            }
            M::FrameError {
                cause,
                offending_type,
            } => {
                b.put_u8(cause.code());
                b.put_u8(*offending_type);
            }
            M::Ack { acked } => b.put_u8(acked.code()),
            M::RegRequest { identity } => match identity {
                Identity::Imei(x) => {
                    b.put_u8(1);
                    b.put_slice(&x.0.to_bcd());
                }
                Identity::Imsi(x) => {
                    b.put_u8(2);
                    b.put_slice(&x.0.to_bcd());
                }
                Identity::Tmsi(t) => {
                    b.put_u8(3);
                    b.put_u32(t.get());
                }
            },
            M::AuthChallenge { rand } => b.put_slice(rand),
            M::AuthResponse { res } => b.put_slice(res),
            M::RegAccept {
                imsi,
                individual,
                tmsi,
                unit,
                talkgroups,
            } => {
                b.put_slice(&imsi.0.to_bcd());
                b.put_u32(individual.get());
                b.put_u32(tmsi.get());
                put_unit(b, unit);
                put_talkgroups(b, talkgroups);
            }
            M::Deregister { tmsi }
            | M::LocationAccept { tmsi }
            | M::Inhibit { tmsi }
            | M::InhibitAck { tmsi }
            | M::Enable { tmsi }
            | M::EnableAck { tmsi }
            | M::RadioCheck { tmsi }
            | M::RadioCheckAck { tmsi } => b.put_u32(tmsi.get()),
            M::LocationUpdate { tmsi, reason } => {
                b.put_u32(tmsi.get());
                b.put_u8(*reason as u8);
            }
            M::Affiliate { tmsi, talkgroups } => {
                b.put_u32(tmsi.get());
                put_talkgroups(b, talkgroups);
            }
            M::AffiliateAccept { talkgroups } => put_talkgroups(b, talkgroups),
            M::GroupCallReq {
                tmsi,
                talkgroup,
                scope,
            } => {
                b.put_u32(tmsi.get());
                b.put_u16(talkgroup.get());
                b.put_u8(*scope as u8);
            }
            M::PrivateCallReq { tmsi, target } | M::CallAlertReq { tmsi, target } => {
                b.put_u32(tmsi.get());
                put_unit(b, target);
            }
            M::EmergencyCallReq { tmsi, talkgroup } => {
                b.put_u32(tmsi.get());
                b.put_u16(talkgroup.get());
            }
            M::StatusReq { tmsi, target, code } => {
                b.put_u32(tmsi.get());
                put_target(b, target);
                b.put_u16(*code);
            }
            M::ShortDataReq { tmsi, target, data } => {
                b.put_u32(tmsi.get());
                put_target(b, target);
                put_short_data(b, data);
            }
            M::CallCancel { tmsi, request_txn } => {
                b.put_u32(tmsi.get());
                b.put_u32(*request_txn);
            }
            M::ChannelGrant {
                call,
                call_type,
                caller,
                target,
                sites,
            } => {
                b.put_u32(call.get());
                b.put_u8(*call_type as u8);
                put_unit(b, caller);
                put_target(b, target);
                b.put_u8(sites.len() as u8);
                for s in sites {
                    b.put_u16(s.site.get());
                    b.put_u8(s.carrier.get());
                    b.put_u8(s.slot.get());
                }
            }
            M::Queued { position } | M::QueueUpdate { position } => b.put_u16(position.get()),
            M::PttPress { call, tmsi } | M::PttRelease { call, tmsi } => {
                b.put_u32(call.get());
                b.put_u32(tmsi.get());
            }
            M::PttGrant { call, talker } => {
                b.put_u32(call.get());
                put_unit(b, talker);
            }
            M::CallEnd { call, cause } | M::Preempted { call, cause } => {
                b.put_u32(call.get());
                b.put_u8(cause.code());
            }
            M::Deny { request, cause } => {
                b.put_u8(request.code());
                b.put_u8(cause.code());
            }
            M::CallAlert { tmsi, caller } => {
                b.put_u32(tmsi.get());
                put_unit(b, caller);
            }
            M::StatusDelivery { tmsi, source, code } => {
                b.put_u32(tmsi.get());
                put_unit(b, source);
                b.put_u16(*code);
            }
            M::ShortDataDelivery {
                id,
                tmsi,
                source,
                data,
            } => {
                b.put_u64(id.get());
                b.put_u32(tmsi.get());
                put_unit(b, source);
                put_short_data(b, data);
            }
            M::ShortDataAck { id } => b.put_u64(id.get()),
            M::SiteStatus { carrier, slot, state } => {
                b.put_u8(carrier.get());
                b.put_u8(match slot {
                    SlotSelector::Slot(s) => s.get(),
                    SlotSelector::WholeCarrier => 0xFF,
                });
                b.put_u8(*state as u8);
            }
        }
    }

    /// Decodes the payload of a message of type `ty`. The whole payload must be used.
    pub fn decode_payload(ty: MessageType, p: &[u8]) -> Result<Message, PayloadError> {
        let (rest, (msg, last)) = match decode_fields(ty, p) {
            Ok(v) => v,
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => return Err(e),
            Err(nom::Err::Incomplete(_)) => {
                return Err(PayloadError {
                    cause: Cause::TruncatedPayload,
                    field: "?",
                })
            }
        };
        if rest.is_empty() {
            Ok(msg)
        } else {
            Err(PayloadError {
                cause: Cause::TrailingBytes,
                field: last,
            })
        }
    }
}

fn put_unit(b: &mut BytesMut, u: &Unit) {
    b.put_u16(u.fleet.get());
    b.put_u16(u.member.get());
}

fn put_target(b: &mut BytesMut, t: &Target) {
    match t {
        Target::Unit(u) => {
            b.put_u8(1);
            put_unit(b, u);
        }
        Target::Talkgroup { fleet, talkgroup } => {
            b.put_u8(2);
            b.put_u16(fleet.get());
            b.put_u16(talkgroup.get());
        }
    }
}

fn put_talkgroups(b: &mut BytesMut, l: &TalkgroupList) {
    b.put_u16(l.primary().get());
    b.put_u8(l.secondary().len() as u8);
    for tg in l.secondary() {
        b.put_u16(tg.get());
    }
}

fn put_short_data(b: &mut BytesMut, d: &ShortData) {
    b.put_u16(d.0.len() as u16);
    b.put_slice(&d.0);
}

/// Decodes the fields of `ty`, returning the message and the name of the last field
/// (used to point at trailing bytes).
fn decode_fields(ty: MessageType, i: In<'_>) -> PResult<'_, (Message, &'static str)> {
    use Message as M;
    use MessageType as T;
    let ok = |i, m, last| Ok((i, (m, last)));
    match ty {
        T::LinkHello => {
            let (i, site) = site_id(i, "site")?;
            ok(i, M::LinkHello { site }, "site")
        }
        T::LinkChallenge => {
            let (i, nonce) = array::<32>(i, "nonce")?;
            ok(i, M::LinkChallenge { nonce }, "nonce")
        }
        T::LinkResponse => {
            let (i, mac) = array::<32>(i, "mac")?;
            ok(i, M::LinkResponse { mac }, "mac")
        }
        T::LinkAccept => {
            let (i, keepalive_interval_ms) = checked(i, "interval_ms", u32_, |v| {
                (100..=600_000).contains(&v).then_some(v)
            })?;
            let (i, misses) = checked(i, "misses", u8_, |v| (v >= 1).then_some(v))?;
            ok(
                i,
                M::LinkAccept {
                    keepalive_interval_ms,
                    misses,
                },
                "misses",
            )
        }
        T::LinkReject => {
            let (i, cause) = cause(i, "cause")?;
            ok(i, M::LinkReject { cause }, "cause")
        }
        T::LinkRedirect => {
            let (i, len) = field(i, "address.length", u8_)?;
            let (i, text) = take::<_, _, nom::error::Error<In<'_>>>(len)(i)
                .or_else(|_| fail(Cause::TruncatedPayload, "address"))?;
            let active = std::str::from_utf8(text).ok().and_then(ControllerAddress::new);
            let Some(active) = active else {
                return fail(Cause::InvalidField, "address");
            };
            ok(i, M::LinkRedirect { active }, "address")
        }
        T::Keepalive => ok(i, M::Keepalive, "(empty)"),
        T::KeepaliveAck => ok(i, M::KeepaliveAck, "(empty)"),
        T::LinkClose => {
            let (i, cause) = cause(i, "cause")?;
            ok(i, M::LinkClose { cause }, "cause")
        }
        T::FrameError => {
            let (i, cause) = cause(i, "cause")?;
            let (i, offending_type) = field(i, "offending_type", u8_)?;
            ok(
                i,
                M::FrameError {
                    cause,
                    offending_type,
                },
                "offending_type",
            )
        }
        T::Ack => {
            let (i, acked) = msg_type(i, "acked_type")?;
            ok(i, M::Ack { acked }, "acked_type")
        }
        T::RegRequest => {
            let (i, kind) = field(i, "identity.kind", u8_)?;
            let (i, identity) = match kind {
                1 => {
                    let (i, d) = digits(i, "identity.imei")?;
                    (i, Identity::Imei(Imei(d)))
                }
                2 => {
                    let (i, d) = digits(i, "identity.imsi")?;
                    (i, Identity::Imsi(Imsi(d)))
                }
                3 => {
                    let (i, t) = checked(i, "identity.tmsi", u32_, Tmsi::new)?;
                    (i, Identity::Tmsi(t))
                }
                _ => return fail(Cause::InvalidField, "identity.kind"),
            };
            ok(i, M::RegRequest { identity }, "identity")
        }
        T::AuthChallenge => {
            let (i, rand) = array::<16>(i, "rand")?;
            ok(i, M::AuthChallenge { rand }, "rand")
        }
        T::AuthResponse => {
            let (i, res) = array::<8>(i, "res")?;
            ok(i, M::AuthResponse { res }, "res")
        }
        T::RegAccept => {
            let (i, d) = digits(i, "imsi")?;
            let (i, individual) = checked(i, "individual", u32_, IndividualId::new)?;
            let (i, tmsi) = tmsi(i)?;
            let (i, unit) = unit(i, "unit")?;
            let (i, talkgroups) = talkgroups(i)?;
            let m = M::RegAccept {
                imsi: Imsi(d),
                individual,
                tmsi,
                unit,
                talkgroups,
            };
            ok(i, m, "talkgroups")
        }
        T::RegReject => {
            let (i, cause) = cause(i, "cause")?;
            ok(i, M::RegReject { cause }, "cause")
        }
        T::Deregister
        | T::LocationAccept
        | T::Inhibit
        | T::InhibitAck
        | T::Enable
        | T::EnableAck
        | T::RadioCheck
        | T::RadioCheckAck => {
            let (i, tmsi) = tmsi(i)?;
            let m = match ty {
                T::Deregister => M::Deregister { tmsi },
                T::LocationAccept => M::LocationAccept { tmsi },
                T::Inhibit => M::Inhibit { tmsi },
                T::InhibitAck => M::InhibitAck { tmsi },
                T::Enable => M::Enable { tmsi },
                T::EnableAck => M::EnableAck { tmsi },
                T::RadioCheck => M::RadioCheck { tmsi },
                _ => M::RadioCheckAck { tmsi },
            };
            ok(i, m, "tmsi")
        }
        T::LocationUpdate => {
            let (i, tmsi) = tmsi(i)?;
            let (i, reason) = enum_u8(i, "reason", |v| match v {
                1 => Some(LocationReason::Periodic),
                2 => Some(LocationReason::SiteChange),
                _ => None,
            })?;
            ok(i, M::LocationUpdate { tmsi, reason }, "reason")
        }
        T::Affiliate => {
            let (i, tmsi) = tmsi(i)?;
            let (i, talkgroups) = talkgroups(i)?;
            ok(i, M::Affiliate { tmsi, talkgroups }, "talkgroups")
        }
        T::AffiliateAccept => {
            let (i, talkgroups) = talkgroups(i)?;
            ok(i, M::AffiliateAccept { talkgroups }, "talkgroups")
        }
        T::GroupCallReq => {
            let (i, tmsi) = tmsi(i)?;
            let (i, talkgroup) = talkgroup(i, "talkgroup")?;
            let (i, scope) = enum_u8(i, "scope", |v| match v {
                0 => Some(CallScope::Local),
                1 => Some(CallScope::SelectedArea),
                2 => Some(CallScope::WideArea),
                _ => None,
            })?;
            ok(
                i,
                M::GroupCallReq {
                    tmsi,
                    talkgroup,
                    scope,
                },
                "scope",
            )
        }
        T::PrivateCallReq | T::CallAlertReq => {
            let (i, tmsi) = tmsi(i)?;
            let (i, target) = unit(i, "target")?;
            let m = if ty == T::PrivateCallReq {
                M::PrivateCallReq { tmsi, target }
            } else {
                M::CallAlertReq { tmsi, target }
            };
            ok(i, m, "target")
        }
        T::EmergencyCallReq => {
            let (i, tmsi) = tmsi(i)?;
            let (i, talkgroup) = talkgroup(i, "talkgroup")?;
            ok(i, M::EmergencyCallReq { tmsi, talkgroup }, "talkgroup")
        }
        T::StatusReq => {
            let (i, tmsi) = tmsi(i)?;
            let (i, target) = target(i)?;
            let (i, code) = field(i, "code", u16_)?;
            ok(i, M::StatusReq { tmsi, target, code }, "code")
        }
        T::ShortDataReq => {
            let (i, tmsi) = tmsi(i)?;
            let (i, target) = target(i)?;
            let (i, data) = short_data(i)?;
            ok(i, M::ShortDataReq { tmsi, target, data }, "data")
        }
        T::CallCancel => {
            let (i, tmsi) = tmsi(i)?;
            let (i, request_txn) = field(i, "request_txn", u32_)?;
            ok(i, M::CallCancel { tmsi, request_txn }, "request_txn")
        }
        T::ChannelGrant => {
            let (i, call) = call_id(i)?;
            let (i, call_type) = enum_u8(i, "call_type", |v| match v {
                1 => Some(CallType::Group),
                2 => Some(CallType::Private),
                3 => Some(CallType::Emergency),
                _ => None,
            })?;
            let (i, caller) = unit(i, "caller")?;
            let (i, target) = target(i)?;
            let (mut i, n) = checked(i, "sites.count", u8_, |n| {
                (1..=MAX_GRANT_SITES).contains(&usize::from(n)).then_some(n)
            })?;
            let mut sites = Vec::with_capacity(n.into());
            for _ in 0..n {
                let (r, site) = site_id(i, "sites.site")?;
                let (r, carrier) = checked(r, "sites.carrier", u8_, Carrier::new)?;
                let (r, slot) = checked(r, "sites.slot", u8_, Slot::new)?;
                sites.push(SiteGrant { site, carrier, slot });
                i = r;
            }
            ok(
                i,
                M::ChannelGrant {
                    call,
                    call_type,
                    caller,
                    target,
                    sites,
                },
                "sites",
            )
        }
        T::Queued | T::QueueUpdate => {
            let (i, position) = position(i)?;
            let m = if ty == T::Queued {
                M::Queued { position }
            } else {
                M::QueueUpdate { position }
            };
            ok(i, m, "position")
        }
        T::PttPress | T::PttRelease => {
            let (i, call) = call_id(i)?;
            let (i, tmsi) = tmsi(i)?;
            let m = if ty == T::PttPress {
                M::PttPress { call, tmsi }
            } else {
                M::PttRelease { call, tmsi }
            };
            ok(i, m, "tmsi")
        }
        T::PttGrant => {
            let (i, call) = call_id(i)?;
            let (i, talker) = unit(i, "talker")?;
            ok(i, M::PttGrant { call, talker }, "talker")
        }
        T::CallEnd | T::Preempted => {
            let (i, call) = call_id(i)?;
            let (i, cause) = cause(i, "cause")?;
            let m = if ty == T::CallEnd {
                M::CallEnd { call, cause }
            } else {
                M::Preempted { call, cause }
            };
            ok(i, m, "cause")
        }
        T::Deny => {
            let (i, request) = msg_type(i, "request_type")?;
            let (i, cause) = cause(i, "cause")?;
            ok(i, M::Deny { request, cause }, "cause")
        }
        T::CallAlert => {
            let (i, tmsi) = tmsi(i)?;
            let (i, caller) = unit(i, "caller")?;
            ok(i, M::CallAlert { tmsi, caller }, "caller")
        }
        T::StatusDelivery => {
            let (i, tmsi) = tmsi(i)?;
            let (i, source) = unit(i, "source")?;
            let (i, code) = field(i, "code", u16_)?;
            ok(i, M::StatusDelivery { tmsi, source, code }, "code")
        }
        T::ShortDataDelivery => {
            let (i, id) = checked(i, "message_id", u64_, MessageId::new)?;
            let (i, tmsi) = tmsi(i)?;
            let (i, source) = unit(i, "source")?;
            let (i, data) = short_data(i)?;
            ok(
                i,
                M::ShortDataDelivery {
                    id,
                    tmsi,
                    source,
                    data,
                },
                "data",
            )
        }
        T::ShortDataAck => {
            let (i, id) = checked(i, "message_id", u64_, MessageId::new)?;
            ok(i, M::ShortDataAck { id }, "message_id")
        }
        T::SiteStatus => {
            let (i, carrier) = checked(i, "carrier", u8_, Carrier::new)?;
            let (i, slot) = enum_u8(i, "slot", |v| match v {
                0xFF => Some(SlotSelector::WholeCarrier),
                v => Slot::new(v).map(SlotSelector::Slot),
            })?;
            let (i, state) = enum_u8(i, "state", |v| match v {
                0 => Some(ResourceState::InService),
                1 => Some(ResourceState::Faulty),
                _ => None,
            })?;
            ok(i, M::SiteStatus { carrier, slot, state }, "state")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_in_the_spec() {
        let spec = include_str!("../../protocol/PROTOCOL.md");
        for t in MessageType::ALL {
            let row = format!("| 0x{:02X} | {} ", t.code(), t.wire_name());
            assert!(spec.contains(&row), "{t} missing from PROTOCOL.md §5");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = Message::decode_payload(MessageType::LinkHello, &[0x00]).unwrap_err();
        assert_eq!(
            e,
            PayloadError {
                cause: Cause::TruncatedPayload,
                field: "site"
            }
        );
        let e = Message::decode_payload(MessageType::LinkHello, &[0x00, 0x00]).unwrap_err();
        assert_eq!(
            e,
            PayloadError {
                cause: Cause::InvalidField,
                field: "site"
            }
        );
        let e = Message::decode_payload(MessageType::LinkHello, &[0, 1, 2]).unwrap_err();
        assert_eq!(
            e,
            PayloadError {
                cause: Cause::TrailingBytes,
                field: "site"
            }
        );
    }
}
