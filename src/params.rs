//! System parameters: the settings an operator changes on a running system, as a
//! trunking system's management terminal has them (trunking mode and hang times,
//! emergency policy, queue depth and timeout, maximum call duration, periodic
//! registration, challenge expiry, clone window and policy, slot policy).
//!
//! They live in the database (table `system_parameters`), so they survive a restart and
//! every controller on one database shares them. The config file's values are only the
//! defaults written into a fresh database: once a parameter is in the database, the
//! database wins (a config file that disagrees is reported at start). A change is
//! validated by the same rules as the config file ([`Config::validate`]), written with
//! an audit entry, and in force for the next request.

use figment::providers::Serialized;
use figment::Figment;

use crate::config::Config;

/// The names of the system parameters, as in the config file (`section.key`).
pub const NAMES: [&str; 12] = [
    "trunking.mode",
    "trunking.hang_time_ms",
    "trunking.quasi_hang_time_ms",
    "trunking.emergency",
    "trunking.slot_policy",
    "trunking.queue_depth",
    "trunking.queue_timeout_ms",
    "trunking.max_call_ms",
    "registration.periodic_registration_ms",
    "registration.challenge_timeout_ms",
    "registration.clone_window_ms",
    "registration.refuse_clones",
];

/// A parameter could not be read or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// No such parameter.
    #[error("unknown system parameter {0:?}; known: {known}", known = NAMES.join(", "))]
    Unknown(String),
    /// The value is not valid for it.
    #[error("{name}: {reason}")]
    Invalid {
        /// The parameter.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The value of parameter `name` in `cfg`, as text (`None`: no such parameter).
pub fn get(cfg: &Config, name: &str) -> Option<String> {
    if !NAMES.contains(&name) {
        return None;
    }
    let value: figment::value::Value = Figment::from(Serialized::defaults(cfg)).find_value(name).ok()?;
    Some(text(&value))
}

/// Every parameter with its value in `cfg`, in [`NAMES`] order.
pub fn all(cfg: &Config) -> Vec<(&'static str, String)> {
    NAMES
        .iter()
        .filter_map(|n| get(cfg, n).map(|v| (*n, v)))
        .collect()
}

/// `cfg` with parameter `name` set to `value` (text as in [`get`]), checked by the
/// config file's rules.
pub fn set(cfg: &Config, name: &str, value: &str) -> Result<Config, ParamError> {
    if !NAMES.contains(&name) {
        return Err(ParamError::Unknown(name.to_string()));
    }
    let invalid = |reason: String| ParamError::Invalid {
        name: name.to_string(),
        reason,
    };
    let value = value.trim();
    let parsed: figment::value::Value = if let Ok(n) = value.parse::<u64>() {
        n.into()
    } else if let Ok(b) = value.parse::<bool>() {
        b.into()
    } else {
        value.to_string().into()
    };
    let new: Config = Figment::from(Serialized::defaults(cfg))
        .merge(Serialized::default(name, parsed))
        .extract()
        .map_err(|e| invalid(e.kind.to_string()))?;
    new.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(new)
}

/// `cfg` with every stored `(name, value)` in force, in order; one that is not valid
/// (or names no parameter) is skipped, and returned with why.
pub fn apply_stored(cfg: &Config, stored: &[(String, String)]) -> (Config, Vec<ParamError>) {
    let mut in_force = cfg.clone();
    let mut skipped = Vec::new();
    for (name, value) in stored {
        match set(&in_force, name, value) {
            Ok(new) => in_force = new,
            Err(e) => skipped.push(e),
        }
    }
    (in_force, skipped)
}

/// A value as the text [`set`] takes back.
fn text(v: &figment::value::Value) -> String {
    use figment::value::Value;
    match v {
        Value::String(_, s) => s.clone(),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_u128()
            .map(|u| u.to_string())
            .or_else(|| n.to_i128().map(|i| i.to_string()))
            .unwrap_or_else(|| format!("{n:?}")),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_reads_and_writes_back() {
        let cfg = Config::default();
        let values = all(&cfg);
        assert_eq!(values.len(), NAMES.len());
        for (name, value) in values {
            let again = set(&cfg, name, &value).unwrap();
            assert_eq!(again, cfg, "{name} = {value}");
        }
    }

    #[test]
    fn a_change_is_checked_by_the_config_rules() {
        let cfg = Config::default();
        let new = set(&cfg, "trunking.hang_time_ms", "500").unwrap();
        assert_eq!(new.trunking.hang_time_ms, 500);
        assert_eq!(get(&new, "trunking.hang_time_ms").as_deref(), Some("500"));
        let new = set(&cfg, "trunking.mode", "transmission").unwrap();
        assert_eq!(get(&new, "trunking.mode").as_deref(), Some("transmission"));
        let new = set(&cfg, "registration.refuse_clones", "false").unwrap();
        assert!(!new.registration.refuse_clones);

        let err = |name: &str, value: &str| set(&cfg, name, value).unwrap_err().to_string();
        assert!(err("trunking.queue_depth", "0").contains("queue_depth"));
        assert!(err("trunking.hang_time_ms", "99999999").contains("at most"));
        assert!(err("trunking.mode", "sometimes").contains("trunking.mode"));
        assert!(err("trunking.hang_time_ms", "-5").contains("trunking.hang_time_ms"));
        assert!(matches!(
            set(&cfg, "link.listen", "0.0.0.0:1"),
            Err(ParamError::Unknown(_))
        ));
    }
}
