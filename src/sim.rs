//! The radio side, for `trunksim` and the integration tests: what a unit does with its
//! own copy of K and OPc when the controller challenges it, and what its gateway answers
//! to a radio command; and a relay that fails like a network ([`relay`]).

pub mod relay;

use crate::core::auth::unit_response;
use crate::hlr::Secret128;
use crate::link::gateway::{GatewayError, GatewayLink};
use crate::protocol::{Frame, Identity, Message, Tmsi};

/// A simulated radio's credentials.
#[derive(Clone, Debug)]
pub struct RadioKeys {
    /// K.
    pub k: Secret128,
    /// OPc.
    pub opc: Secret128,
}

/// Runs one registration-family procedure on `link`: sends `first` (a `REG_REQUEST` or
/// `LOCATION_UPDATE`), answers the challenge with the keys, and returns the final
/// answer (`REG_ACCEPT`, `LOCATION_ACCEPT`, `REG_REJECT`, ...) and the transaction id.
pub async fn authenticate(
    link: &mut GatewayLink,
    first: Message,
    keys: &RadioKeys,
) -> Result<(u32, Frame), GatewayError> {
    let txn = link.request(first).await?;
    loop {
        let f = link.recv_service().await?;
        if f.txn != txn {
            continue;
        }
        match f.msg {
            Message::AuthChallenge { rand } => {
                let res = unit_response(&keys.k, &keys.opc, &rand);
                link.send(Frame::new(txn, Message::AuthResponse { res })).await?;
            }
            _ => return Ok((txn, f)),
        }
    }
}

/// Registers by `identity`; the final answer as [`authenticate`] gives it.
pub async fn register(
    link: &mut GatewayLink,
    identity: Identity,
    keys: &RadioKeys,
) -> Result<Frame, GatewayError> {
    authenticate(link, Message::RegRequest { identity }, keys)
        .await
        .map(|(_, f)| f)
}

/// The TMSI of a `REG_ACCEPT` or `LOCATION_ACCEPT`, if the frame is one.
pub fn accepted_tmsi(f: &Frame) -> Option<Tmsi> {
    match f.msg {
        Message::RegAccept { tmsi, .. } | Message::LocationAccept { tmsi } => Some(tmsi),
        _ => None,
    }
}

/// SplitMix64: a small seeded generator for simulated arrivals and holding times
/// (repeatable runs; not for anything secret).
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Erlang C: the probability that a call waits at `c` servers offered `a` Erlang
/// (1 when `a >= c`, where the queue grows without bound).
pub fn erlang_c(c: u32, a: f64) -> f64 {
    if a >= f64::from(c) {
        return 1.0;
    }
    let mut term = 1.0;
    let mut sum = 0.0;
    for k in 0..c {
        if k > 0 {
            term *= a / f64::from(k);
        }
        sum += term;
    }
    let last = term * a / f64::from(c) * f64::from(c) / (f64::from(c) - a);
    last / (sum + last)
}

/// A gateway's answer to `INHIBIT`, `ENABLE` or `RADIO_CHECK` (`PROTOCOL.md §5.4`) for a
/// radio it hears (`hears(tmsi)`): the acknowledgement on the command's transaction id,
/// with its TMSI. `None` for other frames, and for a radio it does not hear (a gateway
/// answers nothing for those).
pub fn radio_command_answer(f: &Frame, hears: impl Fn(Tmsi) -> bool) -> Option<Frame> {
    let (ack, tmsi) = match f.msg {
        Message::Inhibit { tmsi } => (Message::InhibitAck { tmsi }, tmsi),
        Message::Enable { tmsi } => (Message::EnableAck { tmsi }, tmsi),
        Message::RadioCheck { tmsi } => (Message::RadioCheckAck { tmsi }, tmsi),
        _ => return None,
    };
    hears(tmsi).then(|| Frame::new(f.txn, ack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_acknowledges_radio_commands_for_the_radios_it_hears_only() {
        let mine = Tmsi::new(7).unwrap();
        let hears = |t: Tmsi| t == mine;
        let check = Frame::new(0x8000_0042, Message::RadioCheck { tmsi: mine });
        let ack = radio_command_answer(&check, hears).unwrap();
        assert_eq!(
            (ack.txn, ack.msg),
            (0x8000_0042, Message::RadioCheckAck { tmsi: mine })
        );
        let stun = Frame::new(9, Message::Inhibit { tmsi: mine });
        assert_eq!(
            radio_command_answer(&stun, hears).unwrap().msg,
            Message::InhibitAck { tmsi: mine }
        );
        let other = Frame::new(
            9,
            Message::Enable {
                tmsi: Tmsi::new(8).unwrap(),
            },
        );
        assert_eq!(radio_command_answer(&other, hears), None);
        assert_eq!(
            radio_command_answer(&Frame::new(9, Message::Keepalive), hears),
            None
        );
    }
}
