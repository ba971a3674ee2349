//! The TCP link between trunkd and the site gateways (`PROTOCOL.md §3`).
//!
//! - [`codec`]: the `tokio_util` codec over the sans-IO frame decoder.
//! - `handler`: what the link asks of the controller ([`Handler`], [`SiteKeys`]).
//! - `links`: the connected sites ([`Links`]), each with its gateway's frame queue.
//! - [`LinkServer`]: accepts gateways, authenticates them, answers keepalives, closes
//!   misbehaving links, shuts down gracefully.
//! - `admission`: the handshake budget, its share per source, who is evicted for a
//!   newcomer, and the tally behind the summarised log of refusals (`PROTOCOL.md §3.2`).
//! - `session`: one connection, from handshake to close.
//! - `timing`: what a session measures of its traffic for [`crate::metrics`] (request
//!   read to answer written, denies, registration outcomes).
//! - `stream`: the connection a link runs on, plain TCP or TLS.
//! - [`tls`]: TLS 1.3 on the link (`link.tls_cert`): the controller's certificate
//!   (reloadable) and what a gateway trusts.
//! - [`gateway`]: the gateway side, for `trunksim` and tests.

mod admission;
pub mod codec;
pub mod gateway;
mod handler;
mod links;
mod server;
mod session;
pub(crate) mod stream;
mod timing;
pub mod tls;

pub use handler::{deny_unsupported, Handler, SiteKeys, Unsupported};
pub use links::{Links, SendError};
pub use server::LinkServer;
