//! tracing setup: human-readable lines by default, JSON with `log.format = "json"` or
//! `--log-json`. `RUST_LOG`, when set, overrides `log.level`. The filter can be
//! changed while trunkd runs ([`Logs::reload`], on `SIGHUP`).

use std::io::IsTerminal;

use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

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

/// The installed subscriber's filter, which can be changed while it runs.
#[derive(Clone)]
pub struct Logs(reload::Handle<EnvFilter, Registry>);

impl Logs {
    /// Filters from now on as `cfg` says (unless `RUST_LOG` is set, which still wins).
    pub fn reload(&self, cfg: &LogConfig) -> Result<(), ConfigError> {
        let f = filter(cfg)?;
        self.0
            .reload(f)
            .map_err(|e| ConfigError::Invalid(format!("log.level: {e}")))
    }
}

/// Installs the global subscriber. Call once, from a binary.
pub fn init(cfg: &LogConfig) -> anyhow::Result<Logs> {
    let (filter, handle) = reload::Layer::new(filter(cfg)?);
    type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    let ansi = std::io::stderr().is_terminal();
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match cfg.format {
        LogFormat::Text => Box::new(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi)),
        LogFormat::Json => Box::new(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .json()
                .flatten_event(true)
                .with_current_span(true),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    Ok(Logs(handle))
}
