//! Active-standby controllers over PostgreSQL (`[ha]`, README "HA pair").
//!
//! Every node runs [`serve`]: it stands by until it wins the leadership [`Lease`], runs
//! the controller as the active node for as long as it renews the lease, and ends (for
//! its supervisor to start it again as a standby) when it cannot. While standing by it answers gateways `LINK_REDIRECT` (the
//! active node's link address, when one is active) and `LINK_REJECT` "not active"
//! (`PROTOCOL.md §3.3`), and its operator API ([`crate::api::serve_standby`]) logs
//! operators in and serves what the database answers, and 503 `not_active`, naming the
//! active node's API, to everything that needs the running controller. The HLR cache its
//! API follows is handed to its controller at a takeover ([`WarmHlr`]).
//!
//! Fencing, in three layers:
//! - the database refuses every write of an epoch that is not the lease's (a deposed
//!   node's late writes);
//! - [`Fence`]: the active node stops serving frames once its last renewal is older than
//!   the lease period less a margin, before a standby may take over;
//! - the run loop then closes its links and ends the process with an error, dropping
//!   what it had yet to write: its supervisor starts it again, as a standby. (A node
//!   that stood by again in the same process would carry the old epoch's tasks along.)

mod lease;

pub use lease::{Holder, Lease};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::codec::Framed;
use tracing::{error, info, warn};

use crate::api::StandbyView;
use crate::config::Config;
use crate::hlr::HlrCache;
use crate::link::codec::FrameCodec;
use crate::link::stream::{open, starts_tls, LinkStream, Opened};
use crate::link::tls::ServerTls;
use crate::protocol::{Cause, ControllerAddress, Frame, Message, MAX_PAYLOAD};
use crate::store::Store;

/// Whether this node may still act as the active node: true until its last renewal is
/// older than the lease period less a fifth of it (a margin for the time a renewal
/// takes to reach the database).
#[derive(Debug)]
pub struct Fence {
    start: Instant,
    /// Ms since `start` after which the node must not act as active.
    until_ms: AtomicI64,
    epoch: i64,
    lease_ms: u64,
}

impl Fence {
    fn new(epoch: i64, lease_ms: u64, renewed_at: Instant) -> Arc<Fence> {
        let f = Fence {
            start: Instant::now(),
            until_ms: AtomicI64::new(0),
            epoch,
            lease_ms,
        };
        f.renewed(renewed_at);
        Arc::new(f)
    }

    /// A renewal sent at `sent` succeeded.
    fn renewed(&self, sent: Instant) {
        let margin = self.lease_ms / 5;
        let at = sent.saturating_duration_since(self.start).as_millis() as i64;
        self.until_ms
            .fetch_max(at + (self.lease_ms - margin) as i64, Ordering::AcqRel);
    }

    /// Whether the node may act as active now.
    pub fn holds(&self) -> bool {
        (self.start.elapsed().as_millis() as i64) < self.until_ms.load(Ordering::Acquire)
    }

    /// The epoch this node is active for.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Ms since the last renewal that succeeded.
    pub fn lease_age_ms(&self) -> i64 {
        let until = self.until_ms.load(Ordering::Acquire);
        let renewed = until - (self.lease_ms - self.lease_ms / 5) as i64;
        self.start.elapsed().as_millis() as i64 - renewed
    }
}

/// Runs this node of an HA group until `shutdown` (`Ok`) or until it loses the lease it
/// held (an error: fenced): standing by until it wins the lease, then active.
pub async fn serve(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let h = cfg.ha.clone();
    tokio::pin!(shutdown);
    let lease_period = Duration::from_millis(h.lease_ms);
    let warm = WarmHlr::default();
    loop {
        let mut lease = loop {
            // The schema first (a fresh database), as every controller does at start.
            let connected = async {
                let store = Store::open(&cfg.database.url, &cfg.database.data_dir).await?;
                store.close().await;
                Lease::connect(&cfg.database.url, &h.node_id, h.lease_ms).await
            };
            match connected.await {
                Ok(l) => break l,
                Err(e) => {
                    warn!(error = %e, "HA: the database does not answer; standing by");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(lease_period / 4) => {}
                    }
                }
            }
        };
        // Standing by.
        let (view_tx, view_rx) = watch::channel(StandbyView::default());
        let standby = Standby::start(&cfg, view_rx, &warm).await?;
        crate::service::ready();
        let link_addr = standby.local_addr;
        let advertised = if h.link_address.is_empty() {
            link_addr.to_string()
        } else {
            h.link_address.clone()
        };
        info!(node = %h.node_id, link = %link_addr, "HA: standing by");
        let epoch = loop {
            let attempt = lease.try_acquire(&advertised, &cfg.api.listen.to_string()).await;
            match attempt {
                Ok(Some(epoch)) => break Some(epoch),
                Ok(None) => {
                    if let Ok(holder) = lease.holder().await {
                        let live = holder.live();
                        let link = holder.link_address.as_deref().and_then(ControllerAddress::new);
                        view_tx.send_replace(StandbyView {
                            epoch: holder.epoch,
                            active_api: holder.api_address.filter(|a| live && !a.is_empty()),
                            active_link: link.filter(|_| live),
                        });
                    }
                }
                Err(e) => {
                    warn!(error = %e, "HA: the lease could not be read");
                    tokio::time::sleep(lease_period / 4).await;
                    break None;
                }
            }
            tokio::select! {
                _ = &mut shutdown => {
                    standby.stop().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(lease_period / 10) => {}
            }
        };
        standby.stop().await;
        let Some(epoch) = epoch else {
            continue; // a new lease connection
        };
        // Active; renewing from now on, while the controller starts too.
        let fence = Fence::new(epoch, h.lease_ms, Instant::now());
        info!(node = %h.node_id, epoch, "HA: this node is now active");
        let active_epoch = lease.active_epoch(epoch);
        let (lost_tx, mut lost) = watch::channel(false);
        let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
        let renewer = tokio::spawn(renew(lease, fence.clone(), lost_tx, quitting));
        let mut active_cfg = cfg.clone();
        active_cfg.link.listen = link_addr;
        let hlr = warm.take();
        let started = crate::controller::start_active(active_cfg, active_epoch, fence.clone(), hlr);
        let running = match started.await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "HA: the controller did not start; giving the lease up");
                let _ = quit.send(());
                if let Ok(lease) = renewer.await {
                    lease.release().await;
                }
                tokio::time::sleep(lease_period).await;
                continue;
            }
        };
        let api = match crate::api::bind(&cfg.api).await {
            Ok(l) => Some(l),
            Err(e) => {
                error!(error = %e, addr = %cfg.api.listen, "HA: the operator API could not be bound");
                None
            }
        };
        let (stop_api, api_stopping) = tokio::sync::oneshot::channel::<()>();
        let api = api.map(|l| {
            tokio::spawn(crate::api::serve(l, running.handle(), cfg.api.clone(), async {
                let _ = api_stopping.await;
            }))
        });
        let mut watch_fence = tokio::time::interval(Duration::from_millis(20));
        let stopping = loop {
            tokio::select! {
                _ = &mut shutdown => break true,
                _ = lost.wait_for(|l| *l) => break false,
                _ = watch_fence.tick() => {
                    if !fence.holds() {
                        warn!(epoch, "HA: the lease was not renewed in time; no longer acting as active");
                        break false;
                    }
                }
            }
        };
        let _ = stop_api.send(());
        if !stopping {
            let _ = quit.send(());
            // Fenced: whatever this node still holds belongs to an epoch that is over.
            // Its links are closed; what it had yet to write is dropped (the database
            // would refuse it), and the process ends, for its supervisor to start it
            // again as a standby.
            let _ = tokio::time::timeout(FENCED_STOP, running.stop()).await;
            anyhow::bail!(
                "HA: fenced: node {} lost the lease of epoch {epoch}; it stopped acting as \
                 active (restart it to stand by)",
                h.node_id
            );
        }
        // A clean stop: the lease is still renewed while the controller writes what it
        // holds, then given up at once.
        running.stop().await;
        if let Some(api) = api {
            let _ = api.await;
        }
        let _ = quit.send(());
        if let Ok(lease) = renewer.await {
            lease.release().await;
        }
        return Ok(());
    }
}

/// The HLR cache a standby's operator API keeps following the database, handed to the
/// controller at a takeover so that it does not wait for the whole HLR to load
/// (BENCHMARKS.md, "Takeover").
#[derive(Clone, Default)]
pub struct WarmHlr(Arc<std::sync::Mutex<Option<Arc<HlrCache>>>>);

impl WarmHlr {
    /// The cache the standby now follows.
    pub fn keep(&self, hlr: Arc<HlrCache>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(hlr);
    }

    /// The cache, for the controller to take over.
    fn take(&self) -> Option<Arc<HlrCache>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// How long a fenced node gives its controller to close its links before it exits.
const FENCED_STOP: Duration = Duration::from_secs(1);

/// Renews `lease` five times per period until `quit` or until another node holds it
/// (`lost`); each renewal that succeeds extends `fence`. Gives the lease back.
async fn renew(
    mut lease: Lease,
    fence: Arc<Fence>,
    lost: watch::Sender<bool>,
    mut quit: tokio::sync::oneshot::Receiver<()>,
) -> Lease {
    let period = Duration::from_millis(fence.lease_ms);
    let mut tick = tokio::time::interval(period / 5);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut quit => return lease,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        match tokio::time::timeout(period / 2, lease.renew()).await {
            Ok(Ok(true)) => fence.renewed(sent),
            Ok(Ok(false)) => {
                warn!(epoch = fence.epoch, "HA: another node holds the lease now");
                lost.send_replace(true);
                return lease;
            }
            Ok(Err(e)) => warn!(error = %e, epoch = fence.epoch, "HA: the lease could not be renewed"),
            Err(_) => warn!(epoch = fence.epoch, "HA: renewing the lease timed out"),
        }
    }
}

/// What a standby serves: its link listener, where every `LINK_HELLO` is answered
/// `LINK_REDIRECT` (when a node is active) and `LINK_REJECT` "not active", then closed;
/// and its operator API ([`crate::api::serve_standby`]).
struct Standby {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    api: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Standby {
    async fn start(
        cfg: &Config,
        view: watch::Receiver<StandbyView>,
        warm: &WarmHlr,
    ) -> std::io::Result<Standby> {
        let listener = bind_again(cfg.link.listen).await?;
        let local_addr = listener.local_addr()?;
        // Its port speaks what the active node's does (PROTOCOL.md §1).
        let tls = match (&cfg.link.tls_cert, &cfg.link.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(ServerTls::load(cert, key)?)),
            _ => None,
        };
        let (stop, mut stopped) = watch::channel(false);
        let room = Arc::new(Semaphore::new(cfg.link.max_handshakes));
        let timeout = Duration::from_millis(cfg.link.handshake_timeout_ms);
        let redirect = view.clone();
        let task = tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = stopped.wait_for(|s| *s) => return,
                };
                let Ok((stream, _)) = conn else { continue };
                // A flood takes no more than the handshake's room; the rest is closed.
                let Ok(place) = room.clone().try_acquire_owned() else {
                    continue;
                };
                let active = redirect.borrow().active_link.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _place = place;
                    let _ = tokio::time::timeout(timeout, async {
                        let Ok(Some(tls_record)) = starts_tls(&stream).await else {
                            return;
                        };
                        match open(stream, tls_record, tls.as_deref()).await {
                            Opened::Link(s) => refuse(s, active).await,
                            Opened::Refused(mut s, cause, _) => {
                                s.try_write_now(&Frame::new(0, Message::LinkReject { cause }).to_bytes());
                            }
                            Opened::Failed(_) => {}
                        }
                    })
                    .await;
                });
            }
        });
        let api = match crate::api::bind(&cfg.api).await {
            Ok(l) => {
                let mut stopping = stop.subscribe();
                Some(tokio::spawn(crate::api::serve_standby(
                    l,
                    cfg.clone(),
                    view,
                    warm.clone(),
                    async move {
                        let _ = stopping.wait_for(|s| *s).await;
                    },
                )))
            }
            Err(e) => {
                warn!(error = %e, addr = %cfg.api.listen, "HA: the operator API could not be bound");
                None
            }
        };
        Ok(Standby {
            local_addr,
            stop,
            task,
            api,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(api) = self.api {
            let _ = api.await;
        }
    }
}

/// Binds `addr`, retrying for a moment: the listener this node (or its controller)
/// just closed may not have released the port yet.
async fn bind_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if tries < 50 && e.kind() == std::io::ErrorKind::AddrInUse => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Answers a connection's first frame as a standby (`PROTOCOL.md §3.3`).
async fn refuse(stream: LinkStream, active: Option<ControllerAddress>) {
    let mut framed = Framed::new(stream, FrameCodec::new(MAX_PAYLOAD));
    let txn = match framed.next().await {
        Some(Ok(Ok(f))) => f.txn,
        _ => 0,
    };
    if let Some(active) = active {
        let _ = framed
            .feed(Frame::new(txn, Message::LinkRedirect { active }))
            .await;
    }
    let reject = Message::LinkReject {
        cause: Cause::NotActive,
    };
    let _ = framed.send(Frame::new(txn, reject)).await;
}
