//! Work done on timers: HLR following, challenge and registration expiry, radio
//! command retries, the messaging core's deadlines.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::node::Node;
use super::stopped;

pub(super) struct Background {
    pub(super) node: Arc<Node>,
}

impl Background {
    /// Starts the periodic tasks; each ends when `stop` turns true.
    pub(super) fn spawn(&self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
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

        tasks.push(tokio::spawn(n.messaging.clone().run_timers(stop)));

        tasks
    }
}

/// Runs `f` every `ms` until `stop` turns true.
pub(super) fn every<F, Fut>(ms: u64, mut stop: watch::Receiver<bool>, f: F) -> JoinHandle<()>
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
