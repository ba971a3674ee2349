//! The `trunkd` command line: parses arguments and calls into the library.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::info;

use trunkd::config::{Config, LogFormat, DEFAULT_TOML};
use trunkd::link::{LinkServer, Unsupported};
use trunkd::protocol::SiteKey;

#[derive(Parser)]
#[command(
    name = "trunkd",
    version,
    about = "Central controller of a digital trunked-radio dispatch system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: the site-gateway link server.
    Serve {
        /// TOML configuration file; without one, every setting takes its default.
        #[arg(long, env = "TRUNKD_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address for gateways (overrides link.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log as JSON lines (overrides log.format).
        #[arg(long)]
        log_json: bool,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration file, with a comment per field.
    Default,
    /// Check a configuration file (and TRUNKD_* overrides) and report the first problem.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a fresh random 32-byte site key as 64 hex digits.
    Keygen,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            log_json,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(addr) = listen {
                cfg.link.listen = addr;
            }
            if log_json {
                cfg.log.format = LogFormat::Json;
            }
            trunkd::logging::init(&cfg.log)?;
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(serve(cfg))
        }
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let cfg = Config::load(Some(&file))?;
            println!("{}: ok ({} sites)", file.display(), cfg.sites.len());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Keygen,
        } => {
            println!(
                "{}",
                SiteKey::generate()
                    .context("reading the OS random generator")?
                    .to_hex()
            );
            Ok(())
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let keys: HashMap<_, _> = cfg.sites.iter().map(|s| (s.id, s.key.clone())).collect();
    if keys.is_empty() {
        tracing::warn!("no sites configured: every gateway will be refused (see `trunkd config default`)");
    }
    let server = LinkServer::bind(cfg.link.clone(), Arc::new(keys), Arc::new(Unsupported))
        .await
        .with_context(|| format!("binding {}", cfg.link.listen))?;
    info!(addr = %server.local_addr()?, sites = cfg.sites.len(), "trunkd started");
    server
        .run(shutdown_signal(), Duration::from_millis(cfg.shutdown.grace_ms))
        .await;
    info!("trunkd stopped");
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops trunkd");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        info!("SIGINT received");
    }
}
