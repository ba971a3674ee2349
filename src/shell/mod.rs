//! The IO shells around the sans-IO cores, one per service, each shaped alike: it looks
//! up what its core needs (VLR, HLR cache), feeds it inputs with the time from the
//! controller's clock, and carries out the actions it returns (frames onto links, rows
//! into the store, events onto the bus), with a timer task for the core's deadlines.
//!
//! - [`calls`]: around the trunking core (calls, the busy queue, slots, call records).
//! - [`messaging`]: around the messaging core (call alert, status, short data), for
//!   radios and consoles.
//! - [`remote`]: inhibit and enable over the air, with retries.
//! - [`alarm`]: the timer task the shells share.

pub mod alarm;
pub mod calls;
pub mod messaging;
pub mod remote;
