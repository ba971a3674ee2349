//! The TCP link between trunkd and the site gateways (`PROTOCOL.md §3`).
//!
//! - [`codec`]: the `tokio_util` codec over the sans-IO frame decoder.
//! - [`LinkServer`]: accepts gateways, authenticates them, answers keepalives, closes
//!   misbehaving links, shuts down gracefully.
//! - `admission`: the handshake budget, its share per source, who is evicted for a
//!   newcomer, and the tally behind the summarised log of refusals (`PROTOCOL.md §3.2`).
//! - [`gateway`]: the gateway side, for `trunksim` and tests.

mod admission;
pub mod codec;
pub mod gateway;
mod server;
mod session;

pub use server::{deny_unsupported, Handler, LinkServer, Links, SendError, SiteKeys, Unsupported};
