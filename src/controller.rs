//! The running controller: opens the HLR, loads its cache, starts the link server with
//! the registration state machine behind it, and runs the background work (HLR change
//! following, periodic-registration expiry, challenge sweeping, write-behind of last
//! locations and audit entries). Used by `trunkd serve` and by the integration tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::calls::{write_records, CallService, CALL_ID_BLOCK};
use crate::config::Config;
use crate::core::registration::{Event, OsEntropy, Registrar};
use crate::hlr::{HlrCache, SubscriberChange};
use crate::link::{deny_unsupported, Handler, LinkServer, Links};
use crate::messaging::Messaging;
use crate::protocol::{Cause, Frame, Imsi, Message, SiteId, Tmsi};
use crate::remote::RemoteControl;
use crate::store::health::DbHealth;
use crate::store::{now_ms, Store, StoreError};
use crate::vlr::Vlr;

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
    registrar: Registrar,
    calls: Arc<CallService>,
    messaging: Arc<Messaging>,
    remote: Arc<RemoteControl>,
    writer: Arc<WriteBehind>,
}

impl Handler for Services {
    fn handle(&self, site: SiteId, frame: Frame) -> Vec<Frame> {
        if let Some(out) = self.registrar.handle(site, &frame, mono_ms()) {
            for r in &out.replies {
                if let Message::RegReject { cause } = r.msg {
                    debug!(%cause, txn = r.txn, "registration refused");
                }
            }
            for e in out.events {
                match e {
                    Event::UnitGone { tmsi } => self.calls.unit_gone(tmsi),
                    Event::TmsiChanged { old, new } => self.calls.tmsi_changed(old, new),
                    Event::Attached { imsi, tmsi, site } => self.messaging.attached(imsi, tmsi, site),
                    e => self.writer.event(e),
                }
            }
            return out.replies;
        }
        if let Some(replies) = self.calls.handle(site, &frame) {
            return replies;
        }
        if let Some(replies) = self.messaging.handle(site, &frame) {
            return replies;
        }
        if let Some(replies) = self.remote.handle(site, &frame) {
            return replies;
        }
        if is_gateway_answer(&frame.msg) {
            // Answers from the gateway to frames this controller does not send yet.
            debug!(msg = %frame.msg.message_type(), txn = frame.txn, "unmatched answer ignored");
            return vec![];
        }
        vec![deny_unsupported(&frame)]
    }

    fn link_down(&self, site: SiteId) {
        // Nobody can answer that site's challenges any more.
        self.registrar.drop_challenges(site);
        self.calls.link_down(site);
    }
}

/// Messages a gateway sends in answer to the controller (never answered themselves).
fn is_gateway_answer(m: &Message) -> bool {
    matches!(
        m,
        Message::Ack { .. }
            | Message::ShortDataAck { .. }
            | Message::InhibitAck { .. }
            | Message::EnableAck { .. }
    )
}

/// Milliseconds on a monotonic clock (since the first call): what the in-memory
/// deadlines (challenges, clone window, periodic registration) run on, so a step of
/// the wall clock cannot expire the VLR.
pub fn mono_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as i64
}

/// Work done behind the answers: last locations (coalesced per unit) and audit entries.
struct WriteBehind {
    locations: DashMap<Imsi, (SiteId, Tmsi, i64)>,
    audit: mpsc::Sender<(String, String, String)>,
    health: Arc<DbHealth>,
}

impl WriteBehind {
    fn event(&self, e: Event) {
        match e {
            Event::Located { imsi, site, tmsi } => self.located(imsi, site, tmsi, now_ms()),
            Event::UnitGone { .. } | Event::TmsiChanged { .. } | Event::Attached { .. } => {}
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

/// A running controller.
pub struct Running {
    /// Where gateways connect.
    pub link_addr: SocketAddr,
    /// Connected sites.
    pub links: Links,
    /// Units on the air.
    pub vlr: Arc<Vlr>,
    /// The HLR cache.
    pub hlr: Arc<HlrCache>,
    /// The HLR.
    pub store: Store,
    stop: Option<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

/// Opens the HLR, loads the cache and starts serving.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let store = Store::open(&cfg.database.url, &cfg.database.data_dir).await?;
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
    let hlr = Arc::new(HlrCache::load(&store).await?);
    info!(
        backend = store.backend(),
        subscribers = hlr.subscriber_count(),
        "HLR loaded"
    );
    let vlr = Arc::new(Vlr::new());
    let links = Links::default();
    let (audit_tx, audit_rx) = mpsc::channel(10_000);
    let health = Arc::new(DbHealth::default());
    let writer = Arc::new(WriteBehind {
        locations: DashMap::new(),
        audit: audit_tx,
        health: health.clone(),
    });
    let registrar = Registrar::new(
        hlr.clone(),
        vlr.clone(),
        cfg.registration.policy(),
        Arc::new(OsEntropy),
    );
    let (records_tx, records_rx) = mpsc::unbounded_channel();
    let selected_area = cfg
        .trunking
        .selected_area
        .iter()
        .filter_map(|s| SiteId::new(*s))
        .collect();
    let calls = Arc::new(CallService::new(
        cfg.trunking.core(),
        selected_area,
        hlr.clone(),
        vlr.clone(),
        links.clone(),
        records_tx,
        cfg.trunking.max_unwritten_records,
    ));
    let messaging = Arc::new(
        Messaging::new(
            hlr.clone(),
            vlr.clone(),
            links.clone(),
            store.clone(),
            &cfg.messaging,
            mono_ms,
        )
        .reporting_to(health.clone()),
    );
    calls.add_call_ids(store.reserve_call_ids(CALL_ID_BLOCK).await?);
    for imsi in store.short_data_recipients().await? {
        messaging.mail_stored(imsi);
    }
    let remote = Arc::new(RemoteControl::new(
        vlr.clone(),
        links.clone(),
        store.clone(),
        calls.clone(),
        writer.audit.clone(),
        cfg.messaging.radio_command_timeout_ms,
        cfg.messaging.radio_command_attempts,
    ));
    let services = Arc::new(Services {
        registrar,
        calls: calls.clone(),
        messaging: messaging.clone(),
        remote: remote.clone(),
        writer: writer.clone(),
    });
    let server = LinkServer::bind(cfg.link.clone(), hlr.clone(), services, links.clone())
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.link.listen,
            source,
        })?;
    let link_addr = server.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.link.listen,
        source,
    })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (records_stop_tx, records_stop_rx) = watch::channel(false);
    let flush = Duration::from_millis(cfg.registration.location_flush_ms);
    let records_task = tokio::spawn(write_records(
        store.clone(),
        health.clone(),
        calls.clone(),
        records_rx,
        flush,
        records_stop_rx,
    ));

    let background = Background {
        cfg: cfg.clone(),
        store: store.clone(),
        hlr: hlr.clone(),
        vlr: vlr.clone(),
        writer,
        calls: calls.clone(),
        messaging,
        remote,
    };
    let grace = Duration::from_millis(cfg.shutdown.grace_ms);
    let task = tokio::spawn(async move {
        let mut stop_server = stop_rx.clone();
        let mut tasks = background.spawn(stop_rx.clone(), audit_rx);
        tasks.push(tokio::spawn(calls.clone().run_timers(stop_rx.clone())));
        tasks.push(tokio::spawn(
            calls.clone().refill_call_ids(background.store.clone(), stop_rx),
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
        background.writer.flush_locations(&background.store).await;
        background.store.close().await;
        info!("controller stopped");
    });
    Ok(Running {
        link_addr,
        links,
        vlr,
        hlr,
        store,
        stop: Some(stop_tx),
        task,
    })
}

impl Running {
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
    cfg: Config,
    store: Store,
    hlr: Arc<HlrCache>,
    vlr: Arc<Vlr>,
    writer: Arc<WriteBehind>,
    calls: Arc<CallService>,
    messaging: Arc<Messaging>,
    remote: Arc<RemoteControl>,
}

impl Background {
    /// Starts the periodic tasks; each ends when `stop` turns true.
    fn spawn(
        &self,
        stop: watch::Receiver<bool>,
        mut audit_rx: mpsc::Receiver<(String, String, String)>,
    ) -> Vec<JoinHandle<()>> {
        let r = &self.cfg.registration;
        let mut tasks = Vec::new();

        let (store, hlr, vlr, calls, remote) = (
            self.store.clone(),
            self.hlr.clone(),
            self.vlr.clone(),
            self.calls.clone(),
            self.remote.clone(),
        );
        let health = self.writer.health.clone();
        tasks.push(every(r.hlr_refresh_ms, stop.clone(), move || {
            let (store, hlr, vlr, calls, remote, health) = (
                store.clone(),
                hlr.clone(),
                vlr.clone(),
                calls.clone(),
                remote.clone(),
                health.clone(),
            );
            async move {
                match health.report("following HLR changes", hlr.refresh(&store).await) {
                    None | Some(0) => {}
                    Some(n) => {
                        info!(changes = n, "HLR changes applied to the cache");
                        calls.sync_sites();
                    }
                }
                for change in hlr.take_changes() {
                    match change {
                        // Inhibits and enables go over the air (PROTOCOL.md §5.4).
                        SubscriberChange::Inhibited(imsi, inhibited) => {
                            remote.changed(imsi, inhibited, mono_ms()).await
                        }
                        // A removed subscriber leaves the air at once, and its calls end.
                        SubscriberChange::Removed(imsi) => {
                            if let Some(u) = vlr.get(&imsi) {
                                if vlr.deregister(u.tmsi, u.site).is_some() {
                                    calls.unit_gone(u.tmsi);
                                }
                            }
                        }
                    }
                }
            }
        }));

        let remote = self.remote.clone();
        let sweep = self.cfg.messaging.radio_command_timeout_ms.clamp(10, 1000);
        tasks.push(every(sweep, stop.clone(), move || {
            remote.sweep(mono_ms());
            async {}
        }));

        // Expired challenges are kept a while longer (at least 5 s) so that a late answer
        // is told "challenge expired" rather than "no challenge pending".
        let (vlr, period, calls) = (
            self.vlr.clone(),
            r.periodic_registration_ms as i64,
            self.calls.clone(),
        );
        let keep_expired = (r.challenge_timeout_ms as i64).max(5000);
        let sweep_ms = (r.periodic_registration_ms / 10).clamp(10, 1000);
        tasks.push(every(sweep_ms, stop.clone(), move || {
            let (vlr, calls) = (vlr.clone(), calls.clone());
            async move {
                let now = mono_ms();
                let expired = vlr.expire(now - period);
                for (_, unit) in &expired {
                    calls.unit_gone(unit.tmsi);
                }
                if !expired.is_empty() {
                    info!(
                        units = expired.len(),
                        "periodic registration expired; units left the VLR"
                    );
                }
                vlr.sweep_challenges(now - keep_expired);
            }
        }));

        tasks.push(tokio::spawn(self.messaging.clone().run_timers(stop.clone())));

        let (store, writer) = (self.store.clone(), self.writer.clone());
        tasks.push(every(r.location_flush_ms, stop.clone(), move || {
            let (store, writer) = (store.clone(), writer.clone());
            async move { writer.flush_locations(&store).await }
        }));

        let store = self.store.clone();
        let health = self.writer.health.clone();
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
