//! The link server: admits gateway connections into the handshake within its budget
//! (`PROTOCOL.md §3.2`), runs one session task per connection, tracks which sites are
//! up, logs refused handshakes as periodic summaries, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::admission::Source;
use super::handler::{Handler, SiteKeys};
use super::links::Links;
use super::session::{self, lock, Pending, Shared};
use super::tls::ServerTls;
use crate::config::LinkConfig;
use crate::metrics::Metrics;

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
    /// clone of it (the handler, to send to other sites). With `cfg.tls_cert` the port
    /// speaks TLS: a certificate or key that cannot be read refuses to start, naming it.
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
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(ServerTls::load(cert, key)?)),
            _ => None,
        };
        let shared = Shared::new(cfg, keys, handler, links, tls);
        Ok(LinkServer {
            listener,
            shared: Arc::new(shared),
        })
    }

    /// The port's TLS, when it speaks it: [`ServerTls::reload`] changes what new
    /// connections get.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.shared.tls.clone()
    }

    /// Counts and times what the sessions write into `metrics` (a server of its own
    /// otherwise): registration round trips, call request to grant, denies by cause and
    /// registration outcomes (`timing.rs`).
    pub fn recording_to(mut self, metrics: Arc<Metrics>) -> Self {
        // The state is shared with the sessions only once `run` starts.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = metrics;
        }
        self
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
