//! The link server: admits gateway connections into the handshake within its budget
//! (`PROTOCOL.md §3.2`), runs one session task per connection, tracks which sites are
//! up, logs refused handshakes as periodic summaries, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::admission::{Admission, Refusals, Source};
use super::session::{self, Pending};
use crate::config::LinkConfig;
use crate::protocol::{Cause, Frame, Message, SiteId, SiteKey};

/// Where the link server finds each site's pre-shared key.
pub trait SiteKeys: Send + Sync + 'static {
    /// The key of `site`, or `None` if the site may not connect.
    fn site_key(&self, site: SiteId) -> Option<SiteKey>;
}

impl SiteKeys for std::collections::HashMap<SiteId, SiteKey> {
    fn site_key(&self, site: SiteId) -> Option<SiteKey> {
        self.get(&site).cloned()
    }
}

/// What the controller does with a well-formed request from an accepted link.
///
/// The link layer has already answered keepalives, checked direction and transaction
/// range; everything else reaches the handler.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request from `site`; returns the frames to send back on that link.
    fn handle(&self, site: SiteId, frame: Frame) -> Vec<Frame>;
    /// A link for `site` came up.
    fn link_up(&self, _site: SiteId) {}
    /// The link of `site` went down (not called when a newer link superseded it).
    fn link_down(&self, _site: SiteId) {}
}

/// The handler of a controller with no services yet: every request gets `DENY` with
/// cause "service not supported" (`PROTOCOL.md §5`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unsupported;

impl Handler for Unsupported {
    fn handle(&self, _site: SiteId, frame: Frame) -> Vec<Frame> {
        vec![deny_unsupported(&frame)]
    }
}

/// `DENY` "service not supported" answering `frame`.
pub fn deny_unsupported(frame: &Frame) -> Frame {
    Frame::new(
        frame.txn,
        Message::Deny {
            request: frame.msg.message_type(),
            cause: Cause::ServiceNotSupported,
        },
    )
}

/// An up link as others see it.
pub(super) struct LinkHandle {
    pub(super) conn: u64,
    pub(super) tx: mpsc::Sender<Frame>,
    pub(super) superseded: CancellationToken,
    /// Cancelled when a frame found the outbound queue full: the link is closed rather
    /// than left to lose frames.
    pub(super) overrun: CancellationToken,
    /// Cancelled when an operator removed the site: the link is closed.
    pub(super) removed: CancellationToken,
}

/// The connected sites; cheap to clone.
#[derive(Clone, Default)]
pub struct Links {
    pub(super) map: Arc<DashMap<SiteId, LinkHandle>>,
}

/// A frame could not be queued for a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The site has no link up.
    #[error("site {0} is not connected")]
    NotConnected(SiteId),
    /// The link's outbound queue is full: the frame is not sent and the link closes.
    #[error("outbound queue of site {0} is full; closing its link")]
    QueueFull(SiteId),
}

impl Links {
    /// Whether `site` has a link up.
    pub fn is_connected(&self, site: SiteId) -> bool {
        self.map.contains_key(&site)
    }

    /// The sites with a link up, sorted.
    pub fn connected(&self) -> Vec<SiteId> {
        let mut v: Vec<SiteId> = self.map.iter().map(|e| *e.key()).collect();
        v.sort();
        v
    }

    /// Closes the link of a site an operator removed (`LINK_CLOSE` "unknown site").
    pub fn close_removed(&self, site: SiteId) {
        if let Some(h) = self.map.get(&site) {
            h.removed.cancel();
        }
    }

    /// Queues `frame` for the gateway of `site` without waiting. A gateway whose queue
    /// is full is not keeping up: its link is closed (`PROTOCOL.md §2.4`), so that it
    /// reconnects in step instead of silently missing frames. Producers of many frames
    /// at once use [`send_wait`](Self::send_wait).
    pub fn send(&self, site: SiteId, frame: Frame) -> Result<(), SendError> {
        let h = self.map.get(&site).ok_or(SendError::NotConnected(site))?;
        h.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                h.overrun.cancel();
                SendError::QueueFull(site)
            }
            mpsc::error::TrySendError::Closed(_) => SendError::NotConnected(site),
        })
    }

    /// Queues `frame` for the gateway of `site`, waiting while its queue is full. The
    /// wait ends when the link writes (or, if the gateway stops reading, when the link
    /// closes after `link.write_timeout_ms`).
    pub async fn send_wait(&self, site: SiteId, frame: Frame) -> Result<(), SendError> {
        let tx = self
            .map
            .get(&site)
            .map(|h| h.tx.clone())
            .ok_or(SendError::NotConnected(site))?;
        tx.send(frame).await.map_err(|_| SendError::NotConnected(site))
    }
}

/// State shared by the server and its sessions.
pub(super) struct Shared {
    pub(super) cfg: LinkConfig,
    pub(super) keys: Arc<dyn SiteKeys>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) links: Links,
    /// The connections in the handshake; the handle cancels an evicted one.
    pub(super) admission: Mutex<Admission<CancellationToken>>,
    /// Handshakes that ended without a link since the last summary.
    pub(super) refusals: Mutex<Refusals>,
    next_conn: AtomicU64,
}

impl Shared {
    pub(super) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Locks `m`; the bookkeeping behind it stays usable even if a holder panicked.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connections the kernel may hold for `accept` (it caps this at `net.core.somaxconn`).
/// Under a flood the queue is what lets a gateway's connection in: once it is full the
/// kernel drops new connection attempts, and each drop costs the gateway a TCP
/// retransmission (a second, then longer) before its handshake can even start.
const LISTEN_BACKLOG: u32 = 4096;

/// How often refused handshakes are summarised in the log.
const REFUSAL_PERIOD: Duration = Duration::from_secs(10);

/// The TCP server for site gateways (`PROTOCOL.md §3`).
pub struct LinkServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl LinkServer {
    /// Binds the listen address of `cfg`.
    ///
    /// `links` is the registry the server keeps of up links; the caller may hold a
    /// clone of it (the handler, to send to other sites).
    pub async fn bind(
        cfg: LinkConfig,
        keys: Arc<dyn SiteKeys>,
        handler: Arc<dyn Handler>,
        links: Links,
    ) -> std::io::Result<Self> {
        let socket = if cfg.listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(cfg.listen)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let shared = Shared {
            admission: Mutex::new(Admission::new(cfg.max_handshakes, cfg.max_handshakes_per_address)),
            refusals: Mutex::new(Refusals::default()),
            cfg,
            keys,
            handler,
            links,
            next_conn: AtomicU64::new(1),
        };
        Ok(LinkServer {
            listener,
            shared: Arc::new(shared),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The registry of connected sites.
    pub fn links(&self) -> Links {
        self.shared.links.clone()
    }

    /// Serves until `shutdown` completes; then stops accepting, tells every gateway with
    /// `LINK_CLOSE` "shutting down" after sending what was already queued for it, and
    /// waits up to `grace` for the sessions to end (aborting any left after that).
    pub async fn run(self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let LinkServer { listener, shared } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = JoinSet::new();
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "link server listening");
        let mut summary =
            tokio::time::interval_at(tokio::time::Instant::now() + REFUSAL_PERIOD, REFUSAL_PERIOD);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let conn = shared.next_conn();
                        let evict = CancellationToken::new();
                        let pending = Pending { conn, src: Source::of(peer.ip()), evict: evict.clone() };
                        let evicted = lock(&shared.admission).admit(conn, pending.src, evict);
                        sessions.spawn(session::run(stream, peer, pending, shared.clone(), stop_rx.clone()));
                        if let Some(evicted) = evicted {
                            evicted.cancel();
                            // Under pressure, let the sessions run before the next accept, so
                            // that a gateway's handshake moves on while strangers pile up.
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = summary.tick() => log_refusals(&shared),
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
        drop(listener);
        info!(links = sessions.len(), "shutting down: closing links");
        let _ = stop_tx.send(true);
        let drained =
            tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                left = sessions.len(),
                "grace period over: aborting remaining links"
            );
            sessions.shutdown().await;
        }
        info!("link server stopped");
    }
}

/// Logs the period's summary of handshakes that ended without a link, one line per
/// source that had more than the one already logged in full.
fn log_refusals(shared: &Shared) {
    let (named, others) = lock(&shared.refusals).take();
    let handshaking = lock(&shared.admission).pending();
    let secs = REFUSAL_PERIOD.as_secs();
    for (source, tally) in named {
        warn!(%source, reasons = %tally, handshaking, "{} connections from {source} refused or ended before linking in the last {secs} s", tally.count);
    }
    if others.count > 0 {
        warn!(reasons = %others, handshaking, "{} connections from further sources refused or ended before linking in the last {secs} s", others.count);
    }
}
