//! A TCP relay that can be cut like a failed network: put between a trunkd node and its
//! database, it forwards both ways until it receives SIGUSR1, then forwards nothing
//! more, in either direction, on any connection, old or new, while holding every
//! connection open: the node and the database each see a silent peer, not a closed
//! one (the takeover benchmark's "cut off from the database without dying").

use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Relays `listen` to `to` until the process ends; cut at the first SIGUSR1.
pub async fn run(listen: &str, to: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let (cut_tx, cut) = watch::channel(false);
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    tokio::spawn(async move {
        usr1.recv().await;
        eprintln!("cut: forwarding nothing more");
        cut_tx.send_replace(true);
        // Held for good: the connections stay open, silent.
        std::future::pending::<()>().await;
    });
    println!("relaying {listen} to {to}; SIGUSR1 cuts it");
    let to: Arc<str> = to.into();
    loop {
        let (client, _) = listener.accept().await?;
        let (to, cut) = (to.clone(), cut.clone());
        tokio::spawn(async move {
            let already = *cut.borrow();
            if already {
                // Accepted and never answered, as behind a dropped route.
                let _hold = client;
                return std::future::pending::<()>().await;
            }
            let Ok(server) = TcpStream::connect(&*to).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pipe(cr, sw, cut.clone()), pipe(sr, cw, cut));
        });
    }
}

/// Copies `from` to `to` until either ends or the relay is cut (then holds both open).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let check = cut.clone();
    loop {
        tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let is_cut = *check.borrow();
                    if is_cut {
                        break;
                    }
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            // The only change ever sent is the cut.
            _ = cut.changed() => break,
        }
    }
    let _hold = (from, to);
    std::future::pending::<()>().await;
}
