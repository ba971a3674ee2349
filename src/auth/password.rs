//! Operators' passwords: argon2id with the crate's defaults (OWASP's recommended
//! parameters: 19 MiB, 2 passes, 1 lane), stored as PHC strings. Hashing and checking
//! take tens of milliseconds by design: call them off the async runtime
//! (`spawn_blocking`).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

/// Fewest characters in a password.
pub const MIN_LEN: usize = 12;
/// Most bytes in a password (argon2 takes more, but nobody types more).
pub const MAX_LEN: usize = 1024;

/// A password cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password has {MIN_LEN} to {MAX_LEN} characters")]
    Length,
    /// The OS random generator or argon2 failed.
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// Checks a new password's length.
pub fn check(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_LEN || password.len() > MAX_LEN {
        return Err(PasswordError::Length);
    }
    Ok(())
}

/// The PHC string (`$argon2id$v=19$…`) of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check(password)?;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `phc` (a constant-time comparison of the outputs). A
/// malformed `phc` matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    password.len() <= MAX_LEN
        && Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
}

/// A hash of no one's password, checked when an unknown operator logs in so that the
/// answer takes as long as for a known one.
pub fn decoy() -> String {
    let mut seed = [0u8; 24];
    // A failed generator leaves zeros: the decoy matches no password typed anyway.
    let _ = getrandom::fill(&mut seed);
    hash(&hex::encode(seed)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_password_matches_and_no_other() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterz", &phc));
        assert!(!verify("", &phc));
        assert!(!verify("correct horse battery", "not a hash"));
    }

    #[test]
    fn two_hashes_of_one_password_differ() {
        assert_ne!(
            hash("a long enough one").unwrap(),
            hash("a long enough one").unwrap()
        );
    }

    #[test]
    fn short_passwords_are_refused() {
        assert_eq!(hash("short"), Err(PasswordError::Length));
        assert_eq!(check(&"x".repeat(MAX_LEN + 1)), Err(PasswordError::Length));
        assert!(check("twelve chars").is_ok());
    }

    #[test]
    fn the_decoy_matches_nothing_typed() {
        let d = decoy();
        assert!(d.starts_with("$argon2id$"));
        assert!(!verify("", &d));
    }
}
