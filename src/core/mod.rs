//! The controller's state machines, sans-IO: they take events plus the current time and
//! return what to send. No tokio, no database, no clock inside.
//!
//! - [`auth`]: Milenage challenge-response.
//! - [`entropy`]: random bytes as an input (the OS CSPRNG, or a seeded stream for tests).
//! - [`registration`]: registration, location update, deregistration, affiliation,
//!   periodic-registration expiry; owns the VLR.
//! - [`trunking`]: calls: start, join, takeover, preemption, PTT, timers, end.
//! - [`slots`]: one site's slot table: slot states, the slot policy, faulty slots.
//! - [`queue`]: one site's busy queue: serving order, positions, who moved.
//! - [`messaging`]: call alert, status messages and store-and-forward short data.

pub mod auth;
pub mod entropy;
pub mod messaging;
pub mod queue;
pub mod registration;
pub mod slots;
pub mod trunking;

#[cfg(test)]
mod tests {
    /// The core imports nothing from the shells: within the crate only the core itself,
    /// the wire types, the HLR's plain data types (`hlr::model`, not its cache) and the
    /// VLR; no tokio, no sqlx.
    #[test]
    fn the_core_imports_nothing_from_the_shells() {
        let files = [
            ("auth.rs", include_str!("auth.rs")),
            ("entropy.rs", include_str!("entropy.rs")),
            ("registration.rs", include_str!("registration.rs")),
            ("trunking.rs", include_str!("trunking.rs")),
            ("slots.rs", include_str!("slots.rs")),
            ("queue.rs", include_str!("queue.rs")),
            ("messaging.rs", include_str!("messaging.rs")),
        ];
        let allowed = [
            "crate::core::",
            "crate::protocol",
            "crate::hlr::model::",
            "crate::vlr::",
        ];
        for (name, text) in files {
            for line in text.lines().map(str::trim) {
                let Some(path) = line.strip_prefix("use ") else {
                    continue;
                };
                let shell = path.starts_with("crate::") && !allowed.iter().any(|a| path.starts_with(a));
                let io = ["tokio", "sqlx"].iter().any(|c| path.starts_with(c));
                assert!(!shell && !io, "{name}: `{line}` reaches outside the core");
            }
        }
    }
}
