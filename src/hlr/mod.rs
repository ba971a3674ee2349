//! The HLR (home location register): the subscriber, fleet, talkgroup and site model,
//! and its in-memory cache that the hot path reads. Where it is kept on disk is
//! [`crate::store`].
//!
//! - `model.rs`: the records, plain data (the sans-IO core may use them).
//! - `cache.rs`: [`HlrCache`], loaded from the store and kept in step with it.

mod cache;
pub mod model;

pub use cache::{HlrCache, HlrChange};
pub use model::*;
