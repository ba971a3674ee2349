//! `trunksim db-proxy`: a [`CutRelay`] between a trunkd node and its database, cut at
//! the first SIGUSR1 (the takeover benchmark's "cut off from the database without
//! dying").

use anyhow::Context;
use trunkd::sim::relay::CutRelay;

/// Relays `listen` to `to` until the process ends; cut at the first SIGUSR1.
pub async fn run(listen: &str, to: &str) -> anyhow::Result<()> {
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let relay = CutRelay::start(listen, to)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("relaying {} to {to}; SIGUSR1 cuts it", relay.local_addr());
    usr1.recv().await;
    relay.cut();
    eprintln!("cut: forwarding nothing more");
    std::future::pending().await
}
