//! The controller's state machines, sans-IO: they take events plus the current time and
//! return what to send. No tokio, no database, no clock inside.
//!
//! - [`auth`]: Milenage challenge-response.
//! - [`registration`]: registration, location update, deregistration, affiliation.

pub mod auth;
pub mod registration;
pub mod trunking;
