//! Fuzzes the sans-IO frame decoder (`trunkd::protocol::decode`, `PROTOCOL.md §2`).
//!
//! The input is treated as a byte stream from a peer: frames are consumed off its front
//! until the decoder needs more bytes or the stream is lost. Checked on the way:
//! - `decode` never panics;
//! - a reported frame is at least a header long, fits in the buffer and in the limit;
//! - `Incomplete` is never reported once a whole maximum-size frame is buffered;
//! - decoding is canonical: every well-formed frame re-encodes to exactly the bytes it
//!   was decoded from, and decodes again to the same frame.
//!
//! The first input byte picks the receiver's payload limit, so lower configured limits
//! (`link.max_payload_len`) are exercised too.
//!
//! Run (nightly): `cargo fuzz run frame_decoder` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkd::protocol::{decode, Decoded, Frame, HEADER_LEN, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let (max_payload, stream) = match data.split_first() {
        // 0xFF and up: the protocol maximum; otherwise a lower limit (0, 8, ..., 2032).
        Some((&b, rest)) if b < 0xFF => (usize::from(b) * 8, rest),
        Some((_, rest)) => (MAX_PAYLOAD, rest),
        None => (MAX_PAYLOAD, data),
    };
    check_stream(stream, max_payload);
    // The protocol maximum on the same bytes as well, so no input is wasted on a limit.
    if max_payload != MAX_PAYLOAD {
        check_stream(stream, MAX_PAYLOAD);
    }
});

fn check_stream(stream: &[u8], max_payload: usize) {
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        match decode(rest, max_payload) {
            Err(_) => return, // stream lost: the link would be closed here
            Ok(Decoded::Incomplete) => {
                assert!(
                    rest.len() < HEADER_LEN + max_payload,
                    "Incomplete with {} bytes buffered (limit {max_payload})",
                    rest.len()
                );
                return;
            }
            Ok(Decoded::Frame { len, result }) => {
                assert!(len >= HEADER_LEN, "frame length {len} shorter than a header");
                assert!(len <= rest.len(), "frame length {len} beyond the {} bytes buffered", rest.len());
                assert!(len <= HEADER_LEN + max_payload, "frame length {len} over the limit {max_payload}");
                if let Ok(frame) = result {
                    let consumed = &rest[..len];
                    let re = frame.to_bytes();
                    assert_eq!(
                        &re[..],
                        consumed,
                        "decode is not canonical: {frame:?} re-encodes differently from its input"
                    );
                    assert_eq!(Frame::decode_exact(consumed), Ok(frame));
                }
                pos += len;
            }
        }
    }
}
