//! tracing setup: human-readable lines by default, JSON with `log.format = "json"` or
//! `--log-json`. `RUST_LOG`, when set, overrides `log.level`.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogConfig, LogFormat};

/// Checks a filter directive list (`info`, `warn,trunkd=debug`, …) as `serve` will use
/// it. Besides what does not parse, it refuses what parses but means nothing: a bare
/// word that is not a level (`inof`) is taken by tracing as a target name, silently
/// enabling everything for a target that does not exist. A target is written
/// `target=level`.
pub fn check_filter(directives: &str) -> Result<(), String> {
    for d in directives.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains(['=', '[']) && LevelFilter::from_str(d).is_err() {
            return Err(format!(
                "`{d}` is not a level (trace, debug, info, warn, error, off); \
                 a target is written `{d}=LEVEL`"
            ));
        }
    }
    EnvFilter::builder()
        .parse(directives)
        .map(drop)
        .map_err(|e| format!("`{directives}`: {e}"))
}

/// The filter `serve` logs through: `RUST_LOG` when set, else `log.level`; either is
/// checked with [`check_filter`] and refused naming where it came from.
pub fn filter(cfg: &LogConfig) -> Result<EnvFilter, ConfigError> {
    let (source, directives) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => ("RUST_LOG", v),
        _ => ("log.level", cfg.level.clone()),
    };
    check_filter(&directives)
        .and_then(|()| EnvFilter::try_new(&directives).map_err(|e| e.to_string()))
        .map_err(|e| ConfigError::Invalid(format!("{source}: {e}")))
}

/// Installs the global subscriber. Call once, from a binary.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(cfg)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::check_filter;

    #[test]
    fn filters_that_mean_something_pass() {
        for ok in [
            "info",
            "WARN",
            "off",
            "warn,trunkd=debug",
            "trunkd::link=trace",
            "info,[link]=debug",
            "",
        ] {
            assert!(check_filter(ok).is_ok(), "{ok}: {:?}", check_filter(ok));
        }
    }

    #[test]
    fn a_level_typo_and_a_bad_level_are_refused() {
        let e = check_filter("inof").unwrap_err();
        assert!(e.contains("`inof` is not a level"), "{e}");
        assert!(check_filter("warn,trunkd=degub").is_err());
        assert!(check_filter("info,debgu").is_err());
    }
}
