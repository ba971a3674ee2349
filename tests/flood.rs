//! Strangers flooding the link port (`PROTOCOL.md §3.2`): hundreds of connections from
//! the gateway's own address, each opened again as soon as the controller closes it, and
//! a real gateway still links and registers a unit through a real HLR while the flood
//! goes on. The flood sends only to 127.0.0.1, and stops by itself after a bounded time
//! and number of connections.
//!
//! The ignored test at the end measures how long linking takes under the flood
//! (BENCHMARKS.md, "Linking under a connection flood").

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use trunkd::config::{Config, LinkConfig};
use trunkd::controller::{start, Running};
use trunkd::link::codec::FrameCodec;
use trunkd::link::gateway::GatewayLink;
use trunkd::protocol::{Cause, Frame, Message, MAX_PAYLOAD};

/// Longest a flood runs, whatever happens to the test.
const FLOOD_MAX_TIME: Duration = Duration::from_secs(30);
/// Most connections a flood opens in all.
const FLOOD_MAX_CONNECTIONS: u64 = 500_000;

/// What the strangers of a flood counted.
#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    /// Closed by the controller with `LINK_REJECT` "connection limit".
    evicted: AtomicU64,
    /// `connect` failed.
    failed: AtomicU64,
    stop: AtomicBool,
}

/// `width` strangers connecting to `addr` at once from 127.0.0.1, each silent (or, if
/// `hello`, saying `LINK_HELLO` for site 1 and then nothing) until the controller closes
/// its connection, then connecting again; on a thread and runtime of their own.
struct Flood {
    counts: Arc<Counts>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(addr: SocketAddr, width: usize, hello: bool) -> Flood {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let until = tokio::time::Instant::now() + FLOOD_MAX_TIME;
                for _ in 0..width {
                    tokio::spawn(stranger(addr, hello, c.clone(), until));
                }
                while !c.stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            // Dropping the runtime ends every stranger and closes its connection.
        });
        Flood {
            counts,
            thread: Some(thread),
        }
    }

    fn evicted(&self) -> u64 {
        self.counts.evicted.load(Ordering::Relaxed)
    }

    /// Waits until the controller has evicted `n` strangers in all (the first evictions
    /// show that the handshake budget is full).
    async fn until_evicted(&self, n: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.evicted() < n {
            assert!(
                Instant::now() < deadline,
                "the flood never filled the handshake budget"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the flood; (opened, evicted, failed connects).
    fn stop(mut self) -> (u64, u64, u64) {
        self.counts.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let c = &self.counts;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (load(&c.opened), load(&c.evicted), load(&c.failed))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.counts.stop.store(true, Ordering::Relaxed);
    }
}

async fn stranger(addr: SocketAddr, hello: bool, c: Arc<Counts>, until: tokio::time::Instant) {
    while tokio::time::Instant::now() < until
        && c.opened.fetch_add(1, Ordering::Relaxed) < FLOOD_MAX_CONNECTIONS
    {
        let Ok(stream) = TcpStream::connect(addr).await else {
            c.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut conn = Framed::new(stream, FrameCodec::new(MAX_PAYLOAD));
        if hello {
            let _ = conn
                .send(Frame::new(1, Message::LinkHello { site: site(1) }))
                .await;
        }
        // Say nothing more; read until the controller closes the connection.
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, conn.next()).await {
            let limit = Message::LinkReject {
                cause: Cause::ConnectionLimit,
            };
            if matches!(frame, Ok(f) if f.msg == limit) {
                c.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A controller with default link limits on 127.0.0.1, over an SQLite HLR with fleet
/// 100, sites 1-2 and subscriber 1.
async fn controller(db: &TestDb) -> Running {
    let store = db.open().await;
    provision_basics(&store).await;
    store
        .add_subscriber("test", new_subscriber(1), "00101")
        .await
        .unwrap();
    store.close().await;
    let cfg = Config {
        link: LinkConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..LinkConfig::default()
        },
        database: db.database_config(),
        ..Config::default()
    };
    start(cfg).await.unwrap()
}

/// Links site 1 as a gateway would, trying again at once after every refusal; the link,
/// the attempts it took and the time from the first attempt.
async fn link_through(addr: SocketAddr) -> (GatewayLink, u32, Duration) {
    let t0 = Instant::now();
    for attempt in 1.. {
        if let Ok(g) = GatewayLink::connect(addr, site(1), &key(1)).await {
            return (g, attempt, t0.elapsed());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no link after {attempt} attempts"
        );
    }
    unreachable!()
}

/// Lines the controller logged (at info and above) in this test binary so far.
static LOG_LINES: AtomicU64 = AtomicU64::new(0);

/// Counts log lines instead of printing them.
struct LineCounter;

impl std::io::Write for LineCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let lines = buf.iter().filter(|b| **b == b'\n').count();
        LOG_LINES.fetch_add(lines as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn gateway_links_and_registers_through(hello: bool) {
    let counting = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(|| LineCounter)
        .finish();
    // Once per test binary; the other test may have set it already.
    let _ = tracing::subscriber::set_global_default(counting);
    let db = TestDb::sqlite();
    let c = controller(&db).await;
    let lines_before = LOG_LINES.load(Ordering::Relaxed);
    let flood = Flood::start(c.link_addr, 500, hello);
    flood.until_evicted(1000).await;
    let (mut g, attempts, took) = link_through(c.link_addr).await;
    reg(&mut g, 1).await;
    // The flood, going on before the gateway connected, still goes on now.
    flood.until_evicted(flood.evicted() + 100).await;
    let (opened, evicted, failed) = flood.stop();
    let lines = LOG_LINES.load(Ordering::Relaxed) - lines_before;
    eprintln!(
        "linked after {attempts} attempts in {took:?}; flood: {opened} connections, \
         {evicted} evicted, {failed} failed connects; {lines} log lines"
    );
    // Refusals are logged once per source and period, then summarised: thousands of
    // evictions make a handful of lines, not one each.
    assert!(lines < evicted / 10, "{lines} log lines for {evicted} evictions");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_links_and_registers_while_silent_strangers_flood_its_address() {
    gateway_links_and_registers_through(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_links_and_registers_while_strangers_claiming_its_site_flood_its_address() {
    gateway_links_and_registers_through(true).await;
}

/// BENCHMARKS.md "Linking under a connection flood": for floods of 500 and 2,000
/// strangers (silent, then claiming the site), links site 1 fifty times one after the
/// other and prints the percentiles of the time from the first connection attempt to
/// `LINK_ACCEPT`, the attempts it took, and the rate at which the controller evicted
/// strangers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand, see BENCHMARKS.md"]
async fn measure_linking_under_a_flood() {
    const LINKS: usize = 50;
    for (width, hello) in [(500, false), (500, true), (2000, false), (2000, true)] {
        let db = TestDb::sqlite();
        let c = controller(&db).await;
        let flood = Flood::start(c.link_addr, width, hello);
        flood.until_evicted(1000).await;
        let (t0, before) = (Instant::now(), flood.evicted());
        let mut times = Vec::new();
        let mut attempts = Vec::new();
        for _ in 0..LINKS {
            let (g, n, took) = link_through(c.link_addr).await;
            drop(g);
            times.push(took);
            attempts.push(n);
        }
        let rate = (flood.evicted() - before) as f64 / t0.elapsed().as_secs_f64();
        flood.stop();
        times.sort();
        attempts.sort();
        let at = |q: f64| ((LINKS - 1) as f64 * q).round() as usize;
        println!(
            "{width} strangers, {}: time to link p50 {:?}, p90 {:?}, max {:?}; attempts p50 {}, max {}; \
             {rate:.0} evictions/s",
            if hello { "claiming site 1" } else { "silent" },
            times[at(0.5)],
            times[at(0.9)],
            times[LINKS - 1],
            attempts[at(0.5)],
            attempts[LINKS - 1],
        );
        c.stop().await;
    }
}
