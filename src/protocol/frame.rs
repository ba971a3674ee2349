//! Framing (`PROTOCOL.md §2`): the 12-byte header, and splitting a byte stream into
//! frames. Sans-IO: works on byte slices, knows nothing of sockets.

use bytes::{BufMut, BytesMut};

use super::cause::Cause;
use super::message::{Message, MessageType, PayloadError};

/// `TK`, the first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"TK";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 12;
/// The protocol's hard maximum payload length.
pub const MAX_PAYLOAD: usize = 2048;
/// Header flag bit 0: the frame belongs to an emergency procedure.
pub const FLAG_EMERGENCY: u16 = 0x0001;

/// One whole frame: header fields plus the typed message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    /// Transaction id (`PROTOCOL.md §2.2`).
    pub txn: u32,
    /// The EMERGENCY header flag.
    pub emergency: bool,
    /// The message; its type gives the header's type byte.
    pub msg: Message,
}

/// The stream is lost: the connection must be closed (`PROTOCOL.md §2.3`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum StreamError {
    /// The first two bytes are not `TK`.
    #[error("bad magic {0:02X?}: stream out of sync")]
    BadMagic([u8; 2]),
    /// The version byte is not 1.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The length field exceeds the receiver's limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Declared payload length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
}

impl StreamError {
    /// The cause code to close the link with.
    pub fn cause(&self) -> Cause {
        match self {
            StreamError::BadMagic(_) => Cause::OutOfSync,
            StreamError::UnsupportedVersion(_) => Cause::UnsupportedVersion,
            StreamError::TooLong { .. } => Cause::FrameTooLong,
        }
    }
}

/// A whole frame arrived, in sync, but it is malformed: answer `FRAME_ERROR`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    /// The type byte is not in the spec.
    #[error("unknown message type 0x{type_code:02X}")]
    UnknownType {
        /// Transaction id of the bad frame.
        txn: u32,
        /// The type byte.
        type_code: u8,
    },
    /// Reserved flag bits were set.
    #[error("reserved flag bits set in 0x{flags:04X} ({ty})")]
    ReservedFlags {
        /// Transaction id of the bad frame.
        txn: u32,
        /// The message type.
        ty: MessageType,
        /// The flags field.
        flags: u16,
    },
    /// The payload does not decode as its type.
    #[error("{ty}: {error}")]
    Payload {
        /// Transaction id of the bad frame.
        txn: u32,
        /// The message type.
        ty: MessageType,
        /// What is wrong and where.
        error: PayloadError,
    },
}

impl FrameError {
    /// The cause code for `FRAME_ERROR`.
    pub fn cause(&self) -> Cause {
        match self {
            FrameError::UnknownType { .. } => Cause::UnknownMessageType,
            FrameError::ReservedFlags { .. } => Cause::InvalidField,
            FrameError::Payload { error, .. } => error.cause,
        }
    }

    /// The bad frame's transaction id.
    pub fn txn(&self) -> u32 {
        match self {
            FrameError::UnknownType { txn, .. }
            | FrameError::ReservedFlags { txn, .. }
            | FrameError::Payload { txn, .. } => *txn,
        }
    }

    /// The bad frame's type byte.
    pub fn type_code(&self) -> u8 {
        match self {
            FrameError::UnknownType { type_code, .. } => *type_code,
            FrameError::ReservedFlags { ty, .. } | FrameError::Payload { ty, .. } => ty.code(),
        }
    }

    /// The `FRAME_ERROR` answer for this error.
    pub fn answer(&self) -> Frame {
        Frame::new(
            self.txn(),
            Message::FrameError {
                cause: self.cause(),
                offending_type: self.type_code(),
            },
        )
    }
}

/// What [`decode`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole frame yet; read more.
    Incomplete,
    /// A whole frame of `len` bytes (header included), well-formed or not.
    Frame {
        /// Bytes to consume from the buffer.
        len: usize,
        /// The frame, or why it is malformed.
        result: Result<Frame, FrameError>,
    },
}

/// Looks for one frame at the start of `buf`, accepting payloads up to `max_payload`.
///
/// Checks the magic as soon as its bytes arrive and the version and length as soon as
/// the header is complete, so a peer cannot make the receiver wait for a frame it will
/// refuse. Never panics, whatever `buf` holds.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<Decoded, StreamError> {
    let max_payload = max_payload.min(MAX_PAYLOAD);
    if let Some((i, &b)) = buf.iter().take(2).enumerate().find(|(i, &b)| b != MAGIC[*i]) {
        let mut seen = [0u8; 2];
        seen[..=i].copy_from_slice(&buf[..=i]);
        seen[i] = b;
        return Err(StreamError::BadMagic(seen));
    }
    if let Some(&v) = buf.get(2) {
        if v != VERSION {
            return Err(StreamError::UnsupportedVersion(v));
        }
    }
    if buf.len() < HEADER_LEN {
        return Ok(Decoded::Incomplete);
    }
    let type_code = buf[3];
    let flags = u16::from_be_bytes([buf[4], buf[5]]);
    let txn = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
    let payload_len = usize::from(u16::from_be_bytes([buf[10], buf[11]]));
    if payload_len > max_payload {
        return Err(StreamError::TooLong {
            len: payload_len,
            max: max_payload,
        });
    }
    let len = HEADER_LEN + payload_len;
    let Some(payload) = buf.get(HEADER_LEN..len) else {
        return Ok(Decoded::Incomplete);
    };
    let result = decode_body(type_code, flags, txn, payload);
    Ok(Decoded::Frame { len, result })
}

fn decode_body(type_code: u8, flags: u16, txn: u32, payload: &[u8]) -> Result<Frame, FrameError> {
    let ty = MessageType::from_code(type_code).ok_or(FrameError::UnknownType { txn, type_code })?;
    if flags & !FLAG_EMERGENCY != 0 {
        return Err(FrameError::ReservedFlags { txn, ty, flags });
    }
    let msg = Message::decode_payload(ty, payload).map_err(|error| FrameError::Payload { txn, ty, error })?;
    Ok(Frame {
        txn,
        emergency: flags & FLAG_EMERGENCY != 0,
        msg,
    })
}

impl Frame {
    /// A frame without the emergency flag.
    pub fn new(txn: u32, msg: Message) -> Self {
        Frame {
            txn,
            emergency: false,
            msg,
        }
    }

    /// The `DENY` of a `request` made on `txn`, with `cause` (PROTOCOL.md §5): the one
    /// way every service builds its refusals.
    pub fn deny(txn: u32, request: MessageType, cause: Cause) -> Self {
        Frame::new(txn, Message::Deny { request, cause })
    }

    /// The same frame with the emergency flag set to `emergency`.
    pub fn with_emergency(self, emergency: bool) -> Self {
        Frame { emergency, ..self }
    }

    /// Appends the whole frame (header and payload) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.reserve(HEADER_LEN + 64);
        buf.put_slice(&MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(self.msg.message_type().code());
        buf.put_u16(if self.emergency { FLAG_EMERGENCY } else { 0 });
        buf.put_u32(self.txn);
        buf.put_u16(0);
        self.msg.encode_payload(buf);
        let payload_len = buf.len() - start - HEADER_LEN;
        debug_assert!(payload_len <= MAX_PAYLOAD, "every v1 message fits MAX_PAYLOAD");
        buf[start + 10..start + 12].copy_from_slice(&(payload_len as u16).to_be_bytes());
    }

    /// The encoded frame as a fresh buffer.
    pub fn to_bytes(&self) -> BytesMut {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b
    }

    /// Decodes exactly one frame that fills `bytes`, for tests and tools.
    pub fn decode_exact(bytes: &[u8]) -> Result<Frame, DecodeExactError> {
        match decode(bytes, MAX_PAYLOAD)? {
            Decoded::Incomplete => Err(DecodeExactError::Incomplete),
            Decoded::Frame { len, .. } if len != bytes.len() => {
                Err(DecodeExactError::Extra(bytes.len() - len))
            }
            Decoded::Frame { result, .. } => Ok(result?),
        }
    }
}

/// Why [`Frame::decode_exact`] failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeExactError {
    /// The stream is lost.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The frame is malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Fewer bytes than one frame.
    #[error("incomplete frame")]
    Incomplete,
    /// Bytes left over after the frame.
    #[error("{0} bytes after the frame")]
    Extra(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ids::SiteId;

    fn hello() -> Frame {
        Frame::new(
            1,
            Message::LinkHello {
                site: SiteId::new(7).unwrap(),
            },
        )
    }

    #[test]
    fn header_layout() {
        let b = hello().to_bytes();
        assert_eq!(&b[..], &[0x54, 0x4B, 1, 1, 0, 0, 0, 0, 0, 1, 0, 2, 0, 7]);
    }

    #[test]
    fn partial_frames_are_incomplete_at_every_split() {
        let b = hello().to_bytes();
        for cut in 0..b.len() {
            assert_eq!(
                decode(&b[..cut], MAX_PAYLOAD),
                Ok(Decoded::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_magic_is_seen_on_the_first_byte() {
        assert_eq!(decode(b"X", MAX_PAYLOAD), Err(StreamError::BadMagic([b'X', 0])));
        assert_eq!(decode(b"TX", MAX_PAYLOAD), Err(StreamError::BadMagic(*b"TX")));
    }

    #[test]
    fn length_over_the_limit_is_fatal_before_the_payload() {
        let mut b = hello().to_bytes();
        b[10..12].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(
            decode(&b[..HEADER_LEN], 99),
            Err(StreamError::TooLong { len: 100, max: 99 })
        );
    }
}
