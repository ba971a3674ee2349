//! The gateway side of the link (`PROTOCOL.md §3`): connect, authenticate, keep alive,
//! send and receive frames, and find the active controller among several
//! ([`ControllerList`], §3.3). Used by `trunksim` and the integration tests.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::{Decoder, Framed};

use super::codec::{FrameCodec, LinkReadError};
use super::stream::LinkStream;
use super::tls::GatewayTls;
use crate::protocol::{
    link_mac, Cause, ControllerAddress, Frame, FrameError, Message, SiteId, SiteKey, CONTROLLER_TXN_BASE,
    MAX_PAYLOAD,
};

/// Why a gateway link failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Reading failed for good.
    #[error(transparent)]
    Read(#[from] LinkReadError),
    /// The controller refused the link.
    #[error("controller rejected the link: {0}")]
    Rejected(Cause),
    /// The controller is a standby and named the active one (`LINK_REDIRECT`, then
    /// `LINK_REJECT` "not active").
    #[error("controller is not active; the active one is at {}", .0.as_str())]
    Redirected(ControllerAddress),
    /// The controller closed the link.
    #[error("controller closed the link: {0}")]
    Closed(Cause),
    /// The connection ended.
    #[error("connection closed by the controller")]
    Eof,
    /// TLS failed: the controller's certificate is not trusted or names another host,
    /// or the port does not speak TLS.
    #[error("TLS: {0}")]
    Tls(String),
    /// The controller sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// An authenticated link, as a gateway holds it.
pub struct GatewayLink {
    framed: Framed<LinkStream, FrameCodec>,
    site: SiteId,
    keepalive_interval: Duration,
    misses: u8,
    next_txn: u32,
}

impl GatewayLink {
    /// Connects to `addr` and completes the handshake for `site` with `key`.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        site: SiteId,
        key: &SiteKey,
    ) -> Result<Self, GatewayError> {
        Self::connect_with(addr, site, key, None).await
    }

    /// [`connect`](Self::connect), over TLS when `tls` is given (`PROTOCOL.md §1`): the
    /// controller's certificate checked first, then the same handshake inside TLS.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        site: SiteId,
        key: &SiteKey,
        tls: Option<&GatewayTls>,
    ) -> Result<Self, GatewayError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => LinkStream::Plain(stream),
            Some(tls) => {
                let (connector, name) = tls.connector();
                let tls = connector.connect(name, stream).await.map_err(tls_error)?;
                LinkStream::Client(Box::new(tls))
            }
        };
        Self::handshake(stream, site, key).await
    }

    /// Completes the handshake on an open connection.
    async fn handshake(stream: LinkStream, site: SiteId, key: &SiteKey) -> Result<Self, GatewayError> {
        let mut framed = Framed::new(stream, FrameCodec::new(MAX_PAYLOAD));
        let txn = 1;
        framed.send(Frame::new(txn, Message::LinkHello { site })).await?;
        let nonce = match next(&mut framed).await?.msg {
            Message::LinkChallenge { nonce } => nonce,
            Message::LinkReject { cause } => return Err(GatewayError::Rejected(cause)),
            Message::LinkRedirect { active } => {
                return match next(&mut framed).await?.msg {
                    Message::LinkReject {
                        cause: Cause::NotActive,
                    } => Err(GatewayError::Redirected(active)),
                    other => Err(GatewayError::Protocol(format!(
                        "expected LINK_REJECT not active after LINK_REDIRECT, got {other:?}"
                    ))),
                }
            }
            other => {
                return Err(GatewayError::Protocol(format!(
                    "expected LINK_CHALLENGE, got {other:?}"
                )))
            }
        };
        let mac = link_mac(key, &nonce, site);
        framed
            .send(Frame::new(txn, Message::LinkResponse { mac }))
            .await?;
        match next(&mut framed).await?.msg {
            Message::LinkAccept {
                keepalive_interval_ms,
                misses,
            } => Ok(GatewayLink {
                framed,
                site,
                keepalive_interval: Duration::from_millis(keepalive_interval_ms.into()),
                misses,
                next_txn: txn + 1,
            }),
            Message::LinkReject { cause } => Err(GatewayError::Rejected(cause)),
            other => Err(GatewayError::Protocol(format!(
                "expected LINK_ACCEPT, got {other:?}"
            ))),
        }
    }

    /// The site this link serves.
    pub fn site(&self) -> SiteId {
        self.site
    }

    /// The keepalive interval the controller announced.
    pub fn keepalive_interval(&self) -> Duration {
        self.keepalive_interval
    }

    /// The missed-keepalive limit the controller announced.
    pub fn misses(&self) -> u8 {
        self.misses
    }

    /// A fresh gateway transaction id (`PROTOCOL.md §2.2`).
    pub fn next_txn(&mut self) -> u32 {
        let t = self.next_txn;
        self.next_txn = if t + 1 >= CONTROLLER_TXN_BASE { 1 } else { t + 1 };
        t
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: Frame) -> Result<(), GatewayError> {
        Ok(self.framed.send(frame).await?)
    }

    /// Sends raw bytes, well-formed or not.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), GatewayError> {
        let stream = self.framed.get_mut();
        stream.write_all(bytes).await?;
        Ok(stream.flush().await?)
    }

    /// Sends `msg` as a new transaction and returns its id.
    pub async fn request(&mut self, msg: Message) -> Result<u32, GatewayError> {
        let txn = self.next_txn();
        self.send(Frame::new(txn, msg)).await?;
        Ok(txn)
    }

    /// Queues `msg` as a new transaction and returns its id; it is written at the next
    /// [`flush`](Self::flush) (or sooner, when the write buffer fills). Several frames
    /// then cost one write.
    pub async fn queue_request(&mut self, msg: Message) -> Result<u32, GatewayError> {
        let txn = self.next_txn();
        self.framed.feed(Frame::new(txn, msg)).await?;
        Ok(txn)
    }

    /// Queues `frame` (an answer under the controller's transaction, say) for the next
    /// [`flush`](Self::flush).
    pub async fn feed(&mut self, frame: Frame) -> Result<(), GatewayError> {
        Ok(self.framed.feed(frame).await?)
    }

    /// The next well-formed frame already read from the socket, without waiting for
    /// more; keepalives are answered (queued) on the way, as in
    /// [`recv_service`](Self::recv_service). `None` when no whole frame is buffered.
    pub async fn buffered(&mut self) -> Result<Option<Frame>, GatewayError> {
        loop {
            let mut codec = self.framed.codec().clone();
            let Some(read) = codec.decode(self.framed.read_buffer_mut())? else {
                return Ok(None);
            };
            match Traffic::of(well_formed(read)?)? {
                Traffic::Service(f) => return Ok(Some(f)),
                Traffic::Answer(a) => self.feed(a).await?,
                Traffic::Link => {}
            }
        }
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> Result<(), GatewayError> {
        Ok(SinkExt::<Frame>::flush(&mut self.framed).await?)
    }

    /// The next frame from the controller, well-formed or not; `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Result<Result<Frame, FrameError>, LinkReadError>> {
        self.framed.next().await
    }

    /// The next well-formed frame that is not a keepalive, answering the controller's
    /// keepalives on the way. `LINK_CLOSE` becomes [`GatewayError::Closed`].
    pub async fn recv_service(&mut self) -> Result<Frame, GatewayError> {
        loop {
            match Traffic::of(next(&mut self.framed).await?)? {
                Traffic::Service(f) => return Ok(f),
                Traffic::Answer(a) => self.send(a).await?,
                Traffic::Link => {}
            }
        }
    }

    /// Sends a keepalive of our own.
    pub async fn keepalive(&mut self) -> Result<(), GatewayError> {
        self.request(Message::Keepalive).await.map(drop)
    }
}

/// A TLS handshake that failed, said for an operator: a plain controller port answers a
/// ClientHello with a plain `LINK_REJECT` (`TK`…), which is no TLS record.
fn tls_error(e: std::io::Error) -> GatewayError {
    let plain = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        });
    if plain {
        return GatewayError::Tls(
            "the controller's port does not speak TLS (it answered in plain TCP): is its link.tls_cert set?"
                .into(),
        );
    }
    GatewayError::Tls(e.to_string())
}

async fn next(framed: &mut Framed<LinkStream, FrameCodec>) -> Result<Frame, GatewayError> {
    match framed.next().await {
        None => Err(GatewayError::Eof),
        Some(read) => well_formed(read?),
    }
}

/// A frame read in sync, or the error a malformed one is to a gateway.
fn well_formed(read: Result<Frame, FrameError>) -> Result<Frame, GatewayError> {
    read.map_err(|e| GatewayError::Protocol(format!("malformed frame from controller: {e}")))
}

/// A frame from the controller, sorted for a gateway that wants its service frames:
/// the link's own traffic is answered or dropped, `LINK_CLOSE` is an error.
enum Traffic {
    /// A frame for the gateway's services.
    Service(Frame),
    /// The answer a `KEEPALIVE` needs.
    Answer(Frame),
    /// A `KEEPALIVE_ACK`: nothing to do.
    Link,
}

impl Traffic {
    fn of(frame: Frame) -> Result<Traffic, GatewayError> {
        Ok(match frame.msg {
            Message::Keepalive => Traffic::Answer(Frame::new(frame.txn, Message::KeepaliveAck)),
            Message::KeepaliveAck => Traffic::Link,
            Message::LinkClose { cause } => return Err(GatewayError::Closed(cause)),
            _ => Traffic::Service(frame),
        })
    }
}

/// A gateway's list of controller addresses, searched for the active controller as
/// `PROTOCOL.md §3.3` says: each address in turn, a standby's redirect first, and a
/// jittered backoff (100 ms doubling to 1 s) between passes that found none.
#[derive(Debug)]
pub struct ControllerList {
    addrs: Vec<String>,
    /// Where the next pass starts.
    next: usize,
    /// The address of the link last made.
    current: usize,
    backoff: Duration,
    /// Longest one attempt (connect and handshake) may take.
    attempt_timeout: Duration,
    /// TLS to every address, when the controllers' ports speak it.
    tls: Option<GatewayTls>,
    /// Why the last attempt failed.
    last_error: Option<String>,
}

impl ControllerList {
    /// First backoff between passes.
    pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
    /// Longest backoff between passes.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

    /// The list (`host:port` each), searched from its first address; `None` when empty.
    pub fn new(addrs: Vec<String>) -> Option<Self> {
        (!addrs.is_empty()).then_some(ControllerList {
            addrs,
            next: 0,
            current: 0,
            backoff: Self::BACKOFF_MIN,
            attempt_timeout: Duration::from_secs(2),
            tls: None,
            last_error: None,
        })
    }

    /// Why the last attempt to link failed, if one did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Every address over TLS, trusting `tls`.
    pub fn with_tls(mut self, tls: Option<GatewayTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Links `site` to the active controller, searching until one accepts (a caller
    /// bounds the search with a timeout of its own).
    pub async fn link(&mut self, site: SiteId, key: &SiteKey) -> GatewayLink {
        self.last_error = None;
        loop {
            let mut redirected = false;
            for k in 0..self.addrs.len() {
                let i = (self.next + k) % self.addrs.len();
                let mut result = self.attempt(&self.addrs[i].clone(), site, key).await;
                if let Err(GatewayError::Redirected(active)) = &result {
                    if !redirected {
                        redirected = true;
                        result = self.attempt(active.as_str(), site, key).await;
                    }
                }
                match result {
                    Ok(link) => {
                        self.current = i;
                        self.backoff = Self::BACKOFF_MIN;
                        return link;
                    }
                    Err(e) => self.last_error = Some(format!("{}: {e}", self.addrs[i])),
                }
            }
            let half = self.backoff / 2;
            let jitter = getrandom::u32().unwrap_or(0) as f64 / f64::from(u32::MAX);
            tokio::time::sleep(half + half.mul_f64(jitter)).await;
            self.backoff = (self.backoff * 2).min(Self::BACKOFF_MAX);
        }
    }

    /// The link [`link`](Self::link) made went down: the next search starts with the
    /// address after its own.
    pub fn lost(&mut self) {
        self.next = (self.current + 1) % self.addrs.len();
    }

    async fn attempt(&self, addr: &str, site: SiteId, key: &SiteKey) -> Result<GatewayLink, GatewayError> {
        let connect = GatewayLink::connect_with(addr, site, key, self.tls.as_ref());
        match tokio::time::timeout(self.attempt_timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no link within {:?}", self.attempt_timeout),
            ))),
        }
    }
}
