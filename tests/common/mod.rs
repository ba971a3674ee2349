//! Shared helpers for the integration tests: a real link server on an ephemeral port and
//! raw or authenticated gateway clients over real TCP.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

use trunkd::config::LinkConfig;
use trunkd::link::codec::FrameCodec;
use trunkd::link::gateway::GatewayLink;
use trunkd::link::{LinkServer, Links, Unsupported};
use trunkd::protocol::{link_mac, Frame, Message, SiteId, SiteKey, MAX_PAYLOAD};

/// Generous upper bound for anything a test waits for; never a performance threshold.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Moves the controller's clock (tokio's time) on by `d` at once instead of sleeping:
/// every deadline within `d` falls due, then time runs on as before.
pub async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

pub fn site(n: u16) -> SiteId {
    SiteId::new(n).unwrap()
}

pub fn key(n: u8) -> SiteKey {
    SiteKey::from_bytes([n; 32])
}

/// Link settings short enough that timeouts happen within a test.
pub fn fast_config() -> LinkConfig {
    LinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        handshake_timeout_ms: 500,
        keepalive_interval_ms: 200,
        keepalive_misses: 3,
        max_malformed_in_row: 4,
        write_timeout_ms: 2000,
        ..LinkConfig::default()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub links: Links,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server that knows sites 1 and 2 (keys `key(1)`, `key(2)`).
    pub async fn start(cfg: LinkConfig) -> Self {
        let keys: HashMap<SiteId, SiteKey> = [(site(1), key(1)), (site(2), key(2))].into();
        let server = LinkServer::bind(cfg, Arc::new(keys), Arc::new(Unsupported), Links::default())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let links = server.links();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        TestServer {
            addr,
            links,
            stop: Some(stop),
            task,
        }
    }

    /// Triggers graceful shutdown (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub async fn gateway(&self, n: u16) -> GatewayLink {
        GatewayLink::connect(self.addr, site(n), &key(n as u8))
            .await
            .unwrap()
    }

    /// Waits (a bounded while) until the server lists site `n` as linked: `LINK_ACCEPT`
    /// is sent just before the link is registered.
    pub async fn until_linked(&self, n: u16) {
        for _ in 0..100 {
            if self.links.is_connected(site(n)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn raw(&self) -> Raw {
        let s = TcpStream::connect(self.addr).await.unwrap();
        Raw(Framed::new(s, FrameCodec::new(MAX_PAYLOAD)))
    }

    /// A raw connection from another loopback address (Linux answers all of 127/8), for
    /// tests of the per-address handshake share.
    pub async fn raw_from(&self, ip: [u8; 4]) -> Raw {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((ip, 0))).unwrap();
        let s = sock.connect(self.addr).await.unwrap();
        Raw(Framed::new(s, FrameCodec::new(MAX_PAYLOAD)))
    }
}

/// A connection that speaks frames but does no handshake on its own.
pub struct Raw(pub Framed<TcpStream, FrameCodec>);

impl Raw {
    pub async fn send(&mut self, f: Frame) {
        self.0.send(f).await.unwrap();
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.0.get_mut().write_all(b).await.unwrap();
    }

    /// The next well-formed frame, or `None` once the controller closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        match tokio::time::timeout(PATIENCE, self.0.next())
            .await
            .expect("controller went silent")
        {
            None | Some(Err(_)) => None,
            Some(Ok(Ok(f))) => Some(f),
            Some(Ok(Err(e))) => panic!("controller sent a malformed frame: {e}"),
        }
    }

    /// Sends `LINK_HELLO` for site `n` on `txn`; the nonce of the challenge it gets.
    pub async fn hello(&mut self, txn: u32, n: u16) -> [u8; 32] {
        self.send(Frame::new(txn, Message::LinkHello { site: site(n) }))
            .await;
        match self.next().await {
            Some(Frame {
                msg: Message::LinkChallenge { nonce },
                ..
            }) => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Answers the challenge `nonce` with site `n`'s key (`key(n)`) and asserts the link
    /// is accepted.
    pub async fn respond(&mut self, txn: u32, n: u16, nonce: &[u8; 32]) {
        let mac = link_mac(&key(n as u8), nonce, site(n));
        self.send(Frame::new(txn, Message::LinkResponse { mac })).await;
        let answer = self.next().await;
        assert!(
            matches!(
                answer,
                Some(Frame {
                    msg: Message::LinkAccept { .. },
                    ..
                })
            ),
            "expected LINK_ACCEPT, got {answer:?}"
        );
    }

    /// Asserts the controller closes the connection with nothing more to say.
    pub async fn expect_eof(&mut self) {
        if let Some(f) = self.next().await {
            panic!("expected the connection to close, got {f:?}");
        }
    }
}

/// Reads frames from an authenticated link until one that is not a keepalive
/// (answering keepalives on the way), with a generous deadline.
pub async fn next_service(link: &mut GatewayLink) -> Result<Frame, trunkd::link::gateway::GatewayError> {
    tokio::time::timeout(PATIENCE, link.recv_service())
        .await
        .expect("controller went silent")
}

/// Reads until a well-formed frame satisfying `pred` arrives (others, keepalives
/// included, are skipped).
pub async fn until(link: &mut GatewayLink, mut pred: impl FnMut(&Frame) -> bool) -> Frame {
    loop {
        let f = next_service(link).await.unwrap();
        if pred(&f) {
            return f;
        }
    }
}

/// Answers `f` (a `CALL_ALERT` or `STATUS_DELIVERY`) from the gateway: `ACK` of its type
/// on its transaction.
pub async fn acknowledge(link: &mut GatewayLink, f: &Frame) {
    let acked = f.msg.message_type();
    link.send(Frame::new(f.txn, Message::Ack { acked }))
        .await
        .unwrap();
}

/// Waits for the next `SHORT_DATA_DELIVERY` at `link` and acknowledges it; its
/// recipient, source and payload.
pub async fn receive_short_data(
    link: &mut GatewayLink,
) -> (
    trunkd::protocol::Tmsi,
    trunkd::protocol::Unit,
    trunkd::protocol::ShortData,
) {
    let d = until(link, |f| matches!(f.msg, Message::ShortDataDelivery { .. })).await;
    let Message::ShortDataDelivery {
        id,
        tmsi,
        source,
        data,
    } = d.msg
    else {
        unreachable!()
    };
    link.send(Frame::new(d.txn, Message::ShortDataAck { id }))
        .await
        .unwrap();
    (tmsi, source, data)
}

/// A fresh, empty HLR database: an SQLite file in a temporary directory, or a new
/// PostgreSQL database on the server of `TEST_DATABASE_URL`.
pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb {
            name: "sqlite",
            url: String::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `None` when `TEST_DATABASE_URL` is not set; the first time in a test binary, it
    /// says on stderr that the PostgreSQL runs were skipped and how to enable them.
    pub async fn postgres() -> Option<TestDb> {
        use sqlx::Connection;
        static SKIPPED: std::sync::Once = std::sync::Once::new();
        let Some(base) = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
            // Straight to the stream: the test harness would capture eprintln!.
            SKIPPED.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL skipped: set TEST_DATABASE_URL (e.g. \
                     postgres://postgres@127.0.0.1:5432/postgres) to run these tests against it too"
                );
            });
            return None;
        };
        let db = format!(
            "trunkd_test_{}",
            hex::encode(&SiteKey::generate().unwrap().expose()[..8])
        );
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("TEST_DATABASE_URL unreachable");
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let (head, _) = base.split('?').next().unwrap().rsplit_once('/').unwrap();
        Some(TestDb {
            name: "postgres",
            url: format!("{head}/{db}"),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// SQLite always, PostgreSQL too when available.
    pub async fn all() -> Vec<TestDb> {
        let mut v = vec![TestDb::sqlite()];
        v.extend(TestDb::postgres().await);
        v
    }

    pub async fn open(&self) -> trunkd::store::Store {
        trunkd::store::Store::open(&self.url, self.dir.path())
            .await
            .unwrap()
    }

    pub fn database_config(&self) -> trunkd::config::DatabaseConfig {
        trunkd::config::DatabaseConfig {
            url: self.url.clone(),
            data_dir: self.dir.path().to_path_buf(),
        }
    }
}

/// Test subscriber keys: K = n repeated, OPc = n + 100 repeated.
pub fn radio_keys(n: u8) -> trunkd::sim::RadioKeys {
    use trunkd::hlr::Secret128;
    trunkd::sim::RadioKeys {
        k: Secret128::from_bytes([n; 16]),
        opc: Secret128::from_bytes([n.wrapping_add(100); 16]),
    }
}

/// A valid IMEI (Luhn digit appended) from a 14-digit body number.
pub fn imei(body: u64) -> trunkd::protocol::Imei {
    trunkd::protocol::Imei::with_check_digit(&format!("{body:014}")).unwrap()
}

/// Fleet 100 with talkgroups 10..=14, sites 1 and 2 (keys `key(1)`, `key(2)`).
pub async fn provision_basics(store: &trunkd::store::Store) {
    provision_fleet(store, 2, 6).await;
}

/// Fleet 100 with talkgroups 10..=14, sites 1 and 2 (keys `key(1)`, `key(2)`) with
/// `carriers` × `slots` slots each.
pub async fn provision_fleet(store: &trunkd::store::Store, carriers: u8, slots: u8) {
    use trunkd::hlr::{Fleet, Site, Talkgroup};
    use trunkd::protocol::{FleetId, TalkgroupId};
    let fleet = FleetId::new(100).unwrap();
    store
        .add_fleet(
            "test",
            &Fleet {
                id: fleet,
                name: "Police".into(),
            },
        )
        .await
        .unwrap();
    for tg in 10..=14 {
        let t = Talkgroup {
            fleet,
            id: TalkgroupId::new(tg).unwrap(),
            name: format!("TG{tg}"),
        };
        store.add_talkgroup("test", &t).await.unwrap();
    }
    for n in 1..=2u16 {
        let s = Site {
            id: site(n),
            name: format!("Site {n}"),
            carriers,
            slots_per_carrier: slots,
            key: key(n as u8),
        };
        store.add_site("test", &s).await.unwrap();
    }
}

/// The DENY of a `request` with `cause`.
pub fn deny(
    request: trunkd::protocol::MessageType,
    cause: trunkd::protocol::Cause,
) -> trunkd::protocol::Message {
    trunkd::protocol::Message::Deny { request, cause }
}

/// Member `n` of fleet 100.
pub fn unit(n: u16) -> trunkd::protocol::Unit {
    trunkd::protocol::Unit {
        fleet: trunkd::protocol::FleetId::new(100).unwrap(),
        member: trunkd::protocol::MemberId::new(n).unwrap(),
    }
}

/// The IMSI the HLR gives the `n`th subscriber added under prefix 00101.
pub fn imsi(n: u64) -> trunkd::protocol::Imsi {
    trunkd::protocol::Imsi::parse(&format!("00101{n:010}")).unwrap()
}

pub fn tg(n: u16) -> trunkd::protocol::TalkgroupId {
    trunkd::protocol::TalkgroupId::new(n).unwrap()
}

/// An authenticated gateway link for site `n` (key `key(n)`) to a running controller.
pub async fn gw(c: &trunkd::controller::Running, n: u16) -> GatewayLink {
    GatewayLink::connect(c.link_addr, site(n), &key(n as u8))
        .await
        .unwrap()
}

/// Registers subscriber `n` (by IMSI) through `g`; its TMSI.
pub async fn reg(g: &mut GatewayLink, n: u8) -> trunkd::protocol::Tmsi {
    let id = trunkd::protocol::Identity::Imsi(imsi(u64::from(n)));
    let f = trunkd::sim::register(g, id, &radio_keys(n)).await.unwrap();
    trunkd::sim::accepted_tmsi(&f).unwrap_or_else(|| panic!("unit {n} not registered: {f:?}"))
}

/// Registers subscribers 1..=`n` through `g`; their TMSIs in that order.
pub async fn reg_all(g: &mut GatewayLink, n: u8) -> Vec<trunkd::protocol::Tmsi> {
    let mut tmsis = Vec::new();
    for i in 1..=n {
        tmsis.push(reg(g, i).await);
    }
    tmsis
}

/// Provisions `provision_basics` and subscribers 1..=`n` (`new_subscriber`) into `db`.
pub async fn provision_units(db: &TestDb, n: u8) {
    let store = db.open().await;
    provision_basics(&store).await;
    for i in 1..=n {
        store
            .add_subscriber("test", new_subscriber(i), "00101")
            .await
            .unwrap();
    }
    store.close().await;
}

/// A `trunkd` process whose log (stderr) is read line by line.
pub struct LoggingChild {
    pub child: tokio::process::Child,
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    /// Every line read so far.
    pub log: String,
}

impl LoggingChild {
    /// Spawns `cmd` with its stderr piped, killed if the test ends first.
    pub fn spawn(cmd: &mut tokio::process::Command) -> LoggingChild {
        use tokio::io::AsyncBufReadExt;
        let mut child = cmd
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        LoggingChild {
            child,
            lines: tokio::io::BufReader::new(stderr).lines(),
            log: String::new(),
        }
    }

    /// Reads log lines until one contains `what`; panics if the process exits first.
    pub async fn read_until(&mut self, what: &str) {
        let (lines, log) = (&mut self.lines, &mut self.log);
        tokio::time::timeout(PATIENCE * 3, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.push_str(&line);
                log.push('\n');
                if line.contains(what) {
                    return;
                }
            }
            panic!("trunkd exited before logging {what:?}:\n{log}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {what:?} in the log:\n{}", self.log));
    }

    /// Reads the log until the link server listens; the address it listens on.
    pub async fn link_addr(&mut self) -> std::net::SocketAddr {
        self.addr_logged("link server listening").await
    }

    /// The operator API's address, from the log (`api.listen` may be port 0).
    pub async fn api_addr(&mut self) -> std::net::SocketAddr {
        self.addr_logged("operator API listening").await
    }

    /// The `addr=` of the next log line containing `what`.
    async fn addr_logged(&mut self, what: &str) -> std::net::SocketAddr {
        self.read_until(what).await;
        let line = self.log.lines().last().unwrap_or_default();
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next());
        addr.and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Sends SIGTERM, waits for the exit and reads the rest of the log.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("trunkd did not exit")
            .unwrap();
        while let Some(line) = self.lines.next_line().await.unwrap() {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        status
    }
}

/// Subscriber `n` of fleet 100: member n, alias `Car n`, IMEI from n, keys
/// `radio_keys(n)`, talkgroups 10, 11, 12.
pub fn new_subscriber(n: u8) -> trunkd::hlr::NewSubscriber {
    let keys = radio_keys(n);
    trunkd::hlr::NewSubscriber {
        imei: imei(35_000_000_000_000 + u64::from(n)),
        imsi: None,
        msisdn: None,
        alias: Some(format!("Car {n}")),
        unit: unit(n.into()),
        individual: None,
        k: keys.k,
        opc: keys.opc,
        priority: 1,
        permissions: trunkd::hlr::Permissions::ALL,
        talkgroups: [10, 11, 12].map(tg).to_vec(),
    }
}

// ---- Calls: a controller with small sites, and the requests the call tests make. ----

use trunkd::config::{Config, RegistrationConfig, TrunkingSection};
use trunkd::controller::Running;
use trunkd::core::trunking::{EmergencyPolicy, TrunkingMode};
use trunkd::protocol::{CallId, CallScope, Tmsi};

pub fn call_config(db: &TestDb, t: TrunkingSection) -> Config {
    Config {
        link: fast_config(),
        database: db.database_config(),
        registration: RegistrationConfig {
            location_flush_ms: 50,
            hlr_refresh_ms: 50,
            ..RegistrationConfig::default()
        },
        trunking: t,
        ..Config::default()
    }
}

pub fn trunking(mode: TrunkingMode, emergency: EmergencyPolicy) -> TrunkingSection {
    TrunkingSection {
        mode,
        emergency,
        hang_time_ms: 400,
        quasi_hang_time_ms: 200,
        ..TrunkingSection::default()
    }
}

/// Fleet 100 (talkgroups 10..=14), sites 1 and 2 with one 3-slot carrier each (two
/// traffic slots), subscribers 1..=8 (talkgroups 10, 11, 12; priority = member id).
pub async fn call_controller(db: &TestDb, t: TrunkingSection) -> Running {
    provision_calls(db).await;
    trunkd::controller::start(call_config(db, t)).await.unwrap()
}

/// What [`call_controller`] provisions, for a test that starts its own controller.
pub async fn provision_calls(db: &TestDb) {
    let store = db.open().await;
    provision_fleet(&store, 1, 3).await;
    for n in 1..=8u8 {
        let mut s = new_subscriber(n);
        s.priority = n;
        store.add_subscriber("t", s, "00101").await.unwrap();
    }
    store.close().await;
}

/// The next frame on `g` that is not a keepalive.
pub async fn next(g: &mut GatewayLink) -> Frame {
    next_service(g).await.unwrap()
}

pub fn grant_of(f: &Frame) -> (CallId, Vec<(u16, u8, u8)>) {
    match &f.msg {
        Message::ChannelGrant { call, sites, .. } => (
            *call,
            sites
                .iter()
                .map(|s| (s.site.get(), s.carrier.get(), s.slot.get()))
                .collect(),
        ),
        other => panic!("expected a grant, got {other:?}"),
    }
}

pub async fn group_call(g: &mut GatewayLink, tmsi: Tmsi, talkgroup: u16, scope: CallScope) -> (u32, Frame) {
    let txn = g
        .request(Message::GroupCallReq {
            tmsi,
            talkgroup: tg(talkgroup),
            scope,
        })
        .await
        .unwrap();
    let f = until(g, |f| f.txn == txn).await;
    (txn, f)
}

pub async fn private_call(g: &mut GatewayLink, tmsi: Tmsi, target: u16) -> (u32, Frame) {
    let txn = g
        .request(Message::PrivateCallReq {
            tmsi,
            target: unit(target),
        })
        .await
        .unwrap();
    let f = until(g, |f| f.txn == txn).await;
    (txn, f)
}

// ---- The operator API's event stream ----

/// One SSE event as a client reads it.
#[derive(Debug)]
pub struct Sse {
    pub event: String,
    pub id: Option<u64>,
    pub data: serde_json::Value,
}

/// An open event stream, read as `EventSource` does: events end at a blank line,
/// comments (keep-alives) are skipped, and an event with an id but no data only moves
/// `last_id`.
pub struct EventStream {
    pub r: reqwest::Response,
    pub buf: String,
    pub last_id: Option<u64>,
}

impl EventStream {
    /// Reads the answer `r` to `GET /api/v1/events`, which must have opened a stream.
    pub fn open(r: reqwest::Response) -> EventStream {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        EventStream {
            r,
            buf: String::new(),
            last_id: None,
        }
    }

    /// The next event with data; `None` once the server ended the stream.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(e) = self.block().await? {
                return Some(e);
            }
        }
    }

    /// The next event: `Some(None)` for one with an id only; `None` once the server
    /// ended the stream.
    pub async fn block(&mut self) -> Option<Option<Sse>> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (None, None, None);
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = Some(value.to_string()),
                        "id" => id = Some(value.parse::<u64>().unwrap()),
                        "data" => data = Some(serde_json::from_str::<serde_json::Value>(value).unwrap()),
                        _ => {}
                    }
                }
                if id.is_some() {
                    self.last_id = id;
                }
                if let Some(data) = data {
                    let event = event.unwrap_or_else(|| "message".into());
                    return Some(Some(Sse { event, id, data }));
                }
                if id.is_some() {
                    return Some(None);
                }
            }
            let chunk = tokio::time::timeout(PATIENCE, self.r.chunk())
                .await
                .expect("no event in time")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Reads until an event satisfies `pred`: it, and those before it.
    pub async fn until(&mut self, pred: impl Fn(&Sse) -> bool) -> (Sse, Vec<Sse>) {
        let mut before = Vec::new();
        loop {
            let e = self.next().await.expect("the stream ended");
            if pred(&e) {
                return (e, before);
            }
            before.push(e);
        }
    }
}
