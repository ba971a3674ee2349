//! The `trunkd` command line: parses arguments and calls into the library.

use std::io::Write;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, Parser, Subcommand};
use tracing::info;

use trunkd::auth::{password, Fleets, Role};
use trunkd::config::{Config, LogFormat, DEFAULT_TOML};
use trunkd::hlr::{Fleet, NewSubscriber, Permissions, Site, Subscriber, Talkgroup};
use trunkd::protocol::{
    Carrier, FleetId, Imei, Imsi, IndividualId, MemberId, SiteId, SiteKey, Slot, TalkgroupId, Unit,
};
use trunkd::store::csv::{parse_subscribers, parse_talkgroups};
use trunkd::store::{rules, OperatorChange, Provisioned, Store};

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
    /// Operators of the API (there is no default account: add the first admin here).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// The API's token signing keys.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Print trunkd's manual page (roff, for man(1)): `trunkd manual > trunkd.1`.
    Manual,
    /// Print a shell completion script: `trunkd completions bash > /etc/bash_completion.d/trunkd`.
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Add a new Ed25519 signing key: new tokens are signed with it at once (within
    /// registration.hlr_refresh_ms on running controllers); the old key still checks the
    /// tokens it signed until the longest of them has expired (api.access_token_ttl_s).
    RotateKey,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Add an operator. The password is read twice from the terminal (or two lines of
    /// standard input), never from an argument.
    Add {
        /// Login name: a-z, 0-9, '.', '_', '-', at most 64.
        name: String,
        /// admin, dispatcher or viewer.
        #[arg(long, value_parser = role)]
        role: Role,
        /// Limit it to these fleets (`,`-separated ids); every fleet when omitted.
        #[arg(long, value_parser = fleets, default_value = "")]
        fleets: Fleets,
    },
    /// List the operators (never their password hashes).
    List,
    /// Set an operator's password (read as for `add`); its tokens are revoked.
    Passwd {
        /// Login name.
        name: String,
    },
    /// Change an operator's role and/or fleets; its tokens are revoked.
    Update {
        /// Login name.
        name: String,
        /// admin, dispatcher or viewer.
        #[arg(long, value_parser = role)]
        role: Option<Role>,
        /// Its fleets (`,`-separated ids); `all` for every fleet.
        #[arg(long, value_parser = fleets)]
        fleets: Option<Fleets>,
    },
    /// Disable an operator: it cannot log in and its tokens are revoked.
    Disable {
        /// Login name.
        name: String,
    },
    /// Enable a disabled operator again.
    Enable {
        /// Login name.
        name: String,
    },
    /// Remove an operator; its tokens are revoked.
    Remove {
        /// Login name.
        name: String,
    },
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
        #[arg(long, value_parser = ranged(FleetId::new, FleetId::MIN, FleetId::MAX))]
        id: FleetId,
        /// Name (not blank).
        #[arg(long)]
        name: String,
    },
    /// List the fleets.
    List,
    /// Remove a fleet; refused while it has talkgroups or subscribers.
    Remove {
        /// Fleet id, 1..=65535.
        #[arg(long, value_parser = ranged(FleetId::new, FleetId::MIN, FleetId::MAX))]
        id: FleetId,
    },
}

#[derive(Subcommand)]
enum TalkgroupCommand {
    /// Add a talkgroup to a fleet.
    Add {
        /// Fleet id, 1..=65535.
        #[arg(long, value_parser = ranged(FleetId::new, FleetId::MIN, FleetId::MAX))]
        fleet: FleetId,
        /// Talkgroup id within the fleet, 1..=65535.
        #[arg(long, value_parser = ranged(TalkgroupId::new, TalkgroupId::MIN, TalkgroupId::MAX))]
        id: TalkgroupId,
        /// Name (not blank).
        #[arg(long)]
        name: String,
    },
    /// List the talkgroups (of one fleet with --fleet).
    List {
        /// Only this fleet's, 1..=65535.
        #[arg(long, value_parser = ranged(FleetId::new, FleetId::MIN, FleetId::MAX))]
        fleet: Option<FleetId>,
    },
    /// Remove a talkgroup; refused while a subscriber is permitted on it.
    Remove {
        /// Fleet id, 1..=65535.
        #[arg(long, value_parser = ranged(FleetId::new, FleetId::MIN, FleetId::MAX))]
        fleet: FleetId,
        /// Talkgroup id within the fleet, 1..=65535.
        #[arg(long, value_parser = ranged(TalkgroupId::new, TalkgroupId::MIN, TalkgroupId::MAX))]
        id: TalkgroupId,
    },
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Add a site. Without --key a random key is generated and printed once.
    Add {
        /// Site id, 1..=4095.
        #[arg(long, value_parser = ranged(SiteId::new, SiteId::MIN, SiteId::MAX))]
        id: SiteId,
        /// Name (not blank).
        #[arg(long)]
        name: String,
        /// Carriers at the site, 1..=64.
        #[arg(long, default_value_t = 1, value_parser = within(rules::CARRIERS))]
        carriers: u8,
        /// TDMA slots per carrier: 6, 4, 3 or 2.
        #[arg(long, default_value_t = 6, value_parser = slots_per_carrier)]
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
    /// List the sites, their shape and what is out of service (never their keys).
    List,
    /// Remove a site with its out-of-service slots; a running controller stops
    /// accepting its gateway.
    Remove {
        /// Site id, 1..=4095.
        #[arg(long, value_parser = ranged(SiteId::new, SiteId::MIN, SiteId::MAX))]
        id: SiteId,
    },
}

#[derive(Args)]
struct SlotArgs {
    /// Site id, 1..=4095.
    #[arg(long, value_parser = ranged(SiteId::new, SiteId::MIN, SiteId::MAX))]
    id: SiteId,
    /// Carrier index, 0..=63 (below the site's carriers).
    #[arg(long, value_parser = within(Carrier::MIN..=Carrier::MAX))]
    carrier: u8,
    /// Slot 0..=5 (below the site's slots per carrier; not carrier 0 slot 0, the control
    /// channel); omit for the whole carrier.
    #[arg(long, value_parser = within(Slot::MIN..=Slot::MAX))]
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
    /// Import subscribers from a CSV file, all or nothing (format in the README), and
    /// print the IMSIs and individual ids it assigned.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Write the assigned identities (CSV: line,imei,imsi,individual_id) to this
        /// file instead of printing them.
        #[arg(long, value_name = "FILE")]
        assigned: Option<PathBuf>,
    },
    /// List subscribers by IMSI, a page at a time (never their keys).
    List {
        /// Only this fleet's, 1..=65535.
        #[arg(long, value_parser = ranged(FleetId::new, FleetId::MIN, FleetId::MAX))]
        fleet: Option<FleetId>,
        /// Start after this IMSI (the last one of the previous page).
        #[arg(long, value_parser = imsi)]
        after: Option<Imsi>,
        /// At most this many, 1..=10000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Remove a subscriber with its talkgroups, last location and stored short data.
    Remove {
        /// IMSI, 15 digits.
        #[arg(value_parser = imsi)]
        imsi: Imsi,
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
    /// The name dispatchers know the unit by ("Car 12"), 1 to 32 characters.
    #[arg(long)]
    alias: Option<String>,
    /// Fleet id, 1..=65535.
    #[arg(long, value_parser = ranged(FleetId::new, FleetId::MIN, FleetId::MAX))]
    fleet: FleetId,
    /// Member id within the fleet, 1..=65535.
    #[arg(long, value_parser = ranged(MemberId::new, MemberId::MIN, MemberId::MAX))]
    member: MemberId,
    /// Individual (dispatch) id, 1..=16777215; assigned when omitted.
    #[arg(long, value_parser = ranged(IndividualId::new, IndividualId::MIN, IndividualId::MAX))]
    individual_id: Option<IndividualId>,
    /// Authentication key K, 32 hex digits (better: TRUNKD_K). Generated when omitted.
    #[arg(long, env = "TRUNKD_K", hide_env_values = true)]
    k: Option<String>,
    /// OPc, 32 hex digits (better: TRUNKD_OPC). Generated when omitted.
    #[arg(long, env = "TRUNKD_OPC", hide_env_values = true)]
    opc: Option<String>,
    /// Priority level 0..=15.
    #[arg(long, default_value_t = 0, value_parser = within(rules::PRIORITIES))]
    priority: u8,
    /// Permissions: group, private, emergency, data, interconnect, all or none (`;` or `,`).
    #[arg(long, default_value = rules::DEFAULT_PERMISSIONS)]
    permissions: String,
    /// Permitted talkgroups (`,`-separated); the first is the default primary.
    #[arg(long)]
    talkgroups: String,
}

/// A clap parser for one of the protocol's ranged id types ([`rules::ranged`]).
fn ranged<T, R>(
    new: fn(R) -> Option<T>,
    min: R,
    max: R,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: 'static,
    R: FromStr + std::fmt::Display + Copy + Send + Sync + 'static,
{
    move |s| rules::ranged(s, new, min, max)
}

/// A clap parser for a number within `range` ([`rules::within`]).
fn within(range: RangeInclusive<u8>) -> impl Fn(&str) -> Result<u8, String> + Clone + Send + Sync + 'static {
    move |s| rules::within(s, range.clone())
}

fn slots_per_carrier(s: &str) -> Result<u8, String> {
    let n = s.parse().map_err(|_| "must be 6, 4, 3 or 2".to_string())?;
    rules::slots_per_carrier(n).map_err(|e| e.to_string())?;
    Ok(n)
}

fn role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn fleets(s: &str) -> Result<Fleets, String> {
    if s == "all" {
        return Ok(Fleets::All);
    }
    Fleets::parse_list(s)
}

/// Reads a new password twice: from the terminal without echo, or as two lines of
/// standard input when it is not a terminal. Never from an argument (it would be seen in
/// the process list and the shell's history).
fn read_new_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let (first, second) = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        password::check(&first)?;
        let second = rpassword::prompt_password("Again: ").context("reading the password")?;
        (first, second)
    } else {
        let mut lines = std::io::stdin().lock().lines();
        let mut next = || -> anyhow::Result<String> {
            match lines.next() {
                Some(line) => Ok(line.context("reading the password from standard input")?),
                None => bail!("standard input ended: give the password on two lines"),
            }
        };
        (next()?, next()?)
    };
    if first != second {
        bail!("the two passwords differ");
    }
    password::check(&first)?;
    Ok(first)
}

/// Hashes a password off the runtime's threads (argon2id is slow by design).
async fn hash_password(pw: String) -> anyhow::Result<String> {
    Ok(tokio::task::spawn_blocking(move || password::hash(&pw)).await??)
}

fn imsi(s: &str) -> Result<Imsi, String> {
    Imsi::parse(s).map_err(|e| e.to_string())
}

/// Standard output for what commands print, buffered. A reader that goes away early
/// (`trunkd subscriber list | head -3`) ends the command quietly: the write fails with
/// `BrokenPipe` (Rust ignores SIGPIPE), which becomes [`OutputClosed`] and exit status 0,
/// where `println!` would panic.
struct Out(std::io::BufWriter<std::io::Stdout>);

/// Standard output was closed by its reader.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
struct OutputClosed;

impl Out {
    fn text(&mut self, text: std::fmt::Arguments) -> anyhow::Result<()> {
        self.0.write_fmt(text).map_err(output_error)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.0.flush().map_err(output_error)
    }
}

fn output_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        OutputClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// Writes one line to an [`Out`], returning from the function if the reader is gone.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {
        $out.text(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

fn main() -> std::process::ExitCode {
    let mut out = Out(std::io::BufWriter::new(std::io::stdout()));
    match run(Cli::parse(), &mut out).and_then(|()| out.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<OutputClosed>() => std::process::ExitCode::SUCCESS,
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

fn run(cli: Cli, out: &mut Out) -> anyhow::Result<()> {
    let cfg = || Config::load(cli.config.as_deref());
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            out.text(format_args!("{DEFAULT_TOML}"))?;
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            // The same checks as `serve` makes before it opens the database.
            trunkd::logging::filter(&cfg()?.log)?;
            outln!(out, "configuration ok");
            Ok(())
        }
        Command::Manual => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            out.text(format_args!("{}", String::from_utf8_lossy(&page)))
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "trunkd", &mut script);
            out.text(format_args!("{}", String::from_utf8_lossy(&script)))
        }
        Command::Config(ConfigCommand::Keygen) => {
            outln!(
                out,
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
            let logs = trunkd::logging::init(&cfg.log)?;
            let reload = Reload {
                config: cli.config.clone(),
                logs,
            };
            runtime()?.block_on(serve(cfg, reload))
        }
        other => {
            let cfg = cfg()?;
            runtime()?.block_on(admin(cfg, other, out))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the runtime")
}

/// What `SIGHUP` reloads (`trunkd::service`): the configuration file it reads again,
/// and the logs' filter.
struct Reload {
    config: Option<std::path::PathBuf>,
    logs: trunkd::logging::Logs,
}

impl Reload {
    /// At every `SIGHUP`: reads the configuration again and applies `log.level` and, when
    /// the API serves TLS (`api_tls`), its certificate and key.
    async fn on_hangups(
        self,
        api_tls: Option<axum_server::tls_rustls::RustlsConfig>,
        link_tls: Option<Arc<trunkd::link::tls::ServerTls>>,
    ) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            trunkd::service::reloading(|| self.once(api_tls.as_ref(), link_tls.as_deref()));
        }
    }

    fn once(
        &self,
        api_tls: Option<&axum_server::tls_rustls::RustlsConfig>,
        link_tls: Option<&trunkd::link::tls::ServerTls>,
    ) {
        use trunkd::service::{kept, reloaded};
        let cfg = match Config::load(self.config.as_deref()) {
            Ok(c) => c,
            Err(e) => return kept("everything", &e),
        };
        match self.logs.reload(&cfg.log) {
            Ok(()) => reloaded("log.level"),
            Err(e) => kept("log.level", &e),
        }
        if let (Some(tls), Some(cert), Some(key)) = (link_tls, &cfg.link.tls_cert, &cfg.link.tls_key) {
            match tls.reload(cert, key) {
                Ok(()) => reloaded("link.tls_cert and link.tls_key"),
                Err(e) => kept("the link's certificate", &e),
            }
        }
        if let Some(tls) = api_tls {
            match trunkd::api::reload_tls(tls, &cfg.api) {
                Ok(()) => reloaded("api.tls_cert and api.tls_key"),
                Err(e) => kept("the API's certificate", &e),
            }
        }
    }
}

async fn serve(cfg: Config, reload: Reload) -> anyhow::Result<()> {
    if cfg.ha.enabled {
        // The HA nodes reload their logs' filter; their API certificates need a restart.
        let reloading = tokio::spawn(reload.on_hangups(None, None));
        trunkd::ha::serve(cfg, async {
            shutdown_signal().await;
            trunkd::service::stopping();
        })
        .await?;
        reloading.abort();
        info!("trunkd stopped");
        return Ok(());
    }
    let api_cfg = cfg.api.clone();
    let api_addr = api_cfg.listen;
    let running = trunkd::controller::start(cfg).await?;
    let api = match trunkd::api::bind(&api_cfg).await {
        Ok(l) => l,
        Err(e) => {
            running.stop().await;
            anyhow::bail!("binding the operator API on {api_addr}: {e}");
        }
    };
    info!(addr = %running.link_addr, "trunkd started");
    let reloading = tokio::spawn(reload.on_hangups(api.tls(), running.link_tls.clone()));
    let (stop_api, api_stopping) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(trunkd::api::serve(api, running.handle(), api_cfg, async {
        let _ = api_stopping.await;
    }));
    trunkd::service::ready();
    running
        .run_until(async {
            shutdown_signal().await;
            trunkd::service::stopping();
            let _ = stop_api.send(());
        })
        .await;
    reloading.abort();
    if let Ok(Err(e)) = api.await {
        tracing::error!(error = %e, "operator API failed");
    }
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

async fn operator(store: &Store, actor: &str, cmd: OperatorCommand, out: &mut Out) -> anyhow::Result<()> {
    let (name, change) = match cmd {
        OperatorCommand::Add { name, role, fleets } => {
            trunkd::auth::check_name(&name).map_err(anyhow::Error::msg)?;
            let phc = hash_password(read_new_password()?).await?;
            store.add_operator(actor, &name, &phc, role, &fleets).await?;
            outln!(out, "operator {name} added ({role})");
            return Ok(());
        }
        OperatorCommand::List => {
            outln!(out, "{:<24} {:<10} {:<9} fleets", "name", "role", "state");
            for o in store.operators().await? {
                let state = if o.disabled { "disabled" } else { "enabled" };
                let fleets = match o.fleets {
                    Fleets::All => "all".to_string(),
                    f => f.to_list(),
                };
                outln!(out, "{:<24} {:<10} {:<9} {}", o.name, o.role, state, fleets);
            }
            return Ok(());
        }
        OperatorCommand::Remove { name } => {
            store.remove_operator(actor, &name).await?;
            outln!(out, "operator {name} removed");
            return Ok(());
        }
        OperatorCommand::Passwd { name } => {
            let phc = hash_password(read_new_password()?).await?;
            (name, OperatorChange::Password(phc))
        }
        OperatorCommand::Update { name, role, fleets } => (name, OperatorChange::Access { role, fleets }),
        OperatorCommand::Disable { name } => (name, OperatorChange::Disabled(true)),
        OperatorCommand::Enable { name } => (name, OperatorChange::Disabled(false)),
    };
    store.change_operator(actor, &name, change).await?;
    outln!(out, "operator {name} changed; tokens issued before are refused");
    Ok(())
}

async fn admin(cfg: Config, command: Command, out: &mut Out) -> anyhow::Result<()> {
    let store = Store::open(&cfg.database.url, &cfg.database.data_dir).await?;
    let result = run_admin(&cfg, &store, command, out).await;
    store.close().await;
    result
}

async fn run_admin(cfg: &Config, store: &Store, command: Command, out: &mut Out) -> anyhow::Result<()> {
    let actor = actor();
    match command {
        Command::Migrate => outln!(out, "migrations applied ({})", store.backend()),
        Command::Operator(cmd) => operator(store, &actor, cmd, out).await?,
        Command::Auth(AuthCommand::RotateKey) => {
            if cfg.api.jwt_algorithm != trunkd::config::JwtAlgorithm::EdDSA {
                bail!("api.jwt_algorithm is not EdDSA: there is no key to rotate (change api.jwt_secret instead)");
            }
            let lifetime = cfg.api.access_token_ttl_s as i64 * 1000;
            let kid = store.add_signing_key(&actor, Some(lifetime)).await?;
            outln!(
                out,
                "signing key {kid} added; the previous key retires in {} s",
                cfg.api.access_token_ttl_s
            );
        }
        Command::Fleet(FleetCommand::Add { id, name }) => {
            store.add_fleet(&actor, &Fleet { id, name }).await?;
            outln!(out, "fleet {id} added");
        }
        Command::Fleet(FleetCommand::List) => {
            outln!(out, "{:<6} name", "id");
            for f in store.fleets().await? {
                outln!(out, "{:<6} {}", f.id, f.name);
            }
        }
        Command::Fleet(FleetCommand::Remove { id }) => {
            store.remove_fleet(&actor, id).await?;
            outln!(out, "fleet {id} removed");
        }
        Command::Talkgroup(TalkgroupCommand::Add { fleet, id, name }) => {
            store
                .add_talkgroup(&actor, &Talkgroup { fleet, id, name })
                .await?;
            outln!(out, "talkgroup {id} added to fleet {fleet}");
        }
        Command::Talkgroup(TalkgroupCommand::List { fleet }) => {
            outln!(out, "{:<6} {:<6} name", "fleet", "id");
            for t in store.talkgroups_of(fleet).await? {
                outln!(out, "{:<6} {:<6} {}", t.fleet, t.id, t.name);
            }
        }
        Command::Talkgroup(TalkgroupCommand::Remove { fleet, id }) => {
            store.remove_talkgroup(&actor, fleet, id).await?;
            outln!(out, "talkgroup {id} removed from fleet {fleet}");
        }
        Command::Site(SiteCommand::Add {
            id,
            name,
            carriers,
            slots,
            key,
        }) => {
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
            outln!(out, "site {id} added");
            if generated {
                outln!(
                    out,
                    "link key (shown once; configure it on the site's gateway): {}",
                    key.to_hex()
                );
            }
        }
        Command::Site(SiteCommand::List) => {
            let faults = store.slot_faults().await?;
            outln!(
                out,
                "{:<5} {:<8} {:<6} {:<16} name",
                "id",
                "carriers",
                "slots",
                "out of service"
            );
            for s in store.sites().await? {
                let down: Vec<String> = faults
                    .iter()
                    .filter(|(site, _, _)| *site == s.id)
                    .map(|&(_, c, slot)| match slot {
                        rules::WHOLE_CARRIER => format!("c{c}"),
                        slot => format!("c{c}s{slot}"),
                    })
                    .collect();
                let down = if down.is_empty() {
                    "-".to_string()
                } else {
                    down.join(",")
                };
                outln!(
                    out,
                    "{:<5} {:<8} {:<6} {:<16} {}",
                    s.id,
                    s.carriers,
                    s.slots_per_carrier,
                    down,
                    s.name
                );
            }
        }
        Command::Site(SiteCommand::Remove { id }) => {
            store.remove_site(&actor, id).await?;
            outln!(out, "site {id} removed");
        }
        Command::Site(cmd @ (SiteCommand::Fault(_) | SiteCommand::Restore(_))) => {
            let (a, faulty) = match cmd {
                SiteCommand::Fault(a) => (a, true),
                SiteCommand::Restore(a) => (a, false),
                _ => unreachable!("matched above"),
            };
            let id = a.id;
            store
                .set_slot_fault(
                    &actor,
                    id,
                    a.carrier,
                    a.slot.unwrap_or(rules::WHOLE_CARRIER),
                    faulty,
                )
                .await?;
            let what = a
                .slot
                .map_or("whole carrier".to_string(), |s| format!("slot {s}"));
            let state = if faulty {
                "out of service"
            } else {
                "back in service"
            };
            outln!(out, "site {id} carrier {} {what} {state}", a.carrier);
        }
        Command::Subscriber(SubscriberCommand::Add(a)) => {
            let (new, generated) = new_subscriber(a)?;
            let sub = store
                .add_subscriber(&actor, new, &cfg.registration.imsi_prefix)
                .await?;
            outln!(
                out,
                "subscriber added: imsi {} individual id {}",
                sub.imsi,
                sub.individual
            );
            if generated {
                outln!(out, "k   (shown once): {}", sub.k.to_hex());
                outln!(out, "opc (shown once): {}", sub.opc.to_hex());
            }
        }
        Command::Subscriber(SubscriberCommand::Show { imsi }) => {
            let imsi = Imsi::parse(&imsi).context("imsi")?;
            let Some(s) = store.subscriber(imsi).await? else {
                bail!("subscriber {imsi} does not exist")
            };
            outln!(out, "imsi:          {}", s.imsi);
            outln!(out, "imei:          {}", s.imei);
            outln!(out, "msisdn:        {}", s.msisdn.as_deref().unwrap_or("-"));
            outln!(out, "alias:         {}", s.alias.as_deref().unwrap_or("-"));
            outln!(out, "fleet/member:  {}/{}", s.unit.fleet, s.unit.member);
            outln!(out, "individual id: {}", s.individual);
            outln!(out, "priority:      {}", s.priority);
            outln!(out, "permissions:   {}", s.permissions);
            outln!(out, "talkgroups:    {}", talkgroup_list(&s));
            outln!(out, "state:         {}", state(&s));
            match store.last_location(imsi).await? {
                Some((site, at)) => outln!(out, "last seen:     site {site} at {at} (unix ms)"),
                None => outln!(out, "last seen:     never"),
            }
        }
        Command::Subscriber(SubscriberCommand::List { fleet, after, limit }) => {
            let page = store.subscribers_page(fleet, after, limit).await?;
            outln!(
                out,
                "{:<15} {:<15} {:<15} {:<12} {:<10} {:<3} {:<9} {:<41} talkgroups",
                "imsi",
                "imei",
                "msisdn",
                "fleet/member",
                "individual",
                "pri",
                "state",
                "permissions"
            );
            for s in &page {
                outln!(
                    out,
                    "{:<15} {:<15} {:<15} {:<12} {:<10} {:<3} {:<9} {:<41} {}",
                    s.imsi,
                    s.imei,
                    s.msisdn.as_deref().unwrap_or("-"),
                    format!("{}/{}", s.unit.fleet, s.unit.member),
                    s.individual,
                    s.priority,
                    state(s),
                    s.permissions,
                    talkgroup_list(s)
                );
            }
            if let Some(last) = page.last().filter(|_| page.len() == limit as usize) {
                let fleet = fleet.map_or(String::new(), |f| format!(" --fleet {f}"));
                eprintln!(
                    "more may follow: trunkd subscriber list{fleet} --limit {limit} --after {}",
                    last.imsi
                );
            }
        }
        Command::Subscriber(SubscriberCommand::Import { file, assigned }) => {
            import(cfg, store, &actor, &file, assigned, out).await?;
        }
        Command::Subscriber(SubscriberCommand::Remove { imsi }) => {
            store.remove_subscriber(&actor, imsi).await?;
            outln!(out, "subscriber {imsi} removed");
        }
        Command::Subscriber(SubscriberCommand::Inhibit { imsi }) => {
            store
                .set_inhibited(&actor, Imsi::parse(&imsi).context("imsi")?, true)
                .await?;
            outln!(out, "subscriber {imsi} inhibited");
        }
        Command::Subscriber(SubscriberCommand::Enable { imsi }) => {
            store
                .set_inhibited(&actor, Imsi::parse(&imsi).context("imsi")?, false)
                .await?;
            outln!(out, "subscriber {imsi} enabled");
        }
        Command::Serve { .. } | Command::Config(_) | Command::Manual | Command::Completions { .. } => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}

fn talkgroup_list(s: &Subscriber) -> String {
    let tgs: Vec<String> = s.talkgroups.iter().map(|t| t.to_string()).collect();
    tgs.join(",")
}

fn state(s: &Subscriber) -> &'static str {
    if s.inhibited {
        "inhibited"
    } else {
        "enabled"
    }
}

/// `subscriber import`: all or nothing, then the identities it assigned, printed or
/// written to `assigned` (created before the import, so a bad path imports nothing).
async fn import(
    cfg: &Config,
    store: &Store,
    actor: &str,
    file: &std::path::Path,
    assigned: Option<PathBuf>,
    out: &mut Out,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut assigned_file = match &assigned {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let rows = parse_subscribers(std::io::BufReader::new(f))
        .with_context(|| format!("{}: nothing imported", file.display()))?;
    let done = store
        .import_subscribers(actor, rows, &cfg.registration.imsi_prefix)
        .await
        .with_context(|| format!("{}: nothing imported", file.display()))?;
    let new: Vec<&Provisioned> = done
        .iter()
        .filter(|p| p.imsi_assigned || p.individual_assigned)
        .collect();
    outln!(out, "imported {} subscribers", done.len());
    let header = "line,imei,imsi,individual_id";
    let row = |p: &Provisioned| format!("{},{},{},{}", p.line, p.imei, p.imsi, p.individual);
    match (&mut assigned_file, assigned) {
        (Some(w), Some(path)) => {
            let mut write = || -> std::io::Result<()> {
                writeln!(w, "{header}")?;
                for p in &new {
                    writeln!(w, "{}", row(p))?;
                }
                w.flush()
            };
            write().with_context(|| {
                format!(
                    "imported, but writing {} failed; `trunkd subscriber list` shows them",
                    path.display()
                )
            })?;
            outln!(
                out,
                "{} assigned identities written to {}",
                new.len(),
                path.display()
            );
        }
        _ if !new.is_empty() => {
            outln!(out, "assigned identities:");
            outln!(out, "{header}");
            for p in &new {
                outln!(out, "{}", row(p));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Builds the record from the arguments; `true` when keys were generated.
fn new_subscriber(a: SubscriberAdd) -> anyhow::Result<(NewSubscriber, bool)> {
    let (k, opc, generated) =
        rules::subscriber_keys(a.k.as_deref(), a.opc.as_deref()).map_err(anyhow::Error::msg)?;
    let new = NewSubscriber {
        imei: Imei::parse(&a.imei).context("imei")?,
        imsi: a.imsi.as_deref().map(Imsi::parse).transpose().context("imsi")?,
        msisdn: a.msisdn,
        alias: a.alias,
        unit: Unit {
            fleet: a.fleet,
            member: a.member,
        },
        individual: a.individual_id,
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
