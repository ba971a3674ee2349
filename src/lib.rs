//! trunkd: the central controller of a digital trunked-radio dispatch system.
//!
//! Data flows one way: bytes from a site gateway → frame codec → typed message → the
//! controller decides → frames back to gateways.
//!
//! - [`protocol`]: the wire protocol v1 (`protocol/PROTOCOL.md`), sans-IO.
//! - [`link`]: the TCP server for site gateways (handshake, keepalive, sessions) and
//!   the gateway side of the link, used by `trunksim` and the tests.
//! - [`config`]: the one typed configuration, with defaults.
//! - [`logging`]: tracing setup (human-readable or JSON).

pub mod config;
pub mod link;
pub mod logging;
pub mod protocol;
pub mod store;
