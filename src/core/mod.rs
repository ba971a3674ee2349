//! The controller's state machines, sans-IO: they take events plus the current time and
//! return what to send. No tokio, no database, no clock inside.
//!
//! - [`auth`]: Milenage challenge-response.
//! - [`registration`]: registration, location update, deregistration, affiliation.
//! - [`trunking`]: slots, calls, the busy queue and emergency preemption.
//! - [`messaging`]: call alert, status messages and store-and-forward short data.

pub mod auth;
pub mod messaging;
pub mod registration;
pub mod trunking;
