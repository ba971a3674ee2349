//! The control-channel wire protocol v1, as specified in `protocol/PROTOCOL.md`.
//!
//! Sans-IO: message types, [`decode`] from a byte slice and [`Frame::encode`] into a
//! `BytesMut`. No tokio and no sockets here; `link::codec` wraps this for TCP.

mod cause;
mod frame;
mod ids;
mod link_auth;
mod message;

pub use cause::Cause;
pub use frame::{
    decode, DecodeExactError, Decoded, Frame, FrameError, StreamError, FLAG_EMERGENCY, HEADER_LEN, MAGIC,
    MAX_PAYLOAD, VERSION,
};
pub use ids::*;
pub use link_auth::{link_mac, verify_link_mac, SiteKey, SiteKeyError, LINK_AUTH_LABEL};
pub use message::{
    CallScope, CallType, ControllerAddress, Direction, Family, LocationReason, Message, MessageType,
    PayloadError, ResourceState, ShortData, SlotSelector, MAX_GRANT_SITES,
};

/// First transaction id of the controller's range (`PROTOCOL.md §2.2`).
pub const CONTROLLER_TXN_BASE: u32 = 0x8000_0000;

/// Whether `txn` lies in the gateway's range `1..=0x7FFF_FFFF`.
pub fn is_gateway_txn(txn: u32) -> bool {
    txn != 0 && txn < CONTROLLER_TXN_BASE
}
