//! The running controller: opens the HLR, loads its cache, starts the link server with
//! the registration state machine behind it, and runs the background work (HLR change
//! following, periodic-registration expiry, challenge sweeping, write-behind of last
//! locations and audit entries). Used by `trunkd serve` and by the integration tests,
//! which reach it through its [`ControllerHandle`].

mod handle;

pub use handle::{
    ActiveCall, Alarm, Answer, Command, CommandError, ControllerHandle, LinkState, Outcome, Query,
    QueryError, Snapshot, UnitFilter, UnitOnAir,
};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::calls::{write_records, CallService, CALL_ID_BLOCK};
use crate::clock::Clock;
use crate::config::Config;
use crate::core::entropy::OsEntropy;
use crate::core::registration::{Event, Registrar};
use crate::events::{EventBus, EventKind};
use crate::hlr::{HlrCache, HlrChange};
use crate::link::{deny_unsupported, Handler, LinkServer, Links};
use crate::messaging::Messaging;
use crate::params;
use crate::protocol::{Cause, Family, Frame, Imsi, Message, SiteId, Tmsi};
use crate::remote::RemoteControl;
use crate::store::health::DbHealth;
use crate::store::{Store, StoreError};
use crate::vlr::VlrView;

/// How often an audit entry is tried before it is given up (and logged as an error).
const AUDIT_ATTEMPTS: u32 = 60;

/// Starting the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HLR could not be opened or loaded.
    #[error("HLR: {0}")]
    Store(#[from] StoreError),
    /// The link listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The link handler of a running controller.
struct Services {
    node: Arc<Node>,
}

impl Handler for Services {
    /// Routes a request to the service of its family (the message table's last column).
    fn handle(&self, site: SiteId, frame: Frame) -> Vec<Frame> {
        let n = &self.node;
        let replies = match frame.msg.family() {
            Family::Registration => n
                .registrar
                .handle(site, &frame, &*n.hlr, n.clock.mono_ms())
                .map(|out| {
                    for r in &out.replies {
                        if let Message::RegReject { cause } = r.msg {
                            debug!(%cause, txn = r.txn, "registration refused");
                        }
                    }
                    n.carry_out(out.events);
                    out.replies
                }),
            Family::Call => n.calls.handle(site, &frame),
            Family::Messaging => n.messaging.handle(site, &frame),
            Family::RadioCommand => n.remote.handle(site, &frame, n.clock.mono_ms()),
            // The link layer answers its own messages before they get here.
            Family::Link | Family::Answer => None,
        };
        replies.unwrap_or_else(|| {
            if frame.msg.message_type().gateway_transaction() {
                vec![deny_unsupported(&frame)]
            } else {
                // An answer (on a transaction of the controller's) to a frame this
                // controller does not send, or no longer waits for: never answered.
                debug!(msg = %frame.msg.message_type(), txn = frame.txn, "unmatched answer ignored");
                vec![]
            }
        })
    }

    fn link_up(&self, site: SiteId) {
        self.node.events.publish(EventKind::LinkUp { site });
    }

    fn link_down(&self, site: SiteId) {
        let n = &self.node;
        // Nobody can answer that site's challenges any more.
        n.registrar.drop_challenges(site, n.clock.mono_ms());
        n.calls.link_down(site);
        n.events.publish(EventKind::LinkDown { site });
    }
}

/// Work done behind the answers: last locations (coalesced per unit) and audit entries.
struct WriteBehind {
    locations: DashMap<Imsi, (SiteId, Tmsi, i64)>,
    audit: mpsc::Sender<(String, String, String)>,
    health: Arc<DbHealth>,
    clock: Clock,
}

impl WriteBehind {
    fn event(&self, e: Event) {
        match e {
            Event::Located { imsi, site, tmsi } => self.located(imsi, site, tmsi, self.clock.unix_ms()),
            Event::UnitGone { .. } | Event::TmsiChanged { .. } | Event::Attached { .. } | Event::Unit(_) => {}
            Event::Audit {
                action,
                object,
                detail,
            } => {
                warn!(action, %object, %detail, "security event");
                if self.audit.try_send((action.to_string(), object, detail)).is_err() {
                    warn!("audit queue full: entry kept in the log only");
                }
            }
        }
    }

    /// Keeps the newest sighting of a unit until the next flush.
    fn located(&self, imsi: Imsi, site: SiteId, tmsi: Tmsi, at_ms: i64) {
        self.locations
            .entry(imsi)
            .and_modify(|v| {
                if at_ms >= v.2 {
                    *v = (site, tmsi, at_ms)
                }
            })
            .or_insert((site, tmsi, at_ms));
    }

    /// Writes every pending location; on failure they are kept for the next flush.
    async fn flush_locations(&self, store: &Store) {
        let keys: Vec<Imsi> = self.locations.iter().map(|e| *e.key()).collect();
        let batch: Vec<(Imsi, SiteId, Tmsi, i64)> = keys
            .iter()
            .filter_map(|k| {
                self.locations
                    .remove(k)
                    .map(|(imsi, (site, tmsi, at))| (imsi, site, tmsi, at))
            })
            .collect();
        if batch.is_empty() {
            return;
        }
        let written = store.write_locations(&batch).await;
        if self.health.report("writing last locations", written).is_none() {
            for (imsi, site, tmsi, at) in batch {
                self.located(imsi, site, tmsi, at);
            }
        }
    }
}

/// The parts of a running controller, shared by its link handler, its background work
/// and its handle.
struct Node {
    /// The configuration with the system parameters in force.
    cfg: std::sync::RwLock<Config>,
    store: Store,
    hlr: Arc<HlrCache>,
    registrar: Arc<Registrar>,
    vlr: VlrView,
    links: Links,
    calls: Arc<CallService>,
    messaging: Arc<Messaging>,
    remote: Arc<RemoteControl>,
    writer: Arc<WriteBehind>,
    events: Arc<EventBus>,
    health: Arc<DbHealth>,
    clock: Clock,
    /// Held while HLR changes are applied, so that the handle and the periodic follow
    /// never apply the same change twice.
    following: tokio::sync::Mutex<()>,
}

impl Node {
    /// The configuration in force (system parameters included).
    fn config(&self) -> Config {
        self.cfg.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts new system parameters in force.
    fn apply_config(&self, new: Config) {
        self.calls.set_config(new.trunking.core());
        self.registrar.set_policy(new.registration.policy());
        *self.cfg.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    /// Applies what changed in the HLR since the last look (by this controller's handle
    /// or by any other process on the database) to the running controller.
    async fn follow_hlr(&self) {
        let _one_at_a_time = self.following.lock().await;
        match self
            .health
            .report("following HLR changes", self.hlr.refresh(&self.store).await)
        {
            None | Some(0) => {}
            Some(n) => {
                info!(changes = n, "HLR changes applied to the cache");
                self.calls.sync_sites();
            }
        }
        for change in self.hlr.take_changes() {
            match change {
                // Inhibits and enables go over the air (PROTOCOL.md §5.4).
                HlrChange::Inhibited(imsi, inhibited) => {
                    self.remote.changed(imsi, inhibited, self.clock.mono_ms()).await
                }
                // A removed subscriber leaves the air at once, and its calls end.
                HlrChange::Removed(imsi) => {
                    self.carry_out(self.registrar.subscriber_removed(imsi, self.clock.mono_ms()))
                }
                // Another controller on the database changed system parameters.
                HlrChange::Parameters => self.load_parameters().await,
            }
        }
    }

    /// Carries out what the registrar reports: calls follow a unit's TMSI, messages
    /// stored for a unit go out when it attaches, operators hear of it, the rest is
    /// written behind.
    fn carry_out(&self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::UnitGone { tmsi } => self.calls.unit_gone(tmsi),
                Event::TmsiChanged { old, new } => self.calls.tmsi_changed(old, new),
                Event::Attached { imsi, tmsi, site } => self.messaging.attached(imsi, tmsi, site),
                Event::Unit(u) => {
                    self.events.publish(EventKind::Unit(u));
                }
                Event::Audit {
                    action: "clone.suspected",
                    ref object,
                    ref detail,
                } => {
                    if let Some(imsi) = object
                        .strip_prefix("subscriber:")
                        .and_then(|i| Imsi::parse(i).ok())
                    {
                        let event = EventKind::CloneSuspected {
                            imsi,
                            detail: detail.clone(),
                        };
                        self.events.publish(event);
                    }
                    self.writer.event(e);
                }
                e => self.writer.event(e),
            }
        }
    }

    /// Periodic-registration expiry and challenge sweeping, decided by the registrar.
    fn tick_registrations(&self, now: i64) {
        let events = self.registrar.tick(now);
        let expired = events
            .iter()
            .filter(|e| matches!(e, Event::UnitGone { .. }))
            .count();
        if expired > 0 {
            info!(
                units = expired,
                "periodic registration expired; units left the VLR"
            );
        }
        self.carry_out(events);
    }

    /// Puts the system parameters the database holds in force.
    async fn load_parameters(&self) {
        let Some(stored) = self
            .health
            .report("reading system parameters", self.store.parameters().await)
        else {
            return;
        };
        let current = self.config();
        let (cfg, skipped) = params::apply_stored(&current, &stored);
        for e in skipped {
            warn!(error = %e, "system parameter in the database ignored");
        }
        for (name, value) in params::all(&cfg) {
            if params::get(&current, name).as_ref() != Some(&value) {
                info!(%name, %value, "system parameter changed in the database");
                let event = EventKind::ParameterChanged {
                    name: name.to_string(),
                    value,
                    actor: "database".into(),
                };
                self.events.publish(event);
            }
        }
        self.apply_config(cfg);
    }
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
    let store = Store::open(&cfg.database.url, &cfg.database.data_dir)
        .await?
        .with_clock(clock);
    // Calls that were in progress when a controller on this database crashed.
    let recovered = store
        .recover_open_calls(i64::from(Cause::ControllerRestart.code()))
        .await?;
    if recovered > 0 {
        warn!(
            calls = recovered,
            "calls in progress at the last unclean stop recorded as ended by a controller restart"
        );
    }
    let cfg = parameters_in_force(&store, cfg).await?;
    let hlr = Arc::new(HlrCache::load(&store).await?);
    info!(
        backend = store.backend(),
        subscribers = hlr.subscriber_count(),
        "HLR loaded"
    );
    let links = Links::default();
    let events = Arc::new(EventBus::new(cfg.events.backlog, clock));
    let (audit_tx, audit_rx) = mpsc::channel(10_000);
    let health = Arc::new(DbHealth::default());
    let writer = Arc::new(WriteBehind {
        locations: DashMap::new(),
        audit: audit_tx,
        health: health.clone(),
        clock,
    });
    let registrar = Arc::new(Registrar::new(cfg.registration.policy(), Box::new(OsEntropy)));
    let vlr = registrar.vlr();
    let (records_tx, records_rx) = mpsc::unbounded_channel();
    let calls = Arc::new(CallService::new(
        &cfg.trunking,
        hlr.clone(),
        vlr.clone(),
        links.clone(),
        records_tx,
        events.clone(),
        clock,
    ));
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
        .reporting_to(health.clone()),
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
        clock,
        following: tokio::sync::Mutex::new(()),
    });
    let services = Arc::new(Services { node: node.clone() });
    let server = LinkServer::bind(link_cfg.clone(), hlr, services, links)
        .await
        .map_err(|source| StartError::Bind {
            addr: link_cfg.listen,
            source,
        })?;
    let link_addr = server.local_addr().map_err(|source| StartError::Bind {
        addr: link_cfg.listen,
        source,
    })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (records_stop_tx, records_stop_rx) = watch::channel(false);
    let records_task = tokio::spawn(write_records(
        store,
        health,
        calls.clone(),
        records_rx,
        flush,
        records_stop_rx,
    ));

    let background = Background { node: node.clone() };
    let task = tokio::spawn(async move {
        let mut stop_server = stop_rx.clone();
        let mut tasks = background.spawn(stop_rx.clone(), audit_rx);
        tasks.push(tokio::spawn(calls.clone().run_timers(stop_rx.clone())));
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
        // call and request has its record, then write the last records.
        calls.end_all();
        let _ = records_stop_tx.send(true);
        let _ = records_task.await;
        let n = &background.node;
        n.writer.flush_locations(&n.store).await;
        n.store.close().await;
        info!("controller stopped");
    });
    Ok(Running {
        link_addr,
        links: node.links.clone(),
        vlr: node.vlr.clone(),
        hlr: node.hlr.clone(),
        store: node.store.clone(),
        handle: ControllerHandle::new(node),
        stop: Some(stop_tx),
        task,
    })
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

struct Background {
    node: Arc<Node>,
}

impl Background {
    /// Starts the periodic tasks; each ends when `stop` turns true.
    fn spawn(
        &self,
        stop: watch::Receiver<bool>,
        mut audit_rx: mpsc::Receiver<(String, String, String)>,
    ) -> Vec<JoinHandle<()>> {
        let n = &self.node;
        let r = n.config().registration;
        let mut tasks = Vec::new();

        let node = self.node.clone();
        tasks.push(every(r.hlr_refresh_ms, stop.clone(), move || {
            let node = node.clone();
            async move { node.follow_hlr().await }
        }));

        let (remote, clock) = (n.remote.clone(), n.clock);
        let sweep = n.config().messaging.radio_command_timeout_ms.clamp(10, 1000);
        tasks.push(every(sweep, stop.clone(), move || {
            remote.sweep(clock.mono_ms());
            async {}
        }));

        // Expired challenges are kept a while longer (at least 5 s) so that a late answer
        // is told "challenge expired" rather than "no challenge pending". The period is
        // a system parameter: read on every sweep.
        let node = self.node.clone();
        let sweep_ms = n.registrar.tick_every_ms();
        tasks.push(every(sweep_ms, stop.clone(), move || {
            node.tick_registrations(node.clock.mono_ms());
            async {}
        }));

        tasks.push(tokio::spawn(n.messaging.clone().run_timers(stop.clone())));

        let (store, writer) = (n.store.clone(), n.writer.clone());
        tasks.push(every(r.location_flush_ms, stop.clone(), move || {
            let (store, writer) = (store.clone(), writer.clone());
            async move { writer.flush_locations(&store).await }
        }));

        let store = n.store.clone();
        let health = n.health.clone();
        let mut stop_audit = stop;
        tasks.push(tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = audit_rx.recv() => item,
                    _ = stopped(&mut stop_audit) => {
                        audit_rx.close();
                        audit_rx.recv().await
                    }
                };
                let Some((action, object, detail)) = item else {
                    break;
                };
                // The database may be busy (a bulk import holds SQLite's write lock):
                // retry rather than lose the entry.
                for attempt in 1..=AUDIT_ATTEMPTS {
                    match store.audit("controller", &action, &object, &detail).await {
                        Ok(()) => {
                            health.succeeded();
                            break;
                        }
                        Err(e) if attempt == AUDIT_ATTEMPTS => {
                            error!(error = %e, %action, %object, %detail, "audit entry could not be written");
                        }
                        Err(e) => {
                            health.failed("writing an audit entry", &e);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }));
        tasks
    }
}

/// Runs `f` every `ms` until `stop` turns true.
fn every<F, Fut>(ms: u64, mut stop: watch::Receiver<bool>, f: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => f().await,
                _ = stopped(&mut stop) => break,
            }
        }
    })
}

/// Completes once the stop flag is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
