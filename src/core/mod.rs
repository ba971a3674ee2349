//! The controller's state machines, sans-IO: they take events plus the current time and
//! return what to send. No tokio, no database, no clock inside.
//!
//! - [`auth`]: Milenage challenge-response.
//! - [`entropy`]: random bytes as an input (the OS CSPRNG, or a seeded stream for tests).
//! - [`registration`]: registration, location update, deregistration, affiliation,
//!   periodic-registration expiry; owns the VLR.
//! - [`trunking`]: slots, calls, the busy queue and emergency preemption.

pub mod auth;
pub mod entropy;
pub mod registration;
pub mod trunking;
