//! The controller's state machines, sans-IO: they take events plus the current time and
//! return what to send. No tokio, no database, no clock inside.
//!
//! - [`auth`]: Milenage challenge-response.
//! - [`registration`]: registration, location update, deregistration, affiliation.
//! - [`trunking`]: calls: start, join, takeover, preemption, PTT, timers, end.
//! - [`slots`]: one site's slot table: slot states, the slot policy, faulty slots.
//! - [`queue`]: one site's busy queue: serving order, positions, who moved.

pub mod auth;
pub mod queue;
pub mod registration;
pub mod slots;
pub mod trunking;
