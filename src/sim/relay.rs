//! A TCP relay that can be cut like a failed network, for the takeover benchmark
//! (`trunksim db-proxy`) and the HA tests: put between a trunkd node and its database,
//! it forwards both ways until [`CutRelay::cut`]; from then on it forwards nothing more,
//! in either direction, on any connection, old or new, and holds every connection open:
//! the node and the database each see a silent peer, not a closed one.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running relay; dropping it stops accepting (the connections it holds stay).
pub struct CutRelay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl CutRelay {
    /// Relays connections to `listen` (`host:port`; port 0 for any) on to `to`.
    pub async fn start(listen: &str, to: &str) -> std::io::Result<CutRelay> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (cut, watching) = watch::channel(false);
        let to: Arc<str> = to.into();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, to.clone(), watching.clone()));
            }
        });
        Ok(CutRelay { addr, cut, accepting })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts it, for good.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn relay(client: TcpStream, to: Arc<str>, cut: watch::Receiver<bool>) {
    let already = *cut.borrow();
    if already {
        // Accepted and never answered, as behind a dropped route.
        let _hold = client;
        return std::future::pending().await;
    }
    let Ok(server) = TcpStream::connect(&*to).await else {
        return;
    };
    // No Nagle delay added to the round trips.
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pipe(cr, sw, cut.clone()), pipe(sr, cw, cut));
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
