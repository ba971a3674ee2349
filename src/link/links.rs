//! The connected sites, as the services see them: whether a site is up, and a queue of
//! frames for its gateway.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Frame, SiteId};

/// An up link as others see it.
pub(super) struct LinkHandle {
    pub(super) conn: u64,
    pub(super) tx: mpsc::Sender<Frame>,
    /// Told when others end the link.
    pub(super) end: Arc<LinkEnd>,
}

/// Why others end a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EndWhy {
    /// A newer link for the site was accepted.
    Superseded,
    /// A frame found the outbound queue full: the link is closed rather than left to
    /// lose frames.
    Overrun,
    /// An operator removed the site.
    Removed,
}

/// How others end a link: one token its session waits on (one branch to poll per wake-up,
/// where three tokens cost a lock each), and the first reason given.
#[derive(Default)]
pub(super) struct LinkEnd {
    token: CancellationToken,
    why: std::sync::OnceLock<EndWhy>,
}

impl LinkEnd {
    /// Ends the link for `why` (the first reason given stands).
    pub(super) fn end(&self, why: EndWhy) {
        let _ = self.why.set(why);
        self.token.cancel();
    }

    /// Whether the link was ended.
    pub(super) fn is_ended(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the link is ended: why.
    pub(super) async fn ended(&self) -> EndWhy {
        self.token.cancelled().await;
        // Set before the token is cancelled.
        self.why.get().copied().unwrap_or(EndWhy::Superseded)
    }
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
            h.end.end(EndWhy::Removed);
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
                h.end.end(EndWhy::Overrun);
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
