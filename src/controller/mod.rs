//! The running controller: opens the HLR, loads its cache, starts the link server with
//! the services behind it, and runs the background work. Used by `trunkd serve` and by
//! the integration tests, which reach it through its [`ControllerHandle`].
//!
//! - this file: the wiring ([`start`], [`Running`]);
//! - `routing`: the link handler, sending each request to the service of its family;
//! - `node`: the parts shared by routing, background work and the handle;
//! - `background`: the timers (HLR following, expiry, retries);
//! - `write_behind`: everything written behind the answers (last locations, audit
//!   entries, call records, short data), drained and stopped in one place;
//! - `handle`: the [`ControllerHandle`] (commands, queries, events);
//! - `alarms`: the alarm keeper (raised, acknowledged, cleared; kept in the database).

mod alarms;
mod background;
mod commands;
mod handle;
mod node;
mod records;
mod routing;
mod write_behind;

pub use alarms::{
    Alarm, AlarmChange, AlarmError, AlarmKind, AlarmQuery, AlarmState, Subject, RECONCILE_EVERY,
};
pub use commands::{CommandKind, CommandState, TrackedCommand};
pub use handle::{
    ActiveCall, Answer, Command, CommandError, ControllerHandle, LinkState, Outcome, Query, QueryError,
    QueuedCall, Snapshot, UnitFilter, UnitOnAir,
};
pub use records::{Reads, Records};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Authority;
use crate::clock::Clock;
use crate::config::Config;
use crate::core::entropy::CsprngEntropy;
use crate::core::registration::Registrar;
use crate::events::EventBus;
use crate::hlr::HlrCache;
use crate::link::{LinkServer, Links};
use crate::metrics::Metrics;
use crate::params;
use crate::protocol::Cause;
use crate::shell::calls::{CallService, CALL_ID_BLOCK};
use crate::shell::messaging::Messaging;
use crate::shell::remote::RemoteControl;
use crate::store::health::DbHealth;
use crate::store::{Store, StoreError};
use crate::vlr::VlrView;

use alarms::AlarmKeeper;
use background::Background;
use commands::CommandLog;
use node::Node;
use routing::Services;
use write_behind::WriteBehind;

/// Starting the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HLR could not be opened or loaded.
    #[error("HLR: {0}")]
    Store(#[from] StoreError),
    /// The API's operators or signing keys could not be loaded.
    #[error("operator API: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The link listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running controller.
pub struct Running {
    /// Where gateways connect.
    pub link_addr: SocketAddr,
    /// Connected sites.
    pub links: Links,
    /// Units on the air (read-only: the registrar owns them).
    pub vlr: VlrView,
    /// The HLR cache.
    pub hlr: Arc<HlrCache>,
    /// The HLR.
    pub store: Store,
    /// The link port's TLS, when it speaks it (`link.tls_cert`): reloaded on `SIGHUP`.
    pub link_tls: Option<Arc<crate::link::tls::ServerTls>>,
    handle: ControllerHandle,
    stop: Option<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

/// Opens the HLR, loads the cache and starts serving, on a clock started now.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    start_with_clock(cfg, Clock::start()).await
}

/// [`start`] on `clock`: every time the controller reads or writes comes from it.
pub async fn start_with_clock(cfg: Config, clock: Clock) -> Result<Running, StartError> {
    let store = Store::open(&cfg.database.url, &cfg.database.data_dir).await?;
    start_on(
        cfg,
        store.with_clock(clock),
        clock,
        None,
        Cause::ControllerRestart,
        None,
    )
    .await
}

/// [`start`] as the active node of an HA group for `active`'s epoch (see [`crate::ha`]):
/// its writes carry the epoch, and it serves no frame once `fence` no longer holds.
/// `warm`: the HLR cache the node kept while standing by, brought up to date here
/// instead of loaded afresh.
pub async fn start_active(
    cfg: Config,
    active: crate::store::ActiveEpoch,
    fence: Arc<crate::ha::Fence>,
    warm: Option<Arc<HlrCache>>,
) -> Result<Running, StartError> {
    let clock = Clock::start();
    let store = Store::open_active(&cfg.database.url, &cfg.database.data_dir, &active).await?;
    // The first epoch follows no other node: what it finds in progress is a restart's.
    let ended = if active.epoch > 1 {
        Cause::Takeover
    } else {
        Cause::ControllerRestart
    };
    let running = start_on(cfg, store.with_clock(clock), clock, Some(fence), ended, warm).await?;
    running
        .handle
        .node
        .alarms
        .took_over(&active.node_id, active.epoch);
    Ok(running)
}

async fn start_on(
    cfg: Config,
    store: Store,
    clock: Clock,
    fence: Option<Arc<crate::ha::Fence>>,
    ended: Cause,
    warm: Option<Arc<HlrCache>>,
) -> Result<Running, StartError> {
    // Calls that were in progress when a controller on this database crashed (or lost
    // its lease): `ended` is their cause.
    let recovered = store.recover_open_calls(i64::from(ended.code())).await?;
    if recovered > 0 {
        warn!(
            calls = recovered,
            cause = %ended,
            "calls in progress at the last unclean stop recorded as ended"
        );
    }
    let cfg = parameters_in_force(&store, cfg).await?;
    let hlr = match warm {
        Some(hlr) => {
            // What changed since the standby last looked; the changes themselves were
            // the active node's to carry out.
            hlr.refresh(&store).await?;
            drop(hlr.take_changes());
            hlr
        }
        None => Arc::new(HlrCache::load(&store).await?),
    };
    let auth = Arc::new(Authority::start(&cfg.api, store.clone(), clock).await?);
    info!(
        backend = store.backend(),
        subscribers = hlr.subscriber_count(),
        "HLR loaded"
    );
    let links = Links::default();
    let events = Arc::new(EventBus::new(cfg.events.backlog, clock));
    let (stop_tx, stop_rx) = watch::channel(false);
    let keeper = Arc::new(
        AlarmKeeper::load(
            &store,
            events.clone(),
            hlr.clone(),
            clock,
            cfg.alarms.link_grace_ms,
            stop_rx.clone(),
        )
        .await?,
    );
    let commands = Arc::new(CommandLog::new(events.clone(), clock));
    let health = Arc::new(DbHealth::default());
    let behind = TaskTracker::new();
    let registrar = Arc::new(Registrar::new(cfg.registration.policy(), Box::new(CsprngEntropy)));
    let vlr = registrar.vlr();
    restore_units(&store, &registrar, &hlr, clock).await?;
    let (writer, writer_inputs) =
        WriteBehind::new(store.clone(), vlr.clone(), health.clone(), clock, behind.clone());
    let writer = Arc::new(writer);
    let (records_tx, records_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let calls = Arc::new(
        CallService::new(
            &cfg.trunking,
            hlr.clone(),
            vlr.clone(),
            links.clone(),
            records_tx,
            events.clone(),
            clock,
        )
        .counting_in(metrics.clone()),
    );
    let messaging = Arc::new(
        Messaging::new(
            hlr.clone(),
            vlr.clone(),
            links.clone(),
            store.clone(),
            &cfg.messaging,
            clock,
            events.clone(),
        )
        .reporting_to(health.clone())
        .writing_behind_on(behind),
    );
    calls.add_call_ids(store.reserve_call_ids(CALL_ID_BLOCK).await?);
    for imsi in store.short_data_recipients().await? {
        messaging.mail_stored(imsi);
    }
    let remote = Arc::new(RemoteControl::new(
        registrar.clone(),
        links.clone(),
        store.clone(),
        calls.clone(),
        writer.audit.clone(),
        events.clone(),
        &cfg.messaging,
    ));
    let (link_cfg, grace) = (cfg.link.clone(), Duration::from_millis(cfg.shutdown.grace_ms));
    let flush = Duration::from_millis(cfg.registration.location_flush_ms);
    let node = Arc::new(Node {
        cfg: std::sync::RwLock::new(cfg),
        store: store.clone(),
        hlr: hlr.clone(),
        registrar,
        vlr,
        links: links.clone(),
        calls: calls.clone(),
        messaging,
        remote,
        writer,
        events,
        health: health.clone(),
        auth,
        commands: commands.clone(),
        metrics: metrics.clone(),
        alarms: keeper.clone(),
        clock,
        fence,
        following: tokio::sync::Mutex::new(()),
    });
    let services = Arc::new(Services { node: node.clone() });
    let server = LinkServer::bind(link_cfg.clone(), hlr, services, links)
        .await
        .map_err(|source| StartError::Bind {
            addr: link_cfg.listen,
            source,
        })?
        .recording_to(metrics);
    let link_tls = server.tls();
    let link_addr = server.local_addr().map_err(|source| StartError::Bind {
        addr: link_cfg.listen,
        source,
    })?;
    node.writer.start(writer_inputs, calls.clone(), records_rx, flush);

    node.commands.follow();
    let background = Background { node: node.clone() };
    let task = tokio::spawn(async move {
        let mut stop_server = stop_rx.clone();
        let mut tasks = background.spawn(stop_rx.clone());
        tasks.push(tokio::spawn(calls.clone().run_timers(stop_rx.clone())));
        tasks.push(tokio::spawn(alarms::keep(
            background.node.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(keeper.write_behind(
            background.node.store.clone(),
            background.node.health.clone(),
        )));
        tasks.push(tokio::spawn(
            calls
                .clone()
                .refill_call_ids(background.node.store.clone(), stop_rx),
        ));
        let ending = calls.clone();
        server
            .run(
                async move {
                    stopped(&mut stop_server).await;
                    // Every gateway hears the end of its calls and requests before
                    // LINK_CLOSE "shutting down" (PROTOCOL.md §2.4).
                    ending.end_all();
                },
                grace,
            )
            .await;
        for t in tasks {
            let _ = t.await;
        }
        // Every link is closed (or its session aborted): end what is left so that every
        // call and request has its record, then write everything still pending.
        calls.end_all();
        let n = &background.node;
        n.writer.stop_and_drain(grace).await;
        n.messaging.refuse_waiting();
        n.store.close().await;
        // Event streams end: an operator API drains its connections as it stops.
        n.events.close();
        info!("controller stopped");
    });
    Ok(Running {
        link_addr,
        links: node.links.clone(),
        vlr: node.vlr.clone(),
        hlr: node.hlr.clone(),
        store: node.store.clone(),
        link_tls,
        handle: ControllerHandle::new(node),
        stop: Some(stop_tx),
        task,
    })
}

/// Puts the units on the air that a controller on this database wrote behind back into
/// the VLR, under their TMSIs, and removes the rows of those it could not put back (gone
/// from the HLR, inhibited, or moved to another fleet): they register again.
async fn restore_units(
    store: &Store,
    registrar: &Registrar,
    hlr: &HlrCache,
    clock: Clock,
) -> Result<(), StoreError> {
    let units = store.units_on_air(clock.mono_ms()).await?;
    let (held, imsis): (usize, Vec<_>) = (units.len(), units.iter().map(|(i, _)| *i).collect());
    let restored = registrar.restore(units, hlr, clock.mono_ms());
    if restored < held {
        let vlr = registrar.vlr();
        let left_out: Vec<_> = imsis.into_iter().filter(|i| vlr.get(i).is_none()).collect();
        store.write_units(&[], &left_out).await?;
    }
    if held > 0 {
        info!(
            units = restored,
            left_out = held - restored,
            "units on the air restored"
        );
    }
    Ok(())
}

/// The configuration with the system parameters the database holds in force; those it
/// does not hold yet are written from `cfg` (a fresh database takes the config file's
/// values). A config file that disagrees with the database is reported: the database
/// wins.
async fn parameters_in_force(store: &Store, cfg: Config) -> Result<Config, StoreError> {
    store.seed_parameters(&params::all(&cfg)).await?;
    let (in_force, skipped) = params::apply_stored(&cfg, &store.parameters().await?);
    for e in skipped {
        warn!(error = %e, "system parameter in the database is not valid; the config file's value is used");
    }
    for (name, file) in params::all(&cfg) {
        let db = params::get(&in_force, name).unwrap_or_default();
        if db != file {
            warn!(
                parameter = name,
                database = %db,
                config_file = %file,
                "system parameter set in the database; the config file's value only applies to a fresh database"
            );
        }
    }
    Ok(in_force)
}

impl Running {
    /// The handle for commands, queries and events.
    pub fn handle(&self) -> ControllerHandle {
        self.handle.clone()
    }

    /// Stops gracefully: closes links, flushes what is written behind, closes the HLR.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        let _ = (&mut self.task).await;
    }

    /// Runs until `signal` completes, then stops gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.stop().await;
    }
}

/// Completes once the stop flag is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
