//! tracing setup: human-readable lines by default, JSON with `log.format = "json"` or
//! `--log-json`. `RUST_LOG`, when set, overrides `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{check_filter, ConfigError, LogConfig, LogFormat};

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
