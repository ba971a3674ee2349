//! trunkd: the central controller of a digital trunked-radio dispatch system.
//!
//! Data flows one way: bytes from a site gateway → frame codec → typed message → the
//! core decides → actions → frames back to gateways, rows to the HLR, events to
//! operators (README "Architecture").
//!
//! - [`protocol`]: the wire protocol v1 (`protocol/PROTOCOL.md`), sans-IO.
//! - [`link`]: the TCP server for site gateways (handshake, keepalive, sessions) and
//!   the gateway side of the link, used by `trunksim` and the tests.
//! - [`core`]: the sans-IO state machines (authentication, registration, trunking,
//!   messaging) and their random source.
//! - [`hlr`]: the HLR's model (subscribers, fleets, talkgroups, sites) and the in-memory
//!   cache of it that the hot path reads.
//! - [`store`]: persistence on sqlx (SQLite default, PostgreSQL), one file per group of
//!   tables; migrations, CSV import.
//! - [`vlr`]: the in-memory registry of units on the air, owned by the registrar and
//!   read by everyone else.
//! - [`api`]: the operator API (HTTP, JSON) over the controller handle.
//! - [`auth`]: the API's operators (roles, fleets, argon2id passwords) and their tokens.
//! - [`controller`]: wires store, cache, VLR, core and link together and runs them;
//!   its `ControllerHandle` is the one way in for commands, queries and events.
//! - [`events`]: the numbered event stream operators listen to (snapshot, resume, lag).
//! - [`params`]: the system parameters operators change on a running system.
//! - [`metrics`]: what the controller counts and measures of itself (grants, denies,
//!   registrations, latency histograms) and its Prometheus text for `GET /metrics`.
//! - [`shell`]: the IO shells around the cores, the services behind the link: calls and
//!   slots, messages without a slot, inhibit/enable over the air, their timer task.
//! - [`clock`]: the one clock (tokio time; Unix time read once at start).
//! - [`sim`]: the radio side of registration, for `trunksim` and tests.
//! - [`config`]: the one typed configuration, with defaults.
//! - [`console`]: the dispatch console's web page, built into the binary and served
//!   on the operator API's address.
//! - [`logging`]: tracing setup (human-readable or JSON).
//! - [`service`]: trunkd under systemd: readiness, reload on `SIGHUP`, stopping.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod controller;
pub mod core;
pub mod events;
pub mod ha;
pub mod hlr;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod params;
pub mod protocol;
pub mod service;
pub mod shell;
pub mod sim;
pub mod store;
pub mod vlr;
