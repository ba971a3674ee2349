//! trunksim: simulated base-station gateways (and, in later versions, the radios behind
//! them) that drive trunkd over the real link protocol.

mod api;
mod calls;
mod chaos;
mod cost;
mod emergency;
mod html;
mod load;
mod proxy;
mod report;
mod server_metrics;
mod soak;
mod takeover;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use trunkd::link::gateway::ControllerList;
use trunkd::protocol::{Cause, Frame, Message, SiteId, SiteKey};

#[derive(Parser)]
#[command(name = "trunksim", version, about = "Simulated site gateways for trunkd")]
struct Cli {
    /// No progress bars (they are drawn on stderr, and only when it is a terminal).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One gateway: connect, authenticate, keep the link alive, send raw frames and
    /// print every frame the controller sends.
    Gateway {
        /// The controllers' link addresses (`host:port`), comma-separated or repeated:
        /// searched for the active one as PROTOCOL.md §3.3 says.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7300")]
        server: Vec<String>,
        /// This gateway's site id (1..=4095).
        #[arg(long)]
        site: u16,
        /// The site's pre-shared key, 64 hex digits.
        #[arg(long, env = "TRUNKSIM_KEY", hide_env_values = true)]
        key: String,
        /// A frame to send once the link is up, as hex (spaces allowed); repeatable.
        #[arg(long = "send", value_name = "HEX")]
        frames: Vec<String>,
        /// Stop after this many seconds (default: run until the link closes or Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Provision a simulated fleet: fleets, talkgroups and sites go straight into the HLR
    /// named by the trunkd configuration; the units go to OUT/units.csv for
    /// `trunkd subscriber import`, and the site keys to OUT/sites.csv. With `--via-api`,
    /// all of it goes through a running controller's operator API instead.
    Provision {
        /// trunkd's configuration file (for the database); defaults as trunkd's.
        #[arg(long, env = "TRUNKD_CONFIG")]
        config: Option<PathBuf>,
        /// Units to create.
        #[arg(long)]
        units: usize,
        /// Sites to create (ids 1..=SITES).
        #[arg(long, default_value_t = 100)]
        sites: u16,
        /// Fleets to share the units among, in contiguous blocks (default: one per
        /// 1,000 units; at most 65,535 units in a fleet).
        #[arg(long)]
        fleets: Option<u16>,
        /// Talkgroups per fleet (at least 2: every unit is affiliated to talkgroups 1
        /// and 2, which the call load calls).
        #[arg(long, default_value_t = 4)]
        talkgroups: u16,
        /// Output directory.
        #[arg(long, default_value = "sim")]
        out: PathBuf,
        /// Provision through the operator API at this address (`host:port`) instead of
        /// writing the HLR: fleets, talkgroups and sites one request each, then the units
        /// as one CSV import. Needs `--user` (an admin) and `--password-file`.
        #[arg(long, value_name = "HOST:PORT")]
        via_api: Option<String>,
        /// With `--via-api`: the admin to log in as.
        #[arg(long, requires = "via_api")]
        user: Option<String>,
        /// With `--via-api`: a file whose first line is the admin's password.
        #[arg(long, requires = "via_api")]
        password_file: Option<PathBuf>,
    },
    /// Power on every unit of a provisioned fleet through one gateway per site and
    /// report the registration rate and latency percentiles.
    Register {
        #[command(flatten)]
        fleet: load::FleetArgs,
        /// Registrations in flight per gateway.
        #[arg(long, default_value_t = 32)]
        window: usize,
        #[command(flatten)]
        out: report::Output,
    },
    /// Register a provisioned fleet, then offer call load: group, private and emergency
    /// calls with Poisson arrivals and exponential holding times, PTT within calls, some
    /// units moving between sites; reports grants, queueing, denials by cause,
    /// preemptions, grant latency and P(wait) against Erlang C.
    Calls {
        #[command(flatten)]
        args: calls::CallArgs,
    },
    /// Steady calls at every site while each gateway drops its link at random moments,
    /// reconnects, registers its units again and carries on: from each drop, the time
    /// to the link up again, to every unit registered again and to the site's first
    /// grant, and the requests each drop took with it.
    Chaos {
        #[command(flatten)]
        fleet: load::FleetArgs,
        /// Call requests per second at each site (each call ended once granted).
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Mean seconds between two drops of a site's link (Poisson).
        #[arg(long, default_value_t = 10.0)]
        drop_every: f64,
        /// Seconds of load and drops.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Seed of the random streams.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        out: report::Output,
    },
    /// The sites saturated with calls and emergencies among them (`--emergency-share`),
    /// once under each emergency policy (`trunking.emergency`, set through the operator
    /// API as an admin and put back after): how long emergencies wait for their grants
    /// and how many calls they preempt, by policy. `--user` must be an admin.
    Emergency {
        #[command(flatten)]
        args: calls::CallArgs,
        #[command(flatten)]
        login: api::Login,
    },
    /// The call load for a duration, then an account kept against the operator API:
    /// every call trunksim saw granted and ended has its call record (and no record is
    /// of a call it never saw), and no call, queued request or busy slot is left. Exits
    /// non-zero when the account does not balance. Any operator will do (it only reads).
    Soak {
        #[command(flatten)]
        args: calls::CallArgs,
        #[command(flatten)]
        login: api::Login,
    },
    /// Register a provisioned fleet through gateways that hold every node's address,
    /// offer a steady call load, then run a fault (`--fault`, e.g. `kill -9` of the
    /// active node) and report, from that instant, when a node is active again, when
    /// each site is linked to it and served its first grant, and what was refused or
    /// went unanswered on the way.
    Takeover {
        /// Directory written by `trunksim provision`.
        #[arg(long, default_value = "sim")]
        dir: PathBuf,
        /// The controllers' link addresses (`host:port`), comma-separated or repeated.
        #[arg(long, value_delimiter = ',', required = true)]
        server: Vec<String>,
        /// The nodes' API addresses (`host:port`), comma-separated or repeated: their
        /// `/healthz` tells when a node is active again.
        #[arg(long, value_delimiter = ',', required = true)]
        api: Vec<String>,
        /// The fault, run by `sh -c` (e.g. `kill -9 1234`).
        #[arg(long)]
        fault: String,
        /// Use only the first N units.
        #[arg(long)]
        limit: Option<usize>,
        /// Call requests per second at each site.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Holding time of a call, ms.
        #[arg(long, default_value_t = 2000)]
        hold_ms: u64,
        /// Seconds of load before the fault.
        #[arg(long, default_value_t = 5.0)]
        before: f64,
        /// Seconds of load after the fault.
        #[arg(long, default_value_t = 10.0)]
        after: f64,
        /// A request unanswered this long (ms) counts as timed out.
        #[arg(long, default_value_t = 2000)]
        request_timeout_ms: u64,
        /// Seed of the random streams.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A fixed workload, one procedure at a time, for counting the server's cost of
    /// each: every unit registers (by IMEI), then `--calls` group calls (request and
    /// grant, PTT release and its ACK, CALL_END both ways). `tools/cost.sh` runs it
    /// against trunkd under callgrind.
    Cost {
        #[command(flatten)]
        fleet: load::FleetArgs,
        /// Group calls to make.
        #[arg(long, default_value_t = 1000)]
        calls: usize,
        /// The server's pid under `valgrind --tool=callgrind`: its counters are zeroed
        /// before each phase and dumped after it, named after it.
        #[arg(long)]
        callgrind: Option<u32>,
    },
    /// A TCP relay (to put between a trunkd node and its database) that SIGUSR1 cuts:
    /// from then on it forwards nothing, and holds every connection open, silent.
    DbProxy {
        /// Where the node connects.
        #[arg(long)]
        listen: String,
        /// The database server.
        #[arg(long, default_value = "127.0.0.1:5432")]
        to: String,
    },
    /// Load on the operator API (logins, authenticated reads, the event stream), and a
    /// no-logic echo server to measure the same client against.
    Api {
        #[command(subcommand)]
        mode: api::Mode,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    report::set_quiet(cli.quiet);
    match cli.command {
        Command::Gateway {
            server,
            site,
            key,
            frames,
            duration,
        } => {
            let site = SiteId::new(site).context("site id must be within 1..=4095")?;
            let key = SiteKey::from_hex(&key)?;
            let frames = frames
                .iter()
                .map(|h| hex::decode(h.split_whitespace().collect::<String>()).context("--send takes hex"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            gateway(server, site, &key, frames, duration.map(Duration::from_secs_f64)).await
        }
        Command::Provision {
            config,
            units,
            sites,
            fleets,
            talkgroups,
            out,
            via_api,
            user,
            password_file,
        } => {
            let shape = load::Shape {
                units,
                sites,
                fleets,
                talkgroups,
            };
            if let Some(api) = via_api {
                let (Some(user), Some(password_file)) = (user, password_file) else {
                    bail!("--via-api needs --user and --password-file (an admin)");
                };
                let login = api::Login { user, password_file };
                load::provision_via_api(&login, &api, &shape, &out).await?;
                println!(
                    "provisioned {sites} sites and {units} units through the operator API at {api}; \
                     the units' keys are in {}",
                    out.join("units.csv").display()
                );
                return Ok(());
            }
            let cfg = trunkd::config::Config::load(config.as_deref())?;
            let store = trunkd::store::Store::open(&cfg.database.url, &cfg.database.data_dir).await?;
            let r = load::provision(&store, &shape, &out).await;
            store.close().await;
            r?;
            println!(
                "provisioned {sites} sites; {units} units written to {}",
                out.join("units.csv").display()
            );
            println!(
                "next: trunkd subscriber import {}",
                out.join("units.csv").display()
            );
            Ok(())
        }
        Command::Register { fleet, window, out } => load::register(&fleet, window.max(1), &out).await,
        Command::Calls { args } => calls::run_args(&args).await.map(drop),
        Command::Chaos {
            fleet,
            rate,
            drop_every,
            duration,
            seed,
            out,
        } => {
            let c = chaos::Chaos {
                rate,
                drop_every: Duration::from_secs_f64(drop_every.max(0.01)),
                duration: Duration::from_secs_f64(duration.max(0.1)),
                seed,
            };
            chaos::run(&fleet, c, &out).await.map(drop)
        }
        Command::Soak { args, login } => soak::run(args, &login).await.map(drop),
        Command::Emergency { args, login } => emergency::run(args, &login).await.map(drop),
        Command::Takeover {
            dir,
            server,
            api,
            fault,
            limit,
            rate,
            hold_ms,
            before,
            after,
            request_timeout_ms,
            seed,
        } => {
            let t = takeover::Takeover {
                calls_per_site: rate.max(0.01),
                hold: Duration::from_millis(hold_ms),
                before: Duration::from_secs_f64(before.max(0.0)),
                after: Duration::from_secs_f64(after.max(0.1)),
                fault,
                apis: api,
                request_timeout: Duration::from_millis(request_timeout_ms.max(1)),
                seed,
            };
            takeover::run(&dir, &server, limit, t).await
        }
        Command::Cost {
            fleet,
            calls,
            callgrind,
        } => cost::run(&fleet.dir, &fleet.controllers()?, fleet.limit, calls, callgrind).await,
        Command::DbProxy { listen, to } => proxy::run(&listen, &to).await,
        Command::Api { mode } => api::run(mode).await,
    }
}

async fn gateway(
    servers: Vec<String>,
    site: SiteId,
    key: &SiteKey,
    frames: Vec<Vec<u8>>,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let mut list = ControllerList::new(servers).context("no controller address")?;
    let mut link = tokio::time::timeout(Duration::from_secs(10), list.link(site, key))
        .await
        .context("no controller accepted the link within 10 s")?;
    println!(
        "link up: site {site}, keepalive every {:?}, {} misses allowed",
        link.keepalive_interval(),
        link.misses()
    );
    for f in &frames {
        link.send_raw(f).await?;
        println!("sent {}", hex::encode(f));
    }
    let mut tick = tokio::time::interval(link.keepalive_interval());
    tick.tick().await;
    let stop = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => {
                link.send(Frame::new(0, Message::LinkClose { cause: Cause::Normal })).await?;
                println!("closed");
                return Ok(());
            }
            _ = tick.tick() => link.keepalive().await?,
            item = link.recv() => match item {
                None => bail!("controller closed the connection"),
                Some(Err(e)) => bail!("link failed: {e}"),
                Some(Ok(Err(e))) => println!("malformed frame from controller: {e}"),
                Some(Ok(Ok(frame))) => {
                    println!("recv {frame:?}");
                    match frame.msg {
                        Message::Keepalive => link.send(Frame::new(frame.txn, Message::KeepaliveAck)).await?,
                        Message::LinkClose { cause } => bail!("controller closed the link: {cause}"),
                        _ => {}
                    }
                }
            }
        }
    }
}
