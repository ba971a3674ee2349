//! The `trunkd` command line: parses arguments and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tracing::info;

use trunkd::config::{Config, LogFormat, DEFAULT_TOML};
use trunkd::protocol::{FleetId, Imei, Imsi, IndividualId, MemberId, SiteId, SiteKey, TalkgroupId, Unit};
use trunkd::store::csv::{parse_subscribers, parse_talkgroups};
use trunkd::store::{Fleet, NewSubscriber, Permissions, Secret128, Site, Store, Talkgroup};

#[derive(Parser)]
#[command(
    name = "trunkd",
    version,
    about = "Central controller of a digital trunked-radio dispatch system"
)]
struct Cli {
    /// TOML configuration file; without one, every setting takes its default.
    #[arg(long, global = true, env = "TRUNKD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: the HLR, the VLR and the site-gateway link server.
    Serve {
        /// Listen address for gateways (overrides link.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log as JSON lines (overrides log.format).
        #[arg(long)]
        log_json: bool,
    },
    /// Apply pending HLR database migrations and exit.
    Migrate,
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Fleets.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Talkgroups.
    #[command(subcommand)]
    Talkgroup(TalkgroupCommand),
    /// Sites (base stations) and their link keys.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Subscribers (radios).
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration file, with a comment per field.
    Default,
    /// Check the configuration (file, TRUNKD_* overrides, DATABASE_URL, RUST_LOG) as
    /// `serve` would, and report the first problem.
    Check,
    /// Print a fresh random 32-byte key as 64 hex digits.
    Keygen,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Add a fleet.
    Add {
        /// Fleet id, 1..=65535.
        #[arg(long)]
        id: u16,
        /// Name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TalkgroupCommand {
    /// Add a talkgroup to a fleet.
    Add {
        /// Fleet id.
        #[arg(long)]
        fleet: u16,
        /// Talkgroup id within the fleet, 1..=65535.
        #[arg(long)]
        id: u16,
        /// Name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Add a site. Without --key a random key is generated and printed once.
    Add {
        /// Site id, 1..=4095.
        #[arg(long)]
        id: u16,
        /// Name.
        #[arg(long)]
        name: String,
        /// Carriers at the site.
        #[arg(long, default_value_t = 1)]
        carriers: u8,
        /// TDMA slots per carrier: 6, 4, 3 or 2.
        #[arg(long, default_value_t = 6)]
        slots: u8,
        /// The link's pre-shared key, 64 hex digits (better: TRUNKD_SITE_KEY).
        #[arg(long, env = "TRUNKD_SITE_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Take a slot (or with no --slot, a whole carrier) out of service; a running
    /// controller moves or ends the calls on it and grants it no more.
    Fault(SlotArgs),
    /// Put a slot (or whole carrier) back in service.
    Restore(SlotArgs),
}

#[derive(Args)]
struct SlotArgs {
    /// Site id.
    #[arg(long)]
    id: u16,
    /// Carrier index, 0..=63.
    #[arg(long)]
    carrier: u8,
    /// Slot 0..=5; omit for the whole carrier.
    #[arg(long)]
    slot: Option<u8>,
}

#[derive(Subcommand)]
enum SubscriberCommand {
    /// Provision one subscriber.
    Add(SubscriberAdd),
    /// Show a subscriber (never its keys).
    Show {
        /// IMSI, 15 digits.
        imsi: String,
    },
    /// Import subscribers from a CSV file, all or nothing (format in the README).
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Inhibit (stun) a subscriber: it is refused service.
    Inhibit {
        /// IMSI.
        imsi: String,
    },
    /// Re-enable (revive) an inhibited subscriber.
    Enable {
        /// IMSI.
        imsi: String,
    },
}

#[derive(Args)]
struct SubscriberAdd {
    /// Equipment identity, 15 digits with a Luhn check digit.
    #[arg(long)]
    imei: String,
    /// Subscriber identity; assigned under registration.imsi_prefix when omitted.
    #[arg(long)]
    imsi: Option<String>,
    /// Telephone number, up to 15 digits.
    #[arg(long)]
    msisdn: Option<String>,
    /// Fleet id.
    #[arg(long)]
    fleet: u16,
    /// Member id within the fleet.
    #[arg(long)]
    member: u16,
    /// Individual (dispatch) id; assigned when omitted.
    #[arg(long)]
    individual_id: Option<u32>,
    /// Authentication key K, 32 hex digits (better: TRUNKD_K). Generated when omitted.
    #[arg(long, env = "TRUNKD_K", hide_env_values = true)]
    k: Option<String>,
    /// OPc, 32 hex digits (better: TRUNKD_OPC). Generated when omitted.
    #[arg(long, env = "TRUNKD_OPC", hide_env_values = true)]
    opc: Option<String>,
    /// Priority level 0..=15.
    #[arg(long, default_value_t = 0)]
    priority: u8,
    /// Permissions: group, private, emergency, data, interconnect, all or none (`;` or `,`).
    #[arg(long, default_value = "group,private,emergency,data")]
    permissions: String,
    /// Permitted talkgroups (`,`-separated); the first is the default primary.
    #[arg(long)]
    talkgroups: String,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: a library error that wraps a
/// cause often repeats the cause's text in its own.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !line.contains(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = || Config::load(cli.config.as_deref());
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            // The same checks as `serve` makes before it opens the database.
            trunkd::logging::filter(&cfg()?.log)?;
            println!("configuration ok");
            Ok(())
        }
        Command::Config(ConfigCommand::Keygen) => {
            println!(
                "{}",
                SiteKey::generate()
                    .context("reading the OS random generator")?
                    .to_hex()
            );
            Ok(())
        }
        Command::Serve { listen, log_json } => {
            let mut cfg = cfg()?;
            if let Some(addr) = listen {
                cfg.link.listen = addr;
            }
            if log_json {
                cfg.log.format = LogFormat::Json;
            }
            trunkd::logging::init(&cfg.log)?;
            runtime()?.block_on(serve(cfg))
        }
        other => {
            let cfg = cfg()?;
            runtime()?.block_on(admin(cfg, other))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the runtime")
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = trunkd::controller::start(cfg).await?;
    info!(addr = %running.link_addr, "trunkd started");
    running.run_until(shutdown_signal()).await;
    info!("trunkd stopped");
    Ok(())
}

/// Who made a change, for the audit log.
fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

async fn admin(cfg: Config, command: Command) -> anyhow::Result<()> {
    let store = Store::open(&cfg.database.url, &cfg.database.data_dir).await?;
    let result = run_admin(&cfg, &store, command).await;
    store.close().await;
    result
}

async fn run_admin(cfg: &Config, store: &Store, command: Command) -> anyhow::Result<()> {
    let actor = actor();
    match command {
        Command::Migrate => println!("migrations applied ({})", store.backend()),
        Command::Fleet(FleetCommand::Add { id, name }) => {
            let id = FleetId::new(id).context("fleet id must be 1..=65535")?;
            store.add_fleet(&actor, &Fleet { id, name }).await?;
            println!("fleet {id} added");
        }
        Command::Talkgroup(TalkgroupCommand::Add { fleet, id, name }) => {
            let fleet = FleetId::new(fleet).context("fleet id must be 1..=65535")?;
            let id = TalkgroupId::new(id).context("talkgroup id must be 1..=65535")?;
            store
                .add_talkgroup(&actor, &Talkgroup { fleet, id, name })
                .await?;
            println!("talkgroup {id} added to fleet {fleet}");
        }
        Command::Site(SiteCommand::Add {
            id,
            name,
            carriers,
            slots,
            key,
        }) => {
            let id = SiteId::new(id).context("site id must be 1..=4095")?;
            if !(1..=64).contains(&carriers) {
                bail!("carriers must be 1..=64");
            }
            if ![2, 3, 4, 6].contains(&slots) {
                bail!("slots per carrier must be 6, 4, 3 or 2");
            }
            let (key, generated) = match key {
                Some(k) => (SiteKey::from_hex(&k)?, false),
                None => (SiteKey::generate()?, true),
            };
            store
                .add_site(
                    &actor,
                    &Site {
                        id,
                        name,
                        carriers,
                        slots_per_carrier: slots,
                        key: key.clone(),
                    },
                )
                .await?;
            println!("site {id} added");
            if generated {
                println!(
                    "link key (shown once; configure it on the site's gateway): {}",
                    key.to_hex()
                );
            }
        }
        Command::Site(cmd @ (SiteCommand::Fault(_) | SiteCommand::Restore(_))) => {
            let (a, faulty) = match cmd {
                SiteCommand::Fault(a) => (a, true),
                SiteCommand::Restore(a) => (a, false),
                SiteCommand::Add { .. } => unreachable!("matched above"),
            };
            let id = SiteId::new(a.id).context("site id must be 1..=4095")?;
            if a.carrier > 63 || a.slot.is_some_and(|s| s > 5) {
                bail!("carrier must be 0..=63 and slot 0..=5");
            }
            store
                .set_slot_fault(&actor, id, a.carrier, a.slot.unwrap_or(255), faulty)
                .await?;
            let what = a
                .slot
                .map_or("whole carrier".to_string(), |s| format!("slot {s}"));
            let state = if faulty {
                "out of service"
            } else {
                "back in service"
            };
            println!("site {id} carrier {} {what} {state}", a.carrier);
        }
        Command::Subscriber(SubscriberCommand::Add(a)) => {
            let (new, generated) = new_subscriber(a)?;
            let sub = store
                .add_subscriber(&actor, new, &cfg.registration.imsi_prefix)
                .await?;
            println!(
                "subscriber added: imsi {} individual id {}",
                sub.imsi, sub.individual
            );
            if generated {
                println!("k   (shown once): {}", sub.k.to_hex());
                println!("opc (shown once): {}", sub.opc.to_hex());
            }
        }
        Command::Subscriber(SubscriberCommand::Show { imsi }) => {
            let imsi = Imsi::parse(&imsi).context("imsi")?;
            let Some(s) = store.subscriber(imsi).await? else {
                bail!("subscriber {imsi} does not exist")
            };
            println!("imsi:          {}", s.imsi);
            println!("imei:          {}", s.imei);
            println!("msisdn:        {}", s.msisdn.as_deref().unwrap_or("-"));
            println!("fleet/member:  {}/{}", s.unit.fleet, s.unit.member);
            println!("individual id: {}", s.individual);
            println!("priority:      {}", s.priority);
            println!("permissions:   {}", s.permissions);
            let tgs: Vec<String> = s.talkgroups.iter().map(|t| t.to_string()).collect();
            println!("talkgroups:    {}", tgs.join(","));
            println!(
                "state:         {}",
                if s.inhibited { "inhibited" } else { "enabled" }
            );
            match store.last_location(imsi).await? {
                Some((site, at)) => println!("last seen:     site {site} at {at} (unix ms)"),
                None => println!("last seen:     never"),
            }
        }
        Command::Subscriber(SubscriberCommand::Import { file }) => {
            let f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let rows = parse_subscribers(std::io::BufReader::new(f))
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            let n = rows.len();
            store
                .import_subscribers(&actor, rows, &cfg.registration.imsi_prefix)
                .await
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            println!("imported {n} subscribers");
        }
        Command::Subscriber(SubscriberCommand::Inhibit { imsi }) => {
            store
                .set_inhibited(&actor, Imsi::parse(&imsi).context("imsi")?, true)
                .await?;
            println!("subscriber {imsi} inhibited");
        }
        Command::Subscriber(SubscriberCommand::Enable { imsi }) => {
            store
                .set_inhibited(&actor, Imsi::parse(&imsi).context("imsi")?, false)
                .await?;
            println!("subscriber {imsi} enabled");
        }
        Command::Serve { .. } | Command::Config(_) => unreachable!("handled in main"),
    }
    Ok(())
}

/// Builds the record from the arguments; `true` when keys were generated.
fn new_subscriber(a: SubscriberAdd) -> anyhow::Result<(NewSubscriber, bool)> {
    let secret = |v: Option<String>, name: &str| -> anyhow::Result<Option<Secret128>> {
        v.map(|s| Secret128::from_hex(&s).with_context(|| format!("{name} must be 32 hex digits")))
            .transpose()
    };
    let (k, opc) = (secret(a.k, "k")?, secret(a.opc, "opc")?);
    let generated = k.is_none() && opc.is_none();
    let (k, opc) = match (k, opc) {
        (Some(k), Some(opc)) => (k, opc),
        (None, None) => (Secret128::generate()?, Secret128::generate()?),
        _ => bail!("give both --k and --opc, or neither to generate them"),
    };
    let new = NewSubscriber {
        imei: Imei::parse(&a.imei).context("imei")?,
        imsi: a.imsi.as_deref().map(Imsi::parse).transpose().context("imsi")?,
        msisdn: a.msisdn,
        unit: Unit {
            fleet: FleetId::new(a.fleet).context("fleet must be 1..=65535")?,
            member: MemberId::new(a.member).context("member must be 1..=65535")?,
        },
        individual: a
            .individual_id
            .map(|i| IndividualId::new(i).context("individual id must be 1..=16777215"))
            .transpose()?,
        k,
        opc,
        priority: a.priority,
        permissions: Permissions::parse(&a.permissions).map_err(anyhow::Error::msg)?,
        talkgroups: parse_talkgroups(&a.talkgroups).map_err(anyhow::Error::msg)?,
    };
    Ok((new, generated))
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
