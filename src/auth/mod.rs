//! Operators of the API and how they prove who they are: roles and fleet scopes, argon2id
//! passwords ([`password`]), signed access tokens and rotating refresh tokens
//! ([`tokens`]), and the [`Authority`] that logs in and checks tokens.
//!
//! Operators live in the database (`operators`, `src/store/operators.rs`); every change
//! to one writes its audit entry (`operator:<name>`), which every controller on the
//! database follows.

mod authority;
pub mod password;
pub mod tokens;

pub use authority::{AuthError, Authority, Principal, Tokens};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::protocol::FleetId;

/// What an operator may do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything it may see; changes nothing.
    Viewer,
    /// A viewer who also inhibits and enables units, checks and alerts radios, sends
    /// status and short data from the console, force-releases calls and acknowledges
    /// alarms.
    Dispatcher,
    /// Everything.
    Admin,
}

impl Role {
    /// As stored and as written in tokens: `admin`, `dispatcher`, `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Dispatcher => "dispatcher",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "dispatcher" => Ok(Role::Dispatcher),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!("unknown role {s:?} (admin, dispatcher or viewer)")),
        }
    }
}

/// The fleets an operator sees and acts on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fleets {
    /// Every fleet.
    #[default]
    All,
    /// These only (sorted, without repeats, never empty).
    Only(Vec<FleetId>),
}

impl Fleets {
    /// From a list: empty means every fleet.
    pub fn of(mut fleets: Vec<FleetId>) -> Fleets {
        fleets.sort();
        fleets.dedup();
        if fleets.is_empty() {
            Fleets::All
        } else {
            Fleets::Only(fleets)
        }
    }

    /// Whether `fleet` is among them.
    pub fn allows(&self, fleet: FleetId) -> bool {
        match self {
            Fleets::All => true,
            Fleets::Only(f) => f.binary_search(&fleet).is_ok(),
        }
    }

    /// The ids, empty for every fleet.
    pub fn ids(&self) -> &[FleetId] {
        match self {
            Fleets::All => &[],
            Fleets::Only(f) => f,
        }
    }

    /// As stored: comma-separated ids, empty for every fleet.
    pub fn to_list(&self) -> String {
        let ids: Vec<String> = self.ids().iter().map(|f| f.to_string()).collect();
        ids.join(",")
    }

    /// Parses [`Fleets::to_list`]'s form (also what the CLI takes).
    pub fn parse_list(s: &str) -> Result<Fleets, String> {
        let mut ids = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let id = crate::store::rules::ranged(part, FleetId::new, FleetId::MIN, FleetId::MAX)
                .map_err(|e| format!("fleet {part:?}: {e}"))?;
            ids.push(id);
        }
        Ok(Fleets::of(ids))
    }
}

/// An operator as the database holds it, without its password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// Login name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// What it sees.
    pub fleets: Fleets,
    /// A disabled operator cannot log in and its tokens are refused.
    pub disabled: bool,
    /// Grows at every change of password, role, fleets or state; tokens issued under an
    /// older generation are refused.
    pub generation: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Checks an operator's login name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter
/// or a digit (names appear in logs and audit entries; no room for look-alikes).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.len() > 64 || !ok_first || !ok_rest {
        return Err(format!(
            "operator name {name:?}: 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("disp.2-north_a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("Alice").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn fleet_lists() {
        assert_eq!(Fleets::parse_list(""), Ok(Fleets::All));
        let f = Fleets::parse_list("200, 100,200").unwrap();
        assert_eq!(f.to_list(), "100,200");
        assert!(f.allows(FleetId::new(100).unwrap()));
        assert!(!f.allows(FleetId::new(300).unwrap()));
        assert!(Fleets::parse_list("0").is_err());
        assert!(Fleets::parse_list("abc").is_err());
    }

    #[test]
    fn roles_round_trip() {
        for r in [Role::Admin, Role::Dispatcher, Role::Viewer] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
