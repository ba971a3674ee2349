//! The dispatch console (`/console/`) in a real browser: Debian's Chromium, driven over
//! WebDriver (its chromedriver) by fantoccini, against a controller and its API on real
//! sockets and a real database, with gateways linked over the site link.
//!
//! Without `chromedriver` on the PATH (Debian's `chromium-driver`) each test says
//! "Chromium skipped" on standard error and passes, unless `REQUIRE_CHROMIUM` is set
//! (`.ci/run` sets it, and installs the packages).
//!
//! `CONSOLE_SCREENSHOTS=<dir>` also writes the README's screenshots of the main views
//! there (`a_grant_appears_on_the_slot_grid_and_an_inhibit_is_acknowledged`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::sync::watch;
use trunkd::auth::{password, Fleets, Role};
use trunkd::config::{ApiConfig, Config};
use trunkd::controller::{Answer, Query, Running};
use trunkd::core::trunking::{EmergencyPolicy, TrunkingMode};
use trunkd::link::gateway::GatewayLink;
use trunkd::protocol::{CallId, CallScope, Frame, Message, Tmsi};

const PW: &str = "correct horse battery";

/// How long a test waits for the page to show something.
const PAGE_PATIENCE: Duration = Duration::from_secs(20);

/// A controller and its API on a fixed port, which a restart keeps.
struct Server {
    _db: TestDb,
    cfg: Config,
    c: Option<Running>,
    api: SocketAddr,
    stop_api: Option<oneshot::Sender<()>>,
    api_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Fleet 100 (`provision_calls`), and operators `ada` (admin), `dan` and `dora`
    /// (dispatchers), `vic` (viewer), all with the password `PW`.
    async fn start() -> Server {
        let db = TestDb::sqlite();
        provision_calls(&db).await;
        let store = db.open().await;
        for (name, role) in [
            ("ada", Role::Admin),
            ("dan", Role::Dispatcher),
            ("dora", Role::Dispatcher),
            ("vic", Role::Viewer),
        ] {
            let phc = password::hash(PW).unwrap();
            store
                .add_operator("test", name, &phc, role, &Fleets::parse_list("").unwrap())
                .await
                .unwrap();
        }
        store.close().await;
        let mut cfg = call_config(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
        // The test's gateways answer keepalives only while it reads their links.
        cfg.link.keepalive_interval_ms = 60_000;
        let mut s = Server {
            _db: db,
            cfg,
            c: None,
            api: "127.0.0.1:0".parse().unwrap(),
            stop_api: None,
            api_task: None,
        };
        s.run().await;
        s
    }

    async fn run(&mut self) {
        let c = trunkd::controller::start(self.cfg.clone()).await.unwrap();
        let cfg = ApiConfig {
            listen: self.api,
            ..self.cfg.api.clone()
        };
        let listener = trunkd::api::bind(&cfg).await.unwrap();
        self.api = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        self.api_task = Some(tokio::spawn(trunkd::api::serve(
            listener,
            c.handle(),
            cfg,
            async move {
                let _ = rx.await;
            },
        )));
        self.stop_api = Some(tx);
        self.c = Some(c);
    }

    /// The API's address as a page's origin.
    fn base(&self) -> String {
        format!("http://{}", self.api)
    }

    fn c(&self) -> &Running {
        self.c.as_ref().unwrap()
    }

    /// Stops the controller and its API, as a SIGTERM would.
    async fn stop(&mut self) {
        self.c.take().unwrap().stop().await;
        let _ = self.stop_api.take().unwrap().send(());
        let _ = self.api_task.take().unwrap().await;
    }
}

/// chromedriver, for one test's browser windows.
struct Browser {
    driver: tokio::process::Child,
    port: u16,
    _profiles: tempfile::TempDir,
}

impl Browser {
    /// chromedriver on a free port, or `None` (said on stderr) where it is not installed
    /// and `REQUIRE_CHROMIUM` is not set.
    async fn start() -> Option<Browser> {
        let Some(path) = which("chromedriver") else {
            assert!(
                std::env::var_os("REQUIRE_CHROMIUM").is_none(),
                "REQUIRE_CHROMIUM is set and chromedriver is not installed"
            );
            eprintln!("Chromium skipped: no chromedriver on the PATH (Debian: chromium-driver)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + PAGE_PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Browser {
            driver,
            port,
            _profiles: tempfile::tempdir().unwrap(),
        })
    }

    /// A new window with the console at `base`, logged in as `name`.
    async fn console(&self, base: &str, name: &str) -> Client {
        let w = self.window().await;
        login(&w, base, name).await;
        w
    }

    /// A new browser window (its own profile: its own session storage).
    async fn window(&self) -> Client {
        let chromium = which("chromium").or_else(|| which("chromium-browser"));
        let mut opts = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,900", "--autoplay-policy=no-user-gesture-required"],
        });
        if let Some(b) = chromium {
            opts["binary"] = json!(b);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), opts);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Opens the console at `base` in `w` and logs in as `name`; waits until it is live.
async fn login(w: &Client, base: &str, name: &str) {
    w.goto(&format!("{base}/console/")).await.unwrap();
    let form = w
        .wait()
        .at_most(PAGE_PATIENCE)
        .for_element(Locator::Css("#login"))
        .await
        .unwrap();
    for (field, text) in [("[name=username]", name), ("[name=password]", PW)] {
        let input = form.find(Locator::Css(field)).await.unwrap();
        input.send_keys(text).await.unwrap();
    }
    let submit = form.find(Locator::Css("button[type=submit]")).await.unwrap();
    submit.click().await.unwrap();
    live(w).await;
}

/// Waits until the console says its stream is live.
async fn live(w: &Client) {
    shows(
        w,
        "document.querySelector('#connection').dataset.state === 'live'",
    )
    .await;
}

/// Waits until the JavaScript expression `expr` is truthy in `w`; its value.
async fn shows(w: &Client, expr: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PAGE_PATIENCE;
    let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
    loop {
        let v = w.execute(&script, vec![]).await.unwrap();
        if !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0) {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            let text = w.execute("return document.body.innerText", vec![]).await.unwrap();
            panic!(
                "waited in vain for {expr}; the page shows:\n{}",
                text.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the JavaScript expression `expr` in `w`.
async fn js(w: &Client, expr: &str) -> Value {
    w.execute(&format!("return ({expr});"), vec![]).await.unwrap()
}

/// Clicks the element `css` (waiting for it).
async fn click(w: &Client, css: &str) {
    w.wait()
        .at_most(PAGE_PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Shows the view `name` (its tab).
async fn view(w: &Client, name: &str) {
    click(w, &format!("#tabs [data-view={name}]")).await;
}

/// `tmsi` asks for an emergency call on talkgroup 10 through `g`: the answer.
async fn emergency(g: &mut GatewayLink, tmsi: Tmsi) -> Frame {
    let emergency = Message::EmergencyCallReq {
        tmsi,
        talkgroup: tg(10),
    };
    let txn = g.request(emergency).await.unwrap();
    until(g, |f| f.txn == txn).await
}

/// `trunking.queue_depth` as `c` has it in force.
fn queue_depth(c: &Running) -> String {
    let Answer::Parameters(p) = c.handle().query(Query::Parameters).unwrap() else {
        panic!("not the parameters")
    };
    let (_, v) = p.into_iter().find(|(n, _)| n == "trunking.queue_depth").unwrap();
    v
}

/// chromedriver and a controller, or `None` where the test is skipped.
async fn start() -> Option<(Browser, Server)> {
    let browser = Browser::start().await?;
    Some((browser, Server::start().await))
}

/// Searches the Units view for `text` and waits for the page of the unit `imsi`.
async fn unit_page(w: &Client, text: &str, imsi: trunkd::protocol::Imsi) {
    view(w, "units").await;
    let search = w.find(Locator::Css("form.search input")).await.unwrap();
    search.send_keys(text).await.unwrap();
    click(w, "form.search button").await;
    shows(w, &format!("document.querySelector('[data-imsi=\"{imsi}\"]')")).await;
}

/// Links site 1's gateway, waits until the console shows the link up, and registers
/// units 1..=3: the link and their TMSIs.
async fn link_site_1(w: &Client, c: &Running) -> (GatewayLink, Vec<Tmsi>) {
    let mut g = gw(c, 1).await;
    shows(w, &format!("{}.textContent.endsWith('link up')", tile_title(1))).await;
    let t = reg_all(&mut g, 3).await;
    (g, t)
}

/// The title of site `n`'s tile (a JavaScript expression).
fn tile_title(n: u16) -> String {
    format!("document.querySelector('article[data-site=\"{n}\"] h3')")
}

/// `tmsi` calls talkgroup 10 through `g`; waits until the slot grid shows the call in
/// the slot granted: the call and that slot's cell.
async fn call_on_grid(w: &Client, g: &mut GatewayLink, tmsi: Tmsi) -> (CallId, String) {
    let (_, f) = group_call(g, tmsi, 10, CallScope::Local).await;
    let (call, cell) = granted_cell(&f);
    shows(w, &format!("{cell}.textContent === 'group {call}'")).await;
    (call, cell)
}

/// The call `grant` grants and its slot's cell on the grid (a JavaScript expression).
fn granted_cell(grant: &Frame) -> (CallId, String) {
    let (call, slots) = grant_of(grant);
    let (site, carrier, slot) = slots[0];
    let cell = format!(
        "document.querySelector('article[data-site=\"{site}\"] \
         td[data-carrier=\"{carrier}\"][data-slot=\"{slot}\"]')"
    );
    (call, cell)
}

/// The README's screenshot of the window as it is, when `CONSOLE_SCREENSHOTS` is set.
async fn screenshot(w: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS") {
        let png = w.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test]
async fn a_grant_appears_on_the_slot_grid_and_an_inhibit_is_acknowledged() {
    let Some((browser, s)) = start().await else {
        return;
    };
    let w = browser.console(&s.base(), "dan").await;
    // Both sites' tiles, their links down, every traffic slot idle.
    shows(&w, "document.querySelectorAll('article[data-site]').length === 2").await;
    let title = format!("{}.textContent", tile_title(1));
    assert_eq!(js(&w, &title).await, json!("Site 1 (site 1) link down"));
    assert_eq!(
        js(&w, "document.querySelectorAll('td[data-state=idle]').length").await,
        json!(4)
    );

    let (mut g, t) = link_site_1(&w, s.c()).await;
    // The slot the gateway was granted shows the call, in words.
    let (call, cell) = call_on_grid(&w, &mut g, t[0]).await;
    assert_eq!(js(&w, &format!("{cell}.dataset.state")).await, json!("group"));
    screenshot(&w, "sites").await;
    view(&w, "talkgroups").await;
    shows(
        &w,
        "document.querySelector('[data-talkgroup=\"100/10\"]').textContent.includes('Talking: 100/1')",
    )
    .await;
    screenshot(&w, "talkgroups").await;
    view(&w, "calls").await;
    shows(
        &w,
        &format!("document.querySelector('[data-release=\"{call}\"]')"),
    )
    .await;
    screenshot(&w, "calls").await;

    // Inhibit unit 2 from its page: pending until its radio acknowledges.
    // By its alias, whatever the case.
    unit_page(&w, "car 2", imsi(2)).await;
    shows(
        &w,
        "document.querySelector('[data-imsi] dd:nth-of-type(3)').textContent.startsWith('at site 1')",
    )
    .await;
    click(&w, "[data-command=inhibit]").await;
    shows(&w, "document.querySelector('[data-command-state=pending]')").await;
    let stun = until(&mut g, |f| matches!(f.msg, Message::Inhibit { .. })).await;
    assert_eq!(stun.msg, Message::Inhibit { tmsi: t[1] });
    g.send(Frame::new(stun.txn, Message::InhibitAck { tmsi: t[1] }))
        .await
        .unwrap();
    shows(&w, "document.querySelector('[data-command-state=acknowledged]')").await;
    // The record says so, and the button now offers to enable it.
    shows(&w, "document.querySelector('[data-command=enable]')").await;
    screenshot(&w, "units").await;
    w.close().await.unwrap();
}

/// A TCP relay in front of the API whose connections the test cuts, as a network
/// would: no `closed` event, no goodbye; new connections refused until it is opened.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let is_open = open.clone();
        tokio::spawn(async move {
            while let Ok((mut a, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let mut cuts = cuts.clone();
                cuts.borrow_and_update(); // only the cuts to come
                tokio::spawn(async move {
                    let Ok(mut b) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Relay { addr, open, cut }
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Waits until the console has applied the last event `c` published.
async fn caught_up(w: &Client, c: &Running) {
    let seq = c.handle().events().0.seq;
    shows(
        w,
        &format!("document.querySelector('#connection').dataset.seq === '{seq}'"),
    )
    .await;
}

#[tokio::test]
async fn an_emergency_raises_the_banner_on_every_console_until_one_acknowledges_it() {
    let Some((browser, s)) = start().await else {
        return;
    };
    let w1 = browser.console(&s.base(), "dan").await;
    let w2 = browser.console(&s.base(), "dora").await;
    let mut g = gw(s.c(), 1).await;
    let t = reg_all(&mut g, 3).await;
    let grant = emergency(&mut g, t[0]).await;
    let (call, _) = grant_of(&grant);
    // Both consoles raise it: the unit, the talkgroup and the site, in words.
    for w in [&w1, &w2] {
        let text = shows(
            w,
            "document.querySelector('#emergencies .emergency.open')?.textContent.includes('“Car 1”') \
             && document.querySelector('#emergencies .emergency.open').textContent",
        )
        .await;
        let text = text.as_str().unwrap();
        assert!(text.contains("EMERGENCY"), "{text}");
        assert!(text.contains("Unit 100/1 “Car 1” · TG 100/10 · site 1"), "{text}");
        assert_eq!(
            js(
                w,
                "document.querySelector('#emergencies .emergency.open').getAttribute('role')"
            )
            .await,
            json!("alert")
        );
    }
    screenshot(&w1, "emergency").await;
    // One dispatcher acknowledges; every console shows who, and stops alerting.
    click(&w1, "#emergencies [data-ack]").await;
    for w in [&w1, &w2] {
        shows(w, "!document.querySelector('#emergencies .emergency.open')").await;
        let text = shows(
            w,
            "document.querySelector('#emergencies .emergency.acknowledged')?.textContent",
        )
        .await;
        let text = text.as_str().unwrap();
        assert!(
            text.contains("acknowledged by dan@127.0.0.1, call still up"),
            "{text}"
        );
    }
    // The call ends: the alarm is cleared, and, acknowledged, finished: the banner goes.
    g.request(Message::PttRelease { call, tmsi: t[0] }).await.unwrap();
    for w in [&w1, &w2] {
        shows(w, "document.querySelector('#emergencies').children.length === 0").await;
    }
    let (w1, w2) = (w1.close().await, w2.close().await);
    w1.unwrap();
    w2.unwrap();
}

#[tokio::test]
async fn a_viewer_sees_no_write_controls_and_the_api_refuses_its_writes() {
    let Some((browser, s)) = start().await else {
        return;
    };
    let w = browser.console(&s.base(), "vic").await;
    let mut g = gw(s.c(), 1).await;
    let t = reg_all(&mut g, 3).await;
    let (_, f) = group_call(&mut g, t[1], 11, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    emergency(&mut g, t[0]).await;

    // It sees the calls and the emergency, with nothing to act on.
    shows(&w, "document.querySelector('#emergencies .emergency.open')").await;
    view(&w, "calls").await;
    shows(
        &w,
        "document.querySelectorAll('table[aria-label=\"Calls in progress\"] tbody tr').length === 2",
    )
    .await;
    assert_eq!(
        js(
            &w,
            "document.querySelectorAll('[data-release], [data-ack]').length"
        )
        .await,
        json!(0)
    );
    view(&w, "alarms").await;
    shows(
        &w,
        "document.querySelector('table[aria-label=\"Alarms needing attention\"]')",
    )
    .await;
    assert_eq!(
        js(&w, "document.querySelectorAll('[data-ack]').length").await,
        json!(0)
    );
    unit_page(&w, &imsi(2).to_string(), imsi(2)).await;
    assert_eq!(
        js(&w, "document.querySelectorAll('[data-command]').length").await,
        json!(0)
    );
    assert_eq!(
        js(&w, "document.querySelectorAll('#tabs [data-view=system]').length").await,
        json!(0)
    );

    // The API refuses what the page does not offer, with the viewer's own token.
    let status = w
        .execute_async(
            "const [path, done] = arguments;
             const s = JSON.parse(sessionStorage.getItem('trunkd.session'));
             fetch(path, {method: 'POST', headers: {Authorization: 'Bearer ' + s.access}})
               .then(async r => done([r.status, (await r.json()).code]));",
            vec![json!(format!("/api/v1/calls/{}/release", call.get()))],
        )
        .await
        .unwrap();
    assert_eq!(status, json!([403, "forbidden"]));
    assert!(s.c().handle().query(trunkd::controller::Query::Calls).is_ok());
    w.close().await.unwrap();
}

#[tokio::test]
async fn the_console_resumes_after_a_dropped_connection_and_survives_a_restart() {
    let Some((browser, mut s)) = start().await else {
        return;
    };
    let relay = Relay::start(s.api).await;
    let w = browser.console(&format!("http://{}", relay.addr), "ada").await;
    let (mut g, t) = link_site_1(&w, s.c()).await;
    caught_up(&w, s.c()).await;

    // The network drops the stream; a call is granted meanwhile.
    relay.cut();
    shows(
        &w,
        "document.querySelector('#connection').dataset.state === 'reconnecting'",
    )
    .await;
    let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
    let (call, cell) = granted_cell(&f);
    relay.reopen();
    // It resumes from the last event it saw: every event since, none twice, none missed.
    live(&w).await;
    shows(&w, &format!("{cell}.textContent === 'group {call}'")).await;
    caught_up(&w, s.c()).await;
    let status = js(&w, "document.querySelector('#connection').dataset").await;
    assert_eq!(status["resumes"], json!("1"), "{status}");
    assert_eq!(status["skipped"], json!("0"), "{status}");

    // The controller restarts: the console reconnects on its own, still logged in, and
    // shows the new controller's state (calls do not survive a restart).
    s.stop().await;
    shows(
        &w,
        "document.querySelector('#connection').dataset.state !== 'live'",
    )
    .await;
    s.run().await;
    live(&w).await;
    shows(&w, &format!("{cell}.dataset.state === 'idle'")).await;
    assert_eq!(
        js(&w, "document.querySelector('#login:not([hidden])')").await,
        Value::Null
    );
    let (mut g, t) = link_site_1(&w, s.c()).await;
    call_on_grid(&w, &mut g, t[0]).await;
    w.close().await.unwrap();
}

#[tokio::test]
async fn an_admin_changes_a_parameter_sees_a_refusal_beside_its_field_and_reads_the_history() {
    let Some((browser, s)) = start().await else {
        return;
    };
    let w = browser.console(&s.base(), "ada").await;
    view(&w, "system").await;
    let field = "form[data-parameter='trunking.queue_depth']";
    let input = w
        .wait()
        .at_most(PAGE_PATIENCE)
        .for_element(Locator::Css(&format!("{field} input")))
        .await
        .unwrap();
    input.clear().await.unwrap();
    input.send_keys("many").await.unwrap();
    click(&w, &format!("{field} button")).await;
    // Refused: the API's reason beside the field, the field marked invalid, nothing changed.
    let note = shows(
        &w,
        &format!("document.querySelector(\"{field} .note .error\")?.textContent"),
    )
    .await;
    assert!(note.as_str().unwrap().contains("queue_depth"), "{note}");
    assert_eq!(
        js(
            &w,
            &format!("document.querySelector(\"{field} input\").getAttribute('aria-invalid')")
        )
        .await,
        json!("true")
    );
    assert_eq!(queue_depth(s.c()), "32");
    // Accepted: in force at once, and said so.
    input.clear().await.unwrap();
    input.send_keys("7").await.unwrap();
    click(&w, &format!("{field} button")).await;
    shows(
        &w,
        &format!("document.querySelector(\"{field} .note\").textContent === 'saved'"),
    )
    .await;
    assert_eq!(queue_depth(s.c()), "7");

    // A call that ended is in the call history, and the change in the audit log.
    view(&w, "sites").await;
    let (mut g, t) = link_site_1(&w, s.c()).await;
    let (call, _) = call_on_grid(&w, &mut g, t[0]).await;
    g.request(Message::PttRelease { call, tmsi: t[0] }).await.unwrap();
    // Its record is written behind; the view reads the history when it is shown.
    let deadline = tokio::time::Instant::now() + PAGE_PATIENCE;
    while s.c().store.call_records(10).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no call record written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    view(&w, "history").await;
    let calls = "table[aria-label='Call history'] tbody";
    shows(
        &w,
        &format!("document.querySelector(\"{calls}\")?.textContent.includes('100/1')"),
    )
    .await;
    let audit = "table[aria-label='Audit log'] tbody";
    shows(
        &w,
        &format!("document.querySelector(\"{audit}\")?.textContent.includes('trunking.queue_depth')"),
    )
    .await;
    w.close().await.unwrap();
}
