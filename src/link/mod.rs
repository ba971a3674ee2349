//! The TCP link between trunkd and the site gateways (`PROTOCOL.md §3`).
//!
//! - [`codec`]: the `tokio_util` codec over the sans-IO frame decoder.
//! - [`LinkServer`]: accepts gateways, authenticates them, answers keepalives, closes
//!   misbehaving links, shuts down gracefully.
//! - [`gateway`]: the gateway side, for `trunksim` and tests.

pub mod codec;
pub mod gateway;
mod server;
mod session;

pub use server::{deny_unsupported, Handler, LinkServer, Links, SendError, SiteKeys, Unsupported};
