//! The `tokio_util` codec over the sans-IO frame decoder (`PROTOCOL.md §2`).

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::protocol::{decode, Decoded, Frame, FrameError, StreamError};

/// Splits a TCP byte stream into frames; holds at most one frame of buffered input.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_payload: usize,
}

impl FrameCodec {
    /// A codec accepting payloads up to `max_payload` bytes (capped at `MAX_PAYLOAD`).
    pub fn new(max_payload: usize) -> Self {
        FrameCodec { max_payload }
    }
}

/// Reading from a link failed for good: the connection must close.
#[derive(Debug, thiserror::Error)]
pub enum LinkReadError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The byte stream is lost (`PROTOCOL.md §2.3`).
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl Decoder for FrameCodec {
    /// A whole frame, or an in-sync malformed frame that the session answers.
    type Item = Result<Frame, FrameError>;
    type Error = LinkReadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match decode(src, self.max_payload)? {
            Decoded::Incomplete => Ok(None),
            Decoded::Frame { len, result } => {
                src.advance(len);
                Ok(Some(result))
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.encode(dst);
        Ok(())
    }
}
