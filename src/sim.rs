//! The radio side of registration, for `trunksim` and the integration tests: what a
//! unit does with its own copy of K and OPc when the controller challenges it.

use crate::core::auth::unit_response;
use crate::link::gateway::{GatewayError, GatewayLink};
use crate::protocol::{Frame, Identity, Message, Tmsi};
use crate::store::Secret128;

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
