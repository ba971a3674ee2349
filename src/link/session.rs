//! One gateway connection: the handshake (`PROTOCOL.md §3`) within its place in the
//! handshake budget (§3.2), then the accepted link's loop of requests, keepalives (§3.1),
//! outbound frames and closing (§2.4).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::admission::Source;
use super::admission::{Admission, Refusals};
use super::codec::{FrameCodec, LinkReadError};
use super::handler::{Handler, SiteKeys};
use super::links::{EndWhy, LinkEnd, LinkHandle, Links};
use super::stream::{self, starts_tls, LinkStream, Opened};
use super::timing::{Read, Timed, Timing};
use super::tls::ServerTls;
use crate::config::LinkConfig;
use crate::metrics::Metrics;
use crate::protocol::{
    is_gateway_txn, verify_link_mac, Cause, Direction, Frame, FrameError, Message, SiteId,
    CONTROLLER_TXN_BASE,
};

type Conn = Framed<LinkStream, FrameCodec>;

/// State shared by the server and its sessions.
pub(super) struct Shared {
    pub(super) cfg: LinkConfig,
    pub(super) keys: Arc<dyn SiteKeys>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) links: Links,
    /// Where the sessions count and time what they write.
    pub(super) metrics: Arc<Metrics>,
    /// The connections in the handshake; the handle cancels an evicted one.
    pub(super) admission: Mutex<Admission<CancellationToken>>,
    /// Handshakes that ended without a link since the last summary.
    pub(super) refusals: Mutex<Refusals>,
    /// TLS on this port (`link.tls_cert`), swapped on reload.
    pub(super) tls: Option<Arc<ServerTls>>,
    next_conn: AtomicU64,
}

impl Shared {
    pub(super) fn new(
        cfg: LinkConfig,
        keys: Arc<dyn SiteKeys>,
        handler: Arc<dyn Handler>,
        links: Links,
        tls: Option<Arc<ServerTls>>,
    ) -> Self {
        Shared {
            tls,
            admission: Mutex::new(Admission::new(cfg.max_handshakes, cfg.max_handshakes_per_address)),
            refusals: Mutex::new(Refusals::default()),
            cfg,
            keys,
            handler,
            links,
            metrics: Arc::default(),
            next_conn: AtomicU64::new(1),
        }
    }

    pub(super) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Locks `m`; the bookkeeping behind it stays usable even if a holder panicked.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a connection ended, for the log and for what to send.
#[derive(Debug)]
enum End {
    /// Tell the peer with this cause, then close.
    Close(Cause, String),
    /// The peer closed or sent `LINK_CLOSE`; nothing to send.
    PeerGone(String),
    /// Writing failed; nothing more can be sent.
    WriteFailed(String),
}

/// A connection's place in the handshake budget.
pub(super) struct Pending {
    /// The connection's id (grows with accept order).
    pub(super) conn: u64,
    /// Where it comes from.
    pub(super) src: Source,
    /// Cancelled when a newer connection took its place.
    pub(super) evict: CancellationToken,
}

pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    pending: Pending,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let conn = pending.conn;
    let span = info_span!("link", conn, %peer, site = tracing::field::Empty);
    async move {
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + shared.cfg.handshake_timeout();
        let evicted = || {
            End::Close(
                Cause::ConnectionLimit,
                "a newer connection took this one's place in the handshake".into(),
            )
        };
        let late = || End::Close(Cause::HandshakeTimeout, "handshake not complete in time".into());
        debug!("connection accepted");
        // Its first byte says whether it speaks TLS; until it is read, a refusal goes
        // out in plain.
        let first = tokio::select! {
            biased;
            _ = pending.evict.cancelled() => Err(evicted()),
            done = timeout_at(deadline, speaks_tls(&stream)) => done.unwrap_or_else(|_| Err(late())),
        };
        let opened = match first {
            Ok(tls_record) => tokio::select! {
                biased;
                _ = pending.evict.cancelled() => Err((None, evicted())),
                done = timeout_at(deadline, open(stream, tls_record, &shared)) => done.unwrap_or_else(|_| Err((None, late()))),
            },
            Err(end) => Err((Some(LinkStream::Plain(stream)), end)),
        };
        let stream = match opened {
            Ok(s) => s,
            Err((mut stream, end)) => {
                lock(&shared.admission).finish(conn, pending.src);
                return refuse(stream.as_mut(), &shared, pending.src, end, 0);
            }
        };
        let mut framed = Framed::new(stream, FrameCodec::new(shared.cfg.max_payload_len));
        let mut stop = stop;
        // The transaction of the first well-formed frame: a LINK_REJECT answers it.
        let mut first_txn = 0;
        let handshake = tokio::select! {
            biased;
            _ = pending.evict.cancelled() => Err(evicted()),
            done = timeout_at(
                deadline,
                handshake(&mut framed, &shared, &pending, &mut stop, &mut first_txn),
            ) => done.unwrap_or_else(|_| Err(late())),
        };
        lock(&shared.admission).finish(conn, pending.src);
        match handshake.and_then(|(site, txn)| room_for_link(&shared, site).map(|()| (site, txn))) {
            Ok((site, txn)) => accepted(framed, conn, site, txn, shared, stop).await,
            Err(end) => {
                // Only if nothing is half-written, so that the reject is a whole frame.
                let whole = framed.write_buffer().is_empty();
                refuse(whole.then(|| framed.get_mut()), &shared, pending.src, end, first_txn)
            }
        }
    }
    .instrument(span)
    .await
}

/// Whether the connection's first byte begins a TLS handshake record (read, not taken).
async fn speaks_tls(stream: &TcpStream) -> Result<bool, End> {
    match starts_tls(stream).await {
        Ok(Some(tls)) => Ok(tls),
        Ok(None) => Err(End::PeerGone("peer closed before sending anything".into())),
        Err(e) => Err(End::PeerGone(format!("read failed: {e}"))),
    }
}

/// The connection as its link runs on it, TLS accepted on a TLS port; a first byte that
/// says the gateway speaks the other is refused (`PROTOCOL.md §1`). The error carries
/// the connection when a refusal can still be written on it (not once the TLS
/// handshake started).
async fn open(
    stream: TcpStream,
    tls_record: bool,
    shared: &Shared,
) -> Result<LinkStream, (Option<LinkStream>, End)> {
    match stream::open(stream, tls_record, shared.tls.as_deref()).await {
        Opened::Link(s) => Ok(s),
        Opened::Refused(s, cause, why) => Err((Some(s), End::Close(cause, why.into()))),
        Opened::Failed(why) => Err((None, End::PeerGone(why))),
    }
}

/// A site proven by its key links if it has a link already (the newer one supersedes it)
/// or if fewer than `max_links` are up (`PROTOCOL.md §3.2`). Handshakes completing at the
/// same instant may all see the last place free: the overshoot is at most their number,
/// itself below the handshake budget.
fn room_for_link(shared: &Shared, site: SiteId) -> Result<(), End> {
    let max = shared.cfg.max_links();
    if shared.links.is_connected(site) || shared.links.map.len() < max {
        return Ok(());
    }
    Err(End::Close(
        Cause::ConnectionLimit,
        format!("{max} links up, no room for another"),
    ))
}

/// Reads the next frame during the handshake; every problem is a reason to reject.
async fn next_handshake_frame(framed: &mut Conn, stop: &mut watch::Receiver<bool>) -> Result<Frame, End> {
    tokio::select! {
        _ = stop.changed() => Err(End::Close(Cause::ShuttingDown, "controller shutting down".into())),
        item = framed.next() => match item {
            None => Err(End::PeerGone("peer closed during handshake".into())),
            Some(Err(LinkReadError::Io(e))) => Err(End::PeerGone(format!("read failed: {e}"))),
            Some(Err(LinkReadError::Stream(e))) => Err(End::Close(e.cause(), e.to_string())),
            Some(Ok(Err(e))) => Err(End::Close(e.cause(), e.to_string())),
            Some(Ok(Ok(frame))) => Ok(frame),
        }
    }
}

/// `LINK_HELLO` → `LINK_CHALLENGE` → `LINK_RESPONSE`; returns the site and the
/// handshake's transaction id once the MAC is right.
async fn handshake(
    framed: &mut Conn,
    shared: &Shared,
    pending: &Pending,
    stop: &mut watch::Receiver<bool>,
    first_txn: &mut u32,
) -> Result<(SiteId, u32), End> {
    let hello = next_handshake_frame(framed, stop).await?;
    *first_txn = hello.txn;
    let Message::LinkHello { site } = hello.msg else {
        let ty = hello.msg.message_type();
        return Err(End::Close(
            Cause::UnexpectedMessage,
            format!("expected LINK_HELLO, got {ty}"),
        ));
    };
    let txn = hello.txn;
    if !is_gateway_txn(txn) {
        return Err(End::Close(
            Cause::InvalidField,
            format!("LINK_HELLO transaction id {txn:#x} outside the gateway range"),
        ));
    }
    tracing::Span::current().record("site", site.get());
    let Some(key) = shared.keys.site_key(site) else {
        return Err(End::Close(
            Cause::UnknownSite,
            format!("no key configured for site {site}"),
        ));
    };
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| End::Close(Cause::Unspecified, format!("CSPRNG failed: {e}")))?;
    lock(&shared.admission).challenged(pending.conn, pending.src);
    send(framed, shared, Frame::new(txn, Message::LinkChallenge { nonce })).await?;
    let response = next_handshake_frame(framed, stop).await?;
    let Message::LinkResponse { mac } = response.msg else {
        let ty = response.msg.message_type();
        return Err(End::Close(
            Cause::UnexpectedMessage,
            format!("expected LINK_RESPONSE, got {ty}"),
        ));
    };
    if response.txn != txn {
        return Err(End::Close(
            Cause::UnexpectedMessage,
            "LINK_RESPONSE on another transaction".into(),
        ));
    }
    if !verify_link_mac(&key, &nonce, site, &mac) {
        return Err(End::Close(Cause::LinkAuthFailed, "wrong link MAC".into()));
    }
    Ok((site, txn))
}

/// Ends a connection that did not link: one attempt to send `LINK_REJECT` answering
/// `txn` without waiting (a stranger that does not read cannot hold its socket open), and
/// a log line for the first such end from `src` in the logging period; the rest of that
/// period's go into the server's summary.
/// `stream` is where the reject goes, if it can (nothing half-written on it).
fn refuse(stream: Option<&mut LinkStream>, shared: &Shared, src: Source, end: End, txn: u32) {
    let reason = match &end {
        End::Close(cause, _) => cause.to_string(),
        End::PeerGone(_) => "closed by peer".into(),
        End::WriteFailed(_) => "write failed".into(),
    };
    let first = lock(&shared.refusals).record(src, &reason);
    match end {
        End::Close(cause, why) => {
            if first {
                warn!(%cause, reason = %why, "link rejected (more from this source are summarised)");
            } else {
                debug!(%cause, reason = %why, "link rejected");
            }
            if let Some(stream) = stream {
                stream.try_write_now(&Frame::new(txn, Message::LinkReject { cause }).to_bytes());
            }
        }
        End::PeerGone(why) | End::WriteFailed(why) if first => {
            info!(reason = %why, "connection ended during handshake")
        }
        End::PeerGone(why) | End::WriteFailed(why) => {
            debug!(reason = %why, "connection ended during handshake")
        }
    }
}

/// Writes one frame within the write timeout.
async fn send(framed: &mut Conn, shared: &Shared, frame: Frame) -> Result<(), End> {
    send_all(framed, shared, std::iter::once(frame)).await
}

/// Writes frames with one flush at the end (one system call for a burst), within the
/// write timeout.
async fn send_all(
    framed: &mut Conn,
    shared: &Shared,
    frames: impl IntoIterator<Item = Frame>,
) -> Result<(), End> {
    let write = async {
        for f in frames {
            framed.feed(f).await?;
        }
        SinkExt::<Frame>::flush(framed).await
    };
    tokio::pin!(write);
    // Almost always the socket takes the frames at once: a timer is armed only for a
    // write that has to wait.
    let written = match futures::poll!(write.as_mut()) {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => timeout(shared.cfg.write_timeout(), write).await,
    };
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::WriteFailed(format!("write failed: {e}"))),
        Err(_) => Err(End::WriteFailed(format!(
            "{}: no write progress in time",
            Cause::PeerNotReading
        ))),
    }
}

/// [`send_all`] of frames nobody read a request for in this burst (queued for the
/// link), noting them for the link's measurements first.
async fn send_timed(
    framed: &mut Conn,
    shared: &Shared,
    link: &mut Link,
    frames: Vec<Frame>,
) -> Result<(), End> {
    link.timing.note(&frames, None);
    let sent = send_all(framed, shared, frames).await;
    match sent {
        Ok(()) => link.timing.written(),
        Err(_) => link.timing.not_written(),
    }
    sent
}

/// State of an accepted link.
struct Link {
    site: SiteId,
    malformed_in_row: u32,
    next_txn: u32,
    keepalive_deadline: Instant,
    timing: Timing,
}

impl Link {
    /// The next controller transaction id (`PROTOCOL.md §2.2`).
    fn controller_txn(&mut self) -> u32 {
        let t = self.next_txn;
        self.next_txn = if t == u32::MAX { CONTROLLER_TXN_BASE } else { t + 1 };
        t
    }

    /// Counts a malformed frame and returns the answers to send.
    fn malformed(&mut self, answers: Vec<Frame>) -> Vec<Frame> {
        self.malformed_in_row += 1;
        answers
    }

    /// A keepalive or its answer arrived: the peer is alive and in step.
    fn alive(&mut self, shared: &Shared) {
        self.malformed_in_row = 0;
        self.keepalive_deadline = Instant::now() + shared.cfg.keepalive_deadline();
    }
}

async fn accepted(
    mut framed: Conn,
    conn: u64,
    site: SiteId,
    txn: u32,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &shared.cfg;
    let accept = Message::LinkAccept {
        keepalive_interval_ms: cfg.keepalive_interval_ms,
        misses: cfg.keepalive_misses,
    };
    if let Err(End::WriteFailed(why) | End::Close(_, why) | End::PeerGone(why)) =
        send(&mut framed, &shared, Frame::new(txn, accept)).await
    {
        info!(reason = %why, "could not send LINK_ACCEPT");
        return;
    }
    let (tx, mut rx) = mpsc::channel(cfg.outbound_queue);
    let end = Arc::new(LinkEnd::default());
    let handle = LinkHandle {
        conn,
        tx,
        end: end.clone(),
    };
    if let Some(old) = shared.links.map.insert(site, handle) {
        info!(
            old_conn = old.conn,
            "newer link supersedes the existing one for this site"
        );
        old.end.end(EndWhy::Superseded);
    }
    info!("link up");
    shared.handler.link_up(site);

    let mut link = Link {
        site,
        malformed_in_row: 0,
        next_txn: CONTROLLER_TXN_BASE,
        keepalive_deadline: Instant::now() + cfg.keepalive_deadline(),
        timing: Timing::new(shared.metrics.clone()),
    };
    let mut tick = tokio::time::interval_at(
        Instant::now() + cfg.keepalive_interval(),
        cfg.keepalive_interval(),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Made once, not per loop turn: a frame costs no timer or waker registration.
    // The keepalive deadline moves forward in `link`; the timer catches up when it fires.
    let deadline = sleep_until(link.keepalive_deadline);
    let stopping = stop.changed();
    let ended = end.ended();
    tokio::pin!(deadline, stopping, ended);

    let end = loop {
        tokio::select! {
            biased;
            _ = &mut stopping => {
                // Finish in-flight work: send what is already queued for this gateway.
                rx.close();
                let mut failed = None;
                while let Some(frame) = rx.recv().await {
                    if let Err(e) = send_timed(&mut framed, &shared, &mut link, vec![frame]).await {
                        failed = Some(e);
                        break;
                    }
                }
                break failed.unwrap_or(End::Close(Cause::ShuttingDown, "controller shutting down".into()));
            }
            why = &mut ended => match why {
                EndWhy::Superseded => break End::Close(Cause::Superseded, "a newer link for this site was accepted".into()),
                EndWhy::Removed => {
                    // What was queued for it (the end of its calls) goes out first.
                    let mut queued = Vec::new();
                    while let Ok(f) = rx.try_recv() {
                        queued.push(f);
                    }
                    if let Err(e) = send_timed(&mut framed, &shared, &mut link, queued).await { break e; }
                    break End::Close(Cause::UnknownSite, "the site was removed from the HLR".into());
                }
                EndWhy::Overrun => {
                    let why = format!("{} frames queued for the gateway and not yet written", cfg.outbound_queue);
                    break End::Close(Cause::PeerNotReading, why);
                }
            },
            _ = &mut deadline => {
                if Instant::now() < link.keepalive_deadline {
                    deadline.as_mut().reset(link.keepalive_deadline);
                    continue;
                }
                let why = format!("no keepalive for {} intervals", cfg.keepalive_misses);
                break End::Close(Cause::KeepaliveTimeout, why);
            }
            _ = tick.tick() => {
                let ka = Frame::new(link.controller_txn(), Message::Keepalive);
                if let Err(e) = send(&mut framed, &shared, ka).await { break e; }
            }
            Some(frame) = rx.recv() => {
                // Whatever else is already queued goes out with it.
                let mut burst = vec![frame];
                while burst.len() < BURST {
                    match rx.try_recv() {
                        Ok(f) => burst.push(f),
                        Err(_) => break,
                    }
                }
                if let Err(e) = send_timed(&mut framed, &shared, &mut link, burst).await { break e; }
            }
            item = framed.next() => {
                let ending = || end.is_ended();
                let (out, end) = read_burst(&mut framed, &mut link, &shared, &mut rx, item, ending);
                if !out.is_empty() {
                    if let Err(e) = send_all(&mut framed, &shared, out).await {
                        link.timing.not_written();
                        break e;
                    }
                    link.timing.written();
                }
                if let Some(end) = end { break end; }
            }
        }
    };

    // The site is down for everyone else before the last write, which a gateway that
    // does not read can hold up for the write timeout.
    let removed = shared.links.map.remove_if(&site, |_, h| h.conn == conn).is_some();
    if removed {
        shared.handler.link_down(site);
    }
    match end {
        End::Close(cause, why) => {
            info!(%cause, reason = %why, "closing link");
            let _ = send(&mut framed, &shared, Frame::new(0, Message::LinkClose { cause })).await;
        }
        End::PeerGone(why) => info!(reason = %why, "link ended by peer"),
        End::WriteFailed(why) => warn!(reason = %why, "link dropped"),
    }
    info!("link down");
}

/// Most frames read and handled before one write: a burst of frames costs one flush.
const BURST: usize = 64;

/// Handles `first` and the frames already readable after it (up to [`BURST`], and not
/// once `ending()` says the link is closing), and returns what to send, in order: each
/// frame's replies, then what handling it queued for this link. `Some(End)` ends the
/// link once that is sent.
fn read_burst(
    framed: &mut Conn,
    link: &mut Link,
    shared: &Shared,
    rx: &mut mpsc::Receiver<Frame>,
    first: Option<Result<Result<Frame, FrameError>, LinkReadError>>,
    ending: impl Fn() -> bool,
) -> (Vec<Frame>, Option<End>) {
    let mut out = Vec::new();
    let mut item = first;
    // A request's latency starts when its burst is read: one clock reading per burst. A
    // frame that arrives while the burst is handled is timed from here too, so its
    // figure includes the handling of the frames before it.
    let read_at = std::time::Instant::now();
    for handled in 1.. {
        let mut read = None;
        let replies = match item {
            None => return (out, Some(End::PeerGone("peer closed the connection".into()))),
            Some(Err(LinkReadError::Io(e))) => {
                return (out, Some(End::PeerGone(format!("read failed: {e}"))))
            }
            Some(Err(LinkReadError::Stream(e))) => return (out, Some(End::Close(e.cause(), e.to_string()))),
            Some(Ok(Err(e))) => {
                debug!(error = %e, "malformed frame");
                link.malformed(vec![e.answer()])
            }
            Some(Ok(Ok(frame))) => {
                read = Timed::of(frame.msg.message_type()).map(|request| Read {
                    txn: frame.txn,
                    request,
                    at: read_at,
                });
                match on_frame(link, shared, frame) {
                    Ok(replies) => replies,
                    Err(end) => return (out, Some(end)),
                }
            }
        };
        let caused = out.len();
        out.extend(replies);
        while let Ok(f) = rx.try_recv() {
            out.push(f);
        }
        link.timing.note(&out[caused..], read);
        if link.malformed_in_row >= shared.cfg.max_malformed_in_row {
            let why = format!("{} malformed frames in a row", link.malformed_in_row);
            return (out, Some(End::Close(Cause::TooManyMalformed, why)));
        }
        if handled == BURST || ending() {
            break;
        }
        match framed.next().now_or_never() {
            Some(next) => item = next,
            None => break,
        }
    }
    (out, None)
}

/// Handles one well-formed frame on an accepted link; `Err` ends the link.
fn on_frame(link: &mut Link, shared: &Shared, frame: Frame) -> Result<Vec<Frame>, End> {
    let ty = frame.msg.message_type();
    let error = |cause| {
        Frame::new(
            frame.txn,
            Message::FrameError {
                cause,
                offending_type: ty.code(),
            },
        )
    };
    if ty.direction() == Direction::ToGateway {
        debug!(%ty, "frame only a controller sends");
        return Ok(link.malformed(vec![error(Cause::WrongDirection)]));
    }
    if ty.gateway_transaction() && !is_gateway_txn(frame.txn) {
        debug!(%ty, txn = frame.txn, "transaction id outside the gateway range");
        return Ok(link.malformed(vec![error(Cause::InvalidField)]));
    }
    match frame.msg {
        Message::LinkHello { .. } | Message::LinkResponse { .. } => {
            Ok(link.malformed(vec![error(Cause::UnexpectedMessage)]))
        }
        Message::Keepalive => {
            link.alive(shared);
            Ok(vec![Frame::new(frame.txn, Message::KeepaliveAck)])
        }
        Message::KeepaliveAck => {
            link.alive(shared);
            Ok(vec![])
        }
        Message::LinkClose { cause } => Err(End::PeerGone(format!("gateway sent LINK_CLOSE: {cause}"))),
        Message::FrameError {
            cause,
            offending_type,
        } => {
            link.malformed_in_row = 0;
            warn!(%cause, offending_type, txn = frame.txn, "gateway reported a frame error");
            Ok(vec![])
        }
        _ => {
            link.malformed_in_row = 0;
            Ok(shared.handler.handle(link.site, frame))
        }
    }
}
