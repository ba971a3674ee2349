//! Frame routing: the link handler of a running controller sends each request to the
//! service of its message family, and tells the services of links going up and down.

use std::sync::Arc;

use tracing::debug;

use crate::events::EventKind;
use crate::link::{deny_unsupported, Handler};
use crate::protocol::{Family, Frame, Message, SiteId};

use super::node::Node;

/// The link handler of a running controller.
pub(super) struct Services {
    pub(super) node: Arc<Node>,
}

impl Handler for Services {
    /// Routes a request to the service of its family (the message table's last column).
    fn handle(&self, site: SiteId, frame: Frame) -> Vec<Frame> {
        let n = &self.node;
        if n.fence.as_ref().is_some_and(|f| !f.holds()) {
            // No longer the active node (its HA run loop is stopping it): nothing served.
            return vec![];
        }
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
