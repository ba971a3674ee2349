//! What the link layer asks of the controller behind it: each site's key, and a
//! [`Handler`] for the requests, link-ups and link-downs of accepted links.

use crate::protocol::{Cause, Frame, SiteId, SiteKey};

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
    Frame::deny(frame.txn, frame.msg.message_type(), Cause::ServiceNotSupported)
}
